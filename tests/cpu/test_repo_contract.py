"""The README's test command is what CI runs, and packaging ships the shaders."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    cmds = re.findall(r"^    (bash tools/install\.sh && .+)$", readme, re.M)
    assert len(cmds) == 2, "README quickstart must give exactly two commands"
    test_cmd = next(c for c in cmds if "pytest" in c)
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


def test_pyproject_ships_shaders_and_models():
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tool = pp["tool"]["setuptools"]
    assert tool["package-dir"]["vkinfer.models"] == "models"
    assert "*.comp" in tool["package-data"]["vkinfer.shaders"]
    assert pp["project"]["scripts"]["vkinfer"] == "vkinfer.cli:main"


def test_every_subpackage_is_packaged():
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(pp["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "vkinfer").rglob("__init__.py")}
    missing = found - listed
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {sorted(missing)}"
