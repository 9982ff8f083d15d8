"""What the benchmark tools share: progress logging and the stream-bandwidth denominator."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vkinfer.vk.timing import gpu_time_ns  # noqa: E402,F401  (re-exported for the tools)


def log(*a):
    """Progress goes to stderr; results to stdout."""
    print(*a, file=sys.stderr, flush=True)


def stream_gbps(device, args, nbytes: int | None = None) -> tuple[float, str]:
    """(GB/s, where it came from): `--stream-gbps` when given, else measured now with
    tools/bench_device.py's stream-read shader."""
    if getattr(args, "stream_gbps", None):
        return float(args.stream_gbps), "--stream-gbps"
    from bench_device import measure_stream_bandwidth

    log("measuring stream-read bandwidth (tools/bench_device.py) ...")
    return float(measure_stream_bandwidth(device, nbytes)["gbps"]), "bench_device stream read"
