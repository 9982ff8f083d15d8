"""Where vkinfer finds its shaders and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def shader_dir() -> Path:
    """GLSL sources: the installed `vkinfer/shaders` package data, or the checkout's `shaders/`."""
    for cand in (_PKG / "shaders", _PKG.parent / "shaders"):
        if (cand / "common").is_dir():
            return cand
    try:  # setuptools package-dir mapping (editable or regular install)
        from importlib.resources import files

        return Path(str(files("vkinfer.shaders")))
    except (ModuleNotFoundError, TypeError):
        raise FileNotFoundError("vkinfer shader sources not found") from None


def spirv_dir() -> Path:
    """Precompiled SPIR-V shipped with the package (see tools/build_spirv.py)."""
    return _PKG / "spirv"


def cache_dir() -> Path:
    """`$VKINFER_CACHE`, else `$XDG_CACHE_HOME/vkinfer`, else `~/.cache/vkinfer`."""
    if os.environ.get("VKINFER_CACHE"):
        p = Path(os.environ["VKINFER_CACHE"])
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        p = Path(base) / "vkinfer"
    p.mkdir(parents=True, exist_ok=True)
    return p
