"""Per-device tuning database (R7): tuned specialization values keyed by device UUID + driver
version + kernel + variant + shape class, each entry stamped with the shader's source key so a
changed shader invalidates it. Kernels without an entry use their spec defaults.

Stored as JSON in the cache directory (`$VKINFER_CACHE`, `$XDG_CACHE_HOME/vkinfer`,
`~/.cache/vkinfer`):

    {"<uuid>:<driver version>": {"device": "<name>",
        "<stem>/<variant>/<shape class>": {"source_key": ..., "spec": {name: value},
                                             "time_ns": ..., "default_ns": ..., ...}}}

`spec` holds only the tuned (swept) constants; the other fields are what `vkinfer tune` measured
(see vkinfer/autotune). Callers that may pick among code-shape variants of the same semantics
ask `best_variant()`.
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


def _read(path: Path) -> dict:
    try:
        db = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return db if isinstance(db, dict) else {}


def load(path: Path | None = None) -> dict:
    path = path or db_path()
    key = str(path)
    with _lock:
        if key not in _loaded:
            _loaded[key] = _read(path)
        return _loaded[key]


def save(db: dict, path: Path | None = None):
    path = path or db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(db, indent=1, sort_keys=True))
    os.replace(tmp, path)
    with _lock:
        _loaded[str(path)] = db


def forget_loaded():
    """Drop the in-memory copy so the next lookup rereads the file (tests, tune runs)."""
    with _lock:
        _loaded.clear()


def _source_key(kernel, variant: str) -> str:
    from .vk.shader import source_key

    return source_key(kernel.stem, kernel.variants[variant].defines)


def entry(info, kernel, variant: str, shape_class: str, path: Path | None = None) -> dict | None:
    """The whole valid entry (spec and measurements), or None when absent or stale."""
    ent = load(path).get(device_key(info), {}).get(entry_key(kernel.stem, variant, shape_class))
    if not ent or variant not in kernel.variants:
        return None
    if ent.get("source_key") != _source_key(kernel, variant):
        return None  # the shader changed since tuning
    return ent


def lookup(info, kernel, variant: str, shape_class: str, path: Path | None = None) -> dict | None:
    """Tuned values for this device and kernel, or None when absent or stale."""
    ent = entry(info, kernel, variant, shape_class, path)
    return ent.get("spec") if ent else None


def store(info, kernel, variant: str, shape_class: str, spec: dict, extra: dict | None = None,
          path: Path | None = None):
    """Write one entry. The file is reread first so entries written by another process since
    this one loaded it are kept."""
    path = path or db_path()
    with _lock:
        _loaded.pop(str(path), None)
    db = load(path)
    dev = db.setdefault(device_key(info), {"device": info.name})
    dev[entry_key(kernel.stem, variant, shape_class)] = {
        "source_key": _source_key(kernel, variant), "spec": spec, **(extra or {})}
    save(db, path)


def remove(info, kernel, variant: str, shape_class: str, path: Path | None = None) -> bool:
    """Delete one entry; True when there was one."""
    path = path or db_path()
    with _lock:
        _loaded.pop(str(path), None)
    db = load(path)
    gone = db.get(device_key(info), {}).pop(entry_key(kernel.stem, variant, shape_class), None)
    if gone is not None:
        save(db, path)
    return gone is not None


def device_entries(info, path: Path | None = None) -> dict:
    """Every entry stored for this device (valid or stale), by entry key."""
    return {k: v for k, v in load(path).get(device_key(info), {}).items() if isinstance(v, dict)}


def best_variant(info, kernel, shape_class: str, candidates, default: str | None = None,
                 path: Path | None = None) -> str | None:
    """Among `candidates` (variants with the same semantics, e.g. reduction strategies), the one
    with the fastest valid tuned time for this shape class; `default` when none was tuned.
    Variants the device cannot run are never returned."""
    runnable = set(kernel.supported_variants(info))
    best, best_ns = default, None
    for v in candidates:
        if v not in runnable or v not in kernel.variants:
            continue
        ent = entry(info, kernel, v, shape_class, path)
        ns = ent.get("time_ns") if ent else None
        if ns is not None and (best_ns is None or ns < best_ns):
            best, best_ns = v, ns
    return best
