"""The package ships SPIR-V for every kernel variant (an installed vkinfer runs without a
shader compiler), and what it ships matches the current shader sources: the files are named by
source key, so a shader edited without `python tools/build_spirv.py` shows up here."""

from __future__ import annotations

import json

from vkinfer.paths import spirv_dir
from vkinfer.pipelines import all_kernels
from vkinfer.vk.shader import get_spirv, source_key


def test_every_variant_has_current_shipped_spirv():
    missing = []
    for k in all_kernels():
        for name, var in k.variants.items():
            key = source_key(k.stem, var.defines)
            if not (spirv_dir() / f"{key}.spv").exists():
                missing.append(f"{k.stem}/{name}")
    assert not missing, f"run `python tools/build_spirv.py`; stale or missing: {missing[:10]}"


def test_shipped_spirv_is_used_before_compiling(monkeypatch):
    from vkinfer.vk import shader

    monkeypatch.setattr(shader, "compile_glsl", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("compiled although SPIR-V is shipped")))
    k = all_kernels()[0]
    name, var = next(iter(k.variants.items()))
    data, key = get_spirv(k.stem, var.defines)
    assert data[:4] == b"\x03\x02\x23\x07" and key == source_key(k.stem, var.defines)


def test_manifest_lists_the_shipped_files():
    manifest = json.loads((spirv_dir() / "manifest.json").read_text())
    assert {p.stem for p in spirv_dir().glob("*.spv")} == set(manifest)
