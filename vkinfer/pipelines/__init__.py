"""Kernel families: one module per shader, each with KERNEL (the spec), dispatch() and
reference() (the numpy oracle). Found by file name; see kernel.py for the spec."""

from __future__ import annotations

import importlib
import pkgutil


def kernel_modules() -> dict:
    """name → module for every kernel family that declares KERNEL or KERNELS."""
    out = {}
    for m in pkgutil.iter_modules(__path__):
        if m.name.startswith("_") or m.name == "kernel":
            continue
        mod = importlib.import_module(f"{__name__}.{m.name}")
        if hasattr(mod, "KERNEL") or hasattr(mod, "KERNELS"):
            out[m.name] = mod
    return out


def all_kernels() -> list:
    """Every Kernel spec declared by every family."""
    ks = []
    for mod in kernel_modules().values():
        if hasattr(mod, "KERNEL"):
            ks.append(mod.KERNEL)
        ks.extend(getattr(mod, "KERNELS", {}).values() if isinstance(
            getattr(mod, "KERNELS", None), dict) else getattr(mod, "KERNELS", ()))
    return ks
