"""Families with several same-semantics variants (subgroup vs shared-memory reductions) pick the
one the tuning database measured fastest for the call's shape class, and their default
otherwise (R7)."""

from __future__ import annotations

import pytest

from vkinfer import tuning
from vkinfer.pipelines import moe_route, mul_mat_id


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("VKINFER_CACHE", str(tmp_path))
    tuning.forget_loaded()
    yield
    tuning.forget_loaded()


def _tune(info, kernel, variant, cls, ns):
    tuning.store(info, kernel, variant, cls, {}, extra={"time_ns": ns})


def test_moe_route_variant_follows_tuning(device, db):
    info = device.info
    cls = moe_route.shape_class(64, 8)
    default = moe_route.variant_for(info, "softmax")
    other = "softmax_shmem" if default == "softmax" else "softmax"
    if other not in moe_route.ROUTE_KERNEL.supported_variants(info):
        pytest.skip(f"{info.name} runs only {default}")  # lavapipe runs both: CI covers this
    assert moe_route.variant_for(info, "softmax", shape_class=cls) == default  # nothing tuned
    _tune(info, moe_route.ROUTE_KERNEL, default, cls, 2000)
    _tune(info, moe_route.ROUTE_KERNEL, other, cls, 1000)
    assert moe_route.variant_for(info, "softmax", shape_class=cls) == other
    assert moe_route.variant_for(info, "softmax", subgroup=default == "softmax",
                                 shape_class=cls) == default  # an explicit choice wins


def test_mul_mat_id_variant_follows_tuning(device, db):
    info = device.info
    cls = mul_mat_id.shape_class(37, 64, 2, False, 0)
    default = mul_mat_id.variant_for(info, "q8_0")
    other = "q8_0_shmem" if default == "q8_0" else "q8_0"
    if other not in mul_mat_id.KERNEL.supported_variants(info):
        pytest.skip(f"{info.name} runs only {default}")
    _tune(info, mul_mat_id.KERNEL, default, cls, 5000)
    _tune(info, mul_mat_id.KERNEL, other, cls, 100)
    assert mul_mat_id.variant_for(info, "q8_0", shape_class=cls) == other
    assert mul_mat_id.variant_for(info, "q8_0", reduce="subgroup", shape_class=cls) == "q8_0"


def test_mul_mat_vec_variant_follows_tuning(device, db):
    from vkinfer.pipelines import mul_mat_vec

    info = device.info
    cls = mul_mat_vec.shape_class(37, 64, 3)
    default = mul_mat_vec.variant_for(info, "q4_k")
    other = "q4_k_shmem" if default == "q4_k" else "q4_k"
    if other not in mul_mat_vec.KERNEL.supported_variants(info):
        pytest.skip(f"{info.name} runs only {default}")
    assert mul_mat_vec.variant_for(info, "q4_k", shape_class=cls) == default
    _tune(info, mul_mat_vec.KERNEL, default, cls, 900)
    _tune(info, mul_mat_vec.KERNEL, other, cls, 300)
    assert mul_mat_vec.variant_for(info, "q4_k", shape_class=cls) == other
    assert mul_mat_vec.pipeline(device, "q4_k", 3, 37, 64).variant == other
