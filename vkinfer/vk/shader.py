"""GLSL → SPIR-V through the `glslc` executable, with caches keyed by what invalidates them (R7).

Why glslc and not a Python binding: Debian's libshaderc.so.1 cannot be dlopened from Python and
pyshaderc bundles a 2017 shaderc; glslc is packaged everywhere. Lookup order for a (shader,
defines) pair: the SPIR-V shipped in `vkinfer/spirv/` (keyed by source hash, so a stale file is
never used), then the user cache (keyed also by compiler version), then a compile.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import ShaderCompileError
from ..paths import cache_dir, shader_dir, spirv_dir

TARGET_ENV = "vulkan1.2"
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def shader_path(stem: str) -> Path:
    p = shader_dir() / f"{stem}.comp"
    if not p.exists():
        raise FileNotFoundError(f"shader {stem}.comp not found in {shader_dir()}")
    return p


@functools.lru_cache(maxsize=None)
def _read(path: str, mtime: float) -> str:
    return Path(path).read_text()


def source_closure(path: Path) -> list[tuple[str, str]]:
    """(relative name, text) for the shader and every file it includes, recursively, in order."""
    seen, out = set(), []
    inc_dirs = [path.parent, shader_dir() / "common", shader_dir()]

    def visit(p: Path):
        key = str(p.resolve())
        if key in seen:
            return
        seen.add(key)
        text = _read(key, p.stat().st_mtime)
        out.append((p.name, text))
        for name in _INCLUDE.findall(text):
            for d in [p.parent] + inc_dirs:
                if (d / name).exists():
                    visit(d / name)
                    break

    visit(path)
    return out


def source_key(stem: str, defines: dict) -> str:
    """Hash of the shader source, its includes, the defines and the target: names its SPIR-V."""
    h = hashlib.sha256()
    for name, text in source_closure(shader_path(stem)):
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    h.update(json.dumps(sorted((str(k), str(v)) for k, v in defines.items())).encode())
    h.update(TARGET_ENV.encode())
    return h.hexdigest()[:24]


@functools.lru_cache(maxsize=1)
def compiler_version() -> str:
    exe = glslc_path()
    if exe is None:
        return "none"
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    return r.stdout.strip().splitlines()[0] if r.stdout else "unknown"


def glslc_path() -> str | None:
    return os.environ.get("VKINFER_GLSLC") or shutil.which("glslc")


def compile_glsl(path: Path, defines: dict, out: Path):
    """Compile one GLSL file; errors come back as ShaderCompileError starting with file:line."""
    exe = glslc_path()
    if exe is None:
        raise ShaderCompileError(
            f"{path.name}: no SPIR-V is shipped for these defines and glslc is not installed "
            "(Debian/Ubuntu: apt-get install glslc)")
    cmd = [exe, "-fshader-stage=compute", f"--target-env={TARGET_ENV}", "-O",
           "-I", str(shader_dir() / "common"), "-I", str(path.parent)]
    cmd += [f"-D{k}" if v is None or v == "" else f"-D{k}={v}" for k, v in defines.items()]
    cmd += [str(path), "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip()
        first = next((ln for ln in msg.splitlines() if "error" in ln), msg.splitlines()[0]
                     if msg else "unknown error")
        raise ShaderCompileError(f"{first}\n{msg}" if first != msg else msg)


def _shipped(key: str) -> bytes | None:
    p = spirv_dir() / f"{key}.spv"
    return p.read_bytes() if p.exists() else None


def get_spirv(stem: str, defines: dict | None = None) -> tuple[bytes, str]:
    """SPIR-V bytes for (stem, defines) and the source key naming them."""
    defines = dict(defines or {})
    key = source_key(stem, defines)
    data = _shipped(key)
    if data is not None:
        return data, key
    ver = hashlib.sha256(compiler_version().encode()).hexdigest()[:8]
    cdir = cache_dir() / "spirv"
    cdir.mkdir(parents=True, exist_ok=True)
    cpath = cdir / f"{stem}-{key}-{ver}.spv"
    if cpath.exists():
        return cpath.read_bytes(), key
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td) / "out.spv"
        compile_glsl(shader_path(stem), defines, tmp)
        data = tmp.read_bytes()
    tmpc = cpath.with_suffix(f".{os.getpid()}.tmp")
    tmpc.write_bytes(data)
    os.replace(tmpc, cpath)  # atomic: parallel test workers may race
    return data, key
