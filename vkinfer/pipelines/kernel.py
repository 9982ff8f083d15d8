"""The Kernel spec every `pipelines/<kernel>.py` declares (DESIGN §5, R1, R2, R7).

A Kernel names its shader stem, its bindings (name, access, shape), its push-constant layout as
a numpy structured dtype (checked against the GLSL block by tests/kernels/test_push_layouts.py),
its specialization constants with defaults and tuning candidates, its `#define` variants with the
device features each needs, and a contract that rejects specialization values the shader cannot
run. `Kernel.pipeline()` resolves values as: spec defaults < tuning database < explicit overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import ContractError, DeviceFeatureError
from ..vk.commands import Recorder
from ..vk.pipeline import get_pipeline
from ..vk.shader import get_spirv


@dataclass(frozen=True)
class Binding:
    name: str
    access: str  # 'r' read, 'w' write, 'b' both
    shape: str = ""  # documentation: shape and element type


@dataclass(frozen=True)
class SpecConst:
    name: str
    id: int
    default: object  # int, float, bool, or a callable(DeviceInfo) -> value
    choices: tuple = ()  # candidates the autotuner sweeps (empty: not tuned)
    doc: str = ""


@dataclass(frozen=True)
class Variant:
    defines: dict = field(default_factory=dict)
    requires: tuple = ()  # DeviceInfo boolean attribute names, e.g. ("clustered_subgroup",)


@dataclass
class KernelPipeline:
    """A created pipeline with the specialization values it was built with."""

    kernel: Kernel
    variant: str
    spec: dict
    pipeline: object
    source_key: str

    def push(self, **fields) -> bytes:
        return self.kernel.push_bytes(**fields)

    def record(self, rec: Recorder, buffers: list, groups, **push_fields):
        self.kernel.check_buffers(buffers)
        rec.dispatch(self.pipeline, buffers, self.kernel.push_bytes(**push_fields),
                     tuple(groups) + (1,) * (3 - len(groups)), self.kernel.access)

    def record_indirect(self, rec: Recorder, buffers: list, args, args_offset=0, **push_fields):
        self.kernel.check_buffers(buffers)
        rec.dispatch_indirect(self.pipeline, buffers, self.kernel.push_bytes(**push_fields), args,
                              args_offset, self.kernel.access)


@dataclass
class Kernel:
    stem: str
    bindings: tuple
    push: np.dtype
    spec: tuple = ()
    variants: dict = field(default_factory=lambda: {"default": Variant()})
    contract: Callable[[dict, object], None] | None = None
    full_subgroups: bool = False  # pipeline needs every subgroup full (REQUIRE_FULL_SUBGROUPS)
    doc: str = ""
    # variant -> subgroup operation names it needs (DeviceInfo.subgroup_ops, e.g. "arithmetic")
    op_requires: dict = field(default_factory=dict)
    # fn(variant, spec values, DeviceInfo): contract rules that depend on the variant
    variant_contract: Callable[[str, dict, object], None] | None = None

    @property
    def access(self) -> str:
        return "".join(b.access for b in self.bindings)

    def push_bytes(self, **fields) -> bytes:
        if self.push is None or self.push.itemsize == 0:
            return b""
        rec = np.zeros(1, dtype=self.push)
        names = set(self.push.names)
        for k, v in fields.items():
            if k not in names:
                raise TypeError(f"{self.stem}: unknown push constant {k!r}; "
                                f"layout has {self.push.names}")
            rec[k] = v
        return rec.tobytes()

    def check_buffers(self, buffers):
        if len(buffers) != len(self.bindings):
            raise ValueError(f"{self.stem}: {len(buffers)} buffers given, bindings are "
                             f"{[b.name for b in self.bindings]}")

    def defaults(self, device_info) -> dict:
        return {s.name: (s.default(device_info) if callable(s.default) else s.default)
                for s in self.spec}

    def missing_features(self, variant: str, device_info) -> list[str]:
        """What `variant` needs that the device lacks (feature flags and subgroup operations)."""
        ops = set(getattr(device_info, "subgroup_ops", ()) or ())
        return ([r for r in self.variants[variant].requires if not getattr(device_info, r, False)]
                + [f"subgroup {o}" for o in self.op_requires.get(variant, ()) if o not in ops])

    def supported_variants(self, device_info) -> list[str]:
        return [n for n in self.variants if not self.missing_features(n, device_info)]

    def check_variant(self, variant: str, values: dict, device_info):
        """Raise DeviceFeatureError / ContractError unless `variant` can run `values` here."""
        if variant not in self.variants:
            raise ValueError(f"{self.stem}: no variant {variant!r}; have {list(self.variants)}")
        missing = self.missing_features(variant, device_info)
        if missing:
            raise DeviceFeatureError(
                f"{self.stem}/{variant} needs {', '.join(missing)}, which {device_info.name} "
                f"lacks; variants this device can run: {self.supported_variants(device_info)}")
        self.check_contract(values, device_info)
        if self.variant_contract is not None:
            self.variant_contract(variant, values, device_info)

    def resolve_spec(self, device, variant: str, shape_class: str | None, overrides: dict) -> dict:
        from .. import tuning

        values = self.defaults(device.info)
        if shape_class is not None:
            tuned = tuning.lookup(device.info, self, variant, shape_class)
            if tuned:
                values.update({k: v for k, v in tuned.items() if k in values})
        unknown = set(overrides) - set(values)
        if unknown:
            raise TypeError(f"{self.stem}: unknown specialization constants {sorted(unknown)}")
        values.update(overrides)
        return values

    def check_contract(self, values: dict, device_info):
        if self.contract is not None:
            self.contract(values, device_info)

    def pipeline(self, device, variant: str = "default", shape_class: str | None = None,
                 **overrides) -> KernelPipeline:
        if variant not in self.variants:
            raise ValueError(f"{self.stem}: no variant {variant!r}; have {list(self.variants)}")
        var = self.variants[variant]
        values = self.resolve_spec(device, variant, shape_class, overrides)
        self.check_variant(variant, values, device.info)
        spirv, key = get_spirv(self.stem, var.defines)
        spec_list = [(s.id, values[s.name]) for s in self.spec]
        push_size = 0 if self.push is None else self.push.itemsize
        p = get_pipeline(device, spirv, key, f"{self.stem}/{variant}", len(self.bindings),
                         push_size, spec_list, self.full_subgroups)
        return KernelPipeline(self, variant, values, p, key)


# Former name of the variant-aware Kernel (kernels written before it moved here import it).
SubgroupKernel = Kernel


def require(cond: bool, msg: str):
    """Contract helper: raise ContractError(msg) unless cond."""
    if not cond:
        raise ContractError(msg)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
