#!/usr/bin/env python3
"""Autotune kernel specialization constants for a device: the same as `vkinfer tune`.

Usage: python tools/autotune.py [--kernel NAME] [--budget-s S] [--device D] [--shape-class C]
                                [--plot DIR] [--fresh] [--quiet]
Table to stdout, progress and notes to stderr; results to the tuning database
($VKINFER_CACHE or ~/.cache/vkinfer/tuning.json). See vkinfer/autotune.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vkinfer.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
