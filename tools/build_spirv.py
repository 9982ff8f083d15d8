#!/usr/bin/env python3
"""Compile every kernel variant to SPIR-V into vkinfer/spirv/ so an installed package runs
without a shader compiler. Files are named by source key (shader + includes + defines), so a
stale file is never used; files no kernel names are removed. Run after changing any shader:
    python tools/build_spirv.py [--check]
--check exits 1 if any variant's SPIR-V is missing or stale (what the test suite asserts)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vkinfer.paths import spirv_dir  # noqa: E402
from vkinfer.pipelines import all_kernels  # noqa: E402
from vkinfer.vk.shader import compile_glsl, shader_path, source_key  # noqa: E402


def wanted() -> dict:
    out = {}
    for k in all_kernels():
        for name, var in k.variants.items():
            out[source_key(k.stem, var.defines)] = {"stem": k.stem, "variant": name,
                                                    "defines": dict(var.defines)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    d = spirv_dir()
    want = wanted()
    have = {p.stem for p in d.glob("*.spv")}
    missing = sorted(set(want) - have)
    stale = sorted(have - set(want))
    if args.check:
        for k in missing:
            print(f"missing SPIR-V for {want[k]['stem']}/{want[k]['variant']} ({k})")
        return 1 if missing else 0
    for i, key in enumerate(missing):
        w = want[key]
        print(f"[{i + 1}/{len(missing)}] {w['stem']}/{w['variant']}", file=sys.stderr)
        with tempfile.TemporaryDirectory() as td:
            out = Path(td) / "o.spv"
            compile_glsl(shader_path(w["stem"]), w["defines"], out)
            (d / f"{key}.spv").write_bytes(out.read_bytes())
    for key in stale:
        (d / f"{key}.spv").unlink()
    (d / "manifest.json").write_text(json.dumps(want, indent=1, sort_keys=True))
    print(f"{len(want)} variants: {len(missing)} compiled, {len(stale)} stale removed",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
