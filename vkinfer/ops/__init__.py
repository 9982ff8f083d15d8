"""vkinfer.ops: numpy in, numpy out, running the real shaders on the current device.

For tests, tools and curious users. Each kernel family adds a module here exporting its entry
points in `__all__`; this package re-exports them all (no central list to edit).
Example: `vkinfer.ops.mul_mat(w_raw, "q4_k", x)`.
"""

from __future__ import annotations

import importlib
import pkgutil

__all__: list[str] = []
for _m in pkgutil.iter_modules(__path__):
    if _m.name.startswith("_"):
        continue
    _mod = importlib.import_module(f"{__name__}.{_m.name}")
    for _name in getattr(_mod, "__all__", ()):
        globals()[_name] = getattr(_mod, _name)
        __all__.append(_name)
del _m, _mod, _name
