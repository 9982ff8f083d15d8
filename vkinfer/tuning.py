"""Per-device tuning database (R7): tuned specialization values keyed by device UUID + driver
version + kernel + variant + shape class, each entry stamped with the shader's source key so a
changed shader invalidates it. Kernels without an entry use their spec defaults.

Stored as JSON in the cache directory (`$VKINFER_CACHE`, `$XDG_CACHE_HOME/vkinfer`,
`~/.cache/vkinfer`).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from .paths import cache_dir

_lock = threading.Lock()
_loaded: dict[str, dict] = {}


def db_path() -> Path:
    return cache_dir() / "tuning.json"


def device_key(info) -> str:
    return f"{info.uuid}:{info.driver_version}"


def entry_key(kernel_stem: str, variant: str, shape_class: str) -> str:
    return f"{kernel_stem}/{variant}/{shape_class}"


def load(path: Path | None = None) -> dict:
    path = path or db_path()
    key = str(path)
    with _lock:
        if key not in _loaded:
            try:
                _loaded[key] = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                _loaded[key] = {}
        return _loaded[key]


def save(db: dict, path: Path | None = None):
    path = path or db_path()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(db, indent=1, sort_keys=True))
    os.replace(tmp, path)
    with _lock:
        _loaded[str(path)] = db


def forget_loaded():
    """Drop the in-memory copy so the next lookup rereads the file (tests, tune runs)."""
    with _lock:
        _loaded.clear()


def lookup(info, kernel, variant: str, shape_class: str, path: Path | None = None) -> dict | None:
    """Tuned values for this device and kernel, or None when absent or stale."""
    from .vk.shader import source_key

    ent = load(path).get(device_key(info), {}).get(entry_key(kernel.stem, variant, shape_class))
    if not ent:
        return None
    if ent.get("source_key") != source_key(kernel.stem, kernel.variants[variant].defines):
        return None  # the shader changed since tuning
    return ent.get("spec")


def store(info, kernel, variant: str, shape_class: str, spec: dict, extra: dict | None = None,
          path: Path | None = None):
    from .vk.shader import source_key

    db = load(path)
    dev = db.setdefault(device_key(info), {"device": info.name})
    dev[entry_key(kernel.stem, variant, shape_class)] = {
        "source_key": source_key(kernel.stem, kernel.variants[variant].defines),
        "spec": spec, **(extra or {})}
    save(db, path)
