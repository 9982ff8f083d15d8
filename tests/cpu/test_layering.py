"""DESIGN §2: data flows one way. A package imports only from packages to its left in
gguf → runtime → models → sampling → speculative → api → cli/server; vk/ and pipelines/ (and
the small shared modules) serve all of them; only vk/ imports `vulkan`; gguf/ imports nothing of
the GPU."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "vkinfer"
FLOW = ["gguf", "runtime", "models", "sampling", "speculative", "api", "cli", "server"]
SERVICE = {"vk", "pipelines", "errors", "paths", "tuning", "ops", "__init__", "__main__"}
GPU = {"vk", "pipelines", "runtime", "ops"}


def _layer(path: Path) -> str:
    rel = path.relative_to(PKG) if PKG in path.parents else Path("models") / path.name
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    pkg_parts = ["vkinfer"] + list(path.relative_to(PKG).parts[:-1]) if PKG in path.parents \
        else ["vkinfer", "models"]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                if not node.module:
                    for a in node.names:
                        yield f"{mod}.{a.name}"
                    continue
                yield mod
            else:
                yield node.module or ""


def _files():
    return sorted(PKG.rglob("*.py")) + sorted((ROOT / "models").glob("*.py"))


def test_only_vk_imports_vulkan():
    bad = [str(f.relative_to(ROOT)) for f in _files() if _layer(f) != "vk"
           and any(m == "vulkan" or m.startswith("vulkan.") for m in _imports(f))]
    assert not bad, f"raw Vulkan outside vkinfer/vk: {bad}"


def test_gguf_imports_nothing_of_the_gpu():
    for f in (PKG / "gguf").rglob("*.py"):
        for m in _imports(f):
            parts = m.split(".")
            assert not (parts[0] == "vkinfer" and len(parts) > 1 and parts[1] in GPU), (f, m)


def test_data_flows_one_way():
    problems = []
    for f in _files():
        me = _layer(f)
        if me not in FLOW:
            continue
        for m in _imports(f):
            parts = m.split(".")
            if parts[0] != "vkinfer" or len(parts) < 2:
                continue
            other = parts[1]
            if other in SERVICE or other == me or other not in FLOW:
                continue
            if FLOW.index(other) > FLOW.index(me):
                problems.append(f"{f.relative_to(ROOT)} imports {m}")
    assert not problems, problems


def test_vk_does_not_reach_up():
    for f in (PKG / "vk").rglob("*.py"):
        for m in _imports(f):
            parts = m.split(".")
            if parts[0] == "vkinfer" and len(parts) > 1:
                assert parts[1] in {"vk", "errors", "paths"}, (f, m)
