"""Autotune cases: how to exercise one kernel family at one shape class.

The protocol. Each kernel family `vkinfer/pipelines/<family>.py` that the tuner covers has a
module `vkinfer/autotune/cases/<family>.py` with

    def cases(info: DeviceInfo) -> list[Case]

returning one `Case` per (kernel, shape class, group of variants) worth tuning on that device,
in the order to tune them, and optionally `PRIORITY` (int, default 50; families run in
increasing order, so a budget is spent on the hot kernels first).
Shapes are chosen per device: tiny on a CPU device (lavapipe), the real model sizes on GPUs, so
the time measured is representative of the class there. A Case says

- `kernel`, `shape_class` (the exact string the family's dispatch callers pass to
  `Kernel.pipeline(..., shape_class=...)`: use the family's own `shape_class()` when it has one),
- `variants`: the `#define` variants to tune for this shape class. Several names form a group
  with the same semantics (e.g. reduction strategies); each is tuned on its own entry and
  `tuning.best_variant()` picks the fastest. Variants the device cannot run are skipped.
- `fixed`: specialization values the shape dictates (head size, columns per dispatch); they are
  part of every candidate but are not swept and not stored as tuned values.
- `sweep`: optional {name: choices} replacing the SpecConst `choices` (to narrow a sweep).
- optional hooks: `defaults(variant, info)` (the untuned baseline when a family's host code does
  not use the Kernel's defaults), `derive(values)` (constants computed from swept ones),
  `prepare(device)` (fixed values read from another unit's tuned result, just before tuning),
  `share_key()` (cases with one key reuse one workload: a big weight matrix is made once).
- `bytes`: bytes a timed dispatch moves (0 when unknown), for GB/s.

and implements three methods:

- `workload(device, rng, purpose)`: a `Workload` of random inputs (never zeros) and outputs;
  `purpose` is "check" (small enough for the numpy reference) or "time" (representative size);
  returning the same sizes for both is fine.
- `record(rec, kp, wl)`: record one dispatch of candidate pipeline `kp` over `wl`.
- `verify(kp, wl)`: after one recorded dispatch ran on a freshly reset check workload, compare
  the outputs with the family's `reference()`; return None when right, else a short message.
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
import sys

import numpy as np


class Workload:
    """Device buffers for one case and the host arrays they were filled from."""

    def __init__(self, device, rng=None):
        self.device = device
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.host: dict[str, np.ndarray] = {}
        self.bufs: dict = {}
        self.outputs: dict[str, int] = {}
        self.meta: dict = {}

    def input(self, name: str, arr, *, size: int | None = None, keep: bool = True) -> object:
        """Upload `arr` as buffer `name` of at least `size` bytes. Kept inputs are rewritten by
        reset() (so read-write ones start fresh); keep=False drops the host copy (big timing
        inputs that no check reads)."""
        a = np.ascontiguousarray(arr)
        if keep:
            self.host[name] = a
        b = self.device.memory.alloc(max(a.nbytes, int(size or 0), 4))
        if a.nbytes:
            b.write(a)
        self.bufs[name] = b
        return b

    def output(self, name: str, nbytes: int) -> object:
        """A buffer the kernel writes; filled with 0xFF bytes (NaN as float) before a check."""
        b = self.device.memory.alloc(max(int(nbytes), 4))
        self.outputs[name] = int(nbytes)
        self.bufs[name] = b
        return b

    def __getitem__(self, name: str):
        return self.bufs[name]

    def reset(self):
        for name, a in self.host.items():
            if a.nbytes:
                self.bufs[name].write(a)
        for name, n in self.outputs.items():
            if n:
                self.bufs[name].write(np.full(n, 0xFF, np.uint8))

    def read(self, name: str, dtype=np.float32, shape=None) -> np.ndarray:
        return self.bufs[name].read(dtype, shape)

    def free(self):
        for b in self.bufs.values():
            b.free()
        self.bufs.clear()


class Case:
    """One kernel at one shape class; subclasses implement workload/record/verify."""

    family: str = ""

    def __init__(self, kernel, shape_class: str, variants=("default",), *, family: str = "",
                 fixed: dict | None = None, sweep: dict | None = None, bytes: int = 0,
                 shape: str = "", **params):
        self.kernel = kernel
        self.shape_class = shape_class
        self.variants = tuple(variants)
        self.family = family or self.family or kernel.stem
        self.fixed = dict(fixed or {})
        self.sweep = sweep
        self.bytes = int(bytes)
        self.shape = shape or shape_class
        self.params = params  # sizes the subclass uses
        self.__dict__.update(params)

    def __repr__(self):
        return (f"<{type(self).__name__} {self.kernel.stem} {self.shape_class} "
                f"variants={self.variants} shape={self.shape}>")

    def defaults(self, variant: str, info) -> dict:
        """Specialization values the host uses for this variant and shape when untuned, where
        they differ from the Kernel's defaults (e.g. a family's choose()): the baseline the
        tuned values are compared with."""
        return {}

    def derive(self, values: dict) -> dict:
        """All specialization values of a candidate from its swept ones: a case whose family
        derives a constant from others (mul_mat's WG from its tile) computes it here, as the
        family's pipeline() does, so the contract sees what would really be built."""
        return values

    def share_key(self):
        """Cases returning the same key (not None) share their workloads when tuned one after
        the other (mul_mat_vec's 1..8 columns over one weight matrix); their workload() must
        then serve all of them. None: this case's own workloads."""
        return None

    def prepare(self, device):
        """Called right before this case's units are looked up or tuned: a case whose `fixed`
        values depend on another unit's tuned result (flash attention's numerics constants)
        sets them here."""

    def workload(self, device, rng, purpose: str) -> Workload:
        raise NotImplementedError

    def record(self, rec, kp, wl: Workload):
        raise NotImplementedError

    def verify(self, kp, wl: Workload) -> str | None:
        raise NotImplementedError


# --- helpers for cases modules ---------------------------------------------------------------

def is_cpu(info) -> bool:
    """CPU devices (lavapipe) get tiny shapes: the tuner must finish there in seconds."""
    return info.type == "cpu"


def compare(name: str, got, want, rtol: float = 1e-5, atol: float = 1e-6) -> str | None:
    """None when `got` matches `want` within tolerance, else what differs and by how much."""
    got = np.asarray(got)
    want = np.asarray(want)
    if got.shape != want.shape:
        got = got.reshape(-1)[: want.size].reshape(want.shape) if got.size >= want.size else got
    if got.shape != want.shape:
        return f"{name}: shape {got.shape} != {want.shape}"
    if np.issubdtype(want.dtype, np.floating):
        g, w = got.astype(np.float64), want.astype(np.float64)
        bad_nan = np.isnan(g) & ~np.isnan(w)
        if bad_nan.any():
            i = int(np.flatnonzero(bad_nan.reshape(-1))[0])
            return f"{name}: NaN at flat index {i} ({int(bad_nan.sum())} of {g.size})"
        err = np.abs(g - w)
        lim = atol + rtol * np.abs(w)
        over = err > lim
        if over.any():
            i = int(np.argmax(np.where(over, err - lim, -np.inf)))
            return (f"{name}: {int(over.sum())} of {g.size} off; worst at {i}: "
                    f"{g.reshape(-1)[i]:.6g} vs {w.reshape(-1)[i]:.6g}")
        return None
    diff = got != want
    if diff.any():
        i = int(np.flatnonzero(diff.reshape(-1))[0])
        return f"{name}: {int(diff.sum())} of {got.size} differ; first at {i}"
    return None


def compare_rel(name: str, got, want, tol: float) -> str | None:
    """None when max|got - want| / max|want| <= tol (for outputs of long f32 reductions, whose
    error scales with the largest value rather than with each element)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        return f"{name}: shape {got.shape} != {want.shape}"
    if not np.isfinite(got).all():
        return f"{name}: {int((~np.isfinite(got)).sum())} of {got.size} not finite"
    err = float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-30)
    return None if err <= tol else f"{name}: relative error {err:.2e} > {tol:.0e}"


# --- discovery -------------------------------------------------------------------------------

def case_modules(notes: list | None = None) -> dict:
    """family name → cases module, for every module here whose family imports cleanly."""
    out = {}
    for m in pkgutil.iter_modules(__path__):
        if m.name.startswith("_"):
            continue
        try:
            out[m.name] = importlib.import_module(f"{__name__}.{m.name}")
        except Exception as e:  # the family's pipeline module is not there (yet), or broken
            if notes is not None:
                notes.append(f"cases/{m.name}: not loaded ({e})")
    return out


def _matches(patterns, *names) -> bool:
    return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names if n)


def load_cases(info, kernels=None, shape_classes=None, notes: list | None = None) -> list[Case]:
    """Every case for this device, filtered by family/kernel-stem patterns and shape-class
    patterns (fnmatch; None = all)."""
    out = []
    mods = case_modules(notes)
    for fam, mod in sorted(mods.items(), key=lambda kv: (getattr(kv[1], "PRIORITY", 50), kv[0])):
        try:
            cs = mod.cases(info)
        except Exception as e:  # a broken cases module must not stop the others
            if notes is not None:
                notes.append(f"cases/{fam}: cases() failed: {type(e).__name__}: {e}")
            print(f"autotune: cases/{fam}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        for c in cs:
            c.family = c.family or fam
            if kernels and not _matches(kernels, fam, c.kernel.stem):
                continue
            if shape_classes and not _matches(shape_classes, c.shape_class):
                continue
            out.append(c)
    return out


def uncovered_families() -> list[str]:
    """Kernel families in vkinfer/pipelines that have no cases module."""
    from ...pipelines import kernel_modules

    have = {m.name for m in pkgutil.iter_modules(__path__)}
    try:
        fams = kernel_modules()
    except Exception:  # a family module mid-edit by its owner: report what we can
        import vkinfer.pipelines as pk

        fams = {m.name: None for m in pkgutil.iter_modules(pk.__path__)
                if not m.name.startswith("_") and m.name != "kernel"}
    return sorted(set(fams) - have)
