"""R1: each kernel's push-constant dtype (Python) matches the GLSL push_constant block, and
every declared specialization constant exists in the shader with the declared id."""

from __future__ import annotations

import re

import numpy as np
import pytest

from vkinfer.pipelines import all_kernels
from vkinfer.vk.shader import shader_path, source_closure

GLSL_TYPES = {"uint": "<u4", "int": "<i4", "float": "<f4", "uint32_t": "<u4", "int32_t": "<i4"}
KERNELS = all_kernels()


def _strip_comments(s: str) -> str:
    s = re.sub(r"/\*.*?\*/", "", s, flags=re.S)
    return re.sub(r"//[^\n]*", "", s)


def _push_fields(text: str):
    m = re.search(r"layout\s*\(\s*push_constant\s*\)\s*uniform\s+\w+\s*\{(.*?)\}", text, re.S)
    if not m:
        return None
    fields = []
    for decl in m.group(1).split(";"):
        decl = decl.strip()
        if not decl:
            continue
        typ, names = decl.split(None, 1)
        for n in names.split(","):
            fields.append((n.strip(), GLSL_TYPES.get(typ, typ)))
    return fields


def _full_source(stem: str) -> str:
    return "\n".join(_strip_comments(t) for _, t in source_closure(shader_path(stem)))


def test_every_kernel_found():
    assert any(k.stem == "axpy" for k in KERNELS)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.stem)
def test_push_constant_layout_matches_glsl(kernel):
    fields = _push_fields(_full_source(kernel.stem))
    if kernel.push is None or kernel.push.itemsize == 0:
        assert fields is None, f"{kernel.stem}.comp declares push constants the spec lacks"
        return
    assert fields is not None, f"{kernel.stem}.comp has no push_constant block"
    py = [(n, np.dtype(kernel.push.fields[n][0]).str) for n in kernel.push.names]
    assert py == [(n, np.dtype(t).str) for n, t in fields]


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.stem)
def test_spec_constants_declared_in_glsl(kernel):
    src = _full_source(kernel.stem)
    ids = {int(i) for i in re.findall(r"constant_id\s*=\s*(\d+)", src)}
    ids |= {int(i) for i in re.findall(r"local_size_[xyz]_id\s*=\s*(\d+)", src)}
    for s in kernel.spec:
        assert s.id in ids, f"{kernel.stem}: spec constant {s.name} id {s.id} not in the shader"


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.stem)
def test_shader_has_header_contract(kernel):
    text = shader_path(kernel.stem).read_text()
    head = text.split("void main", 1)[0]
    assert "Bindings" in head or "Binding" in head, f"{kernel.stem}.comp lacks its header comment"
