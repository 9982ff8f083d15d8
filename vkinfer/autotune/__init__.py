"""Shader autotuning (issue 5): sweep each kernel's specialization constants per shape class on
this device, check every candidate against the family's numpy reference, time the correct ones
with GPU timestamps and store the fastest in the tuning database (`vkinfer.tuning`), where
`Kernel.pipeline(device, variant, shape_class=...)` picks them up.

Entry points: `vkinfer tune`, `python tools/autotune.py`, or `tune()` here. How a family takes
part is described in `vkinfer.autotune.cases`.
"""

from __future__ import annotations

from .engine import GpuTimer, HostTimer, Trial, Tuner, TuneReport, UnitResult, tune

__all__ = ["GpuTimer", "HostTimer", "Trial", "TuneReport", "Tuner", "UnitResult", "tune"]
