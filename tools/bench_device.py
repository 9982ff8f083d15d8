#!/usr/bin/env python3
"""Device figures that every later roofline number divides by:

- stream-read bandwidth of a simple shader (shaders/stream_read.comp), best over a few
  workgroup/grid shapes, measured as back-to-back dispatches between GPU timestamps;
- the submit + fence-wait round trip of an empty command buffer (host clock);
- the GPU cost of one recorded dependent dispatch (a chain of axpy dispatches, each waiting on
  the previous through a barrier), and what recording one from Python costs.

Usage: python tools/bench_device.py [--device D] [--mib N] [--json PATH]
Results to stdout (markdown), progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vkinfer.pipelines import axpy, stream_read  # noqa: E402
from vkinfer.vk.commands import Recorder, TimestampPool, one_shot  # noqa: E402
from vkinfer.vk.device import Device, select_device  # noqa: E402
from vkinfer.vk.sync import Fence, submit  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def measure_stream_bandwidth(dev, nbytes: int | None = None, reps: int = 10) -> dict:
    """Best stream-read GB/s over a few shapes; bytes = reps * buffer size per timed run."""
    lim = dev.info.max_storage_buffer_range
    nbytes = min(nbytes or (1 << 30), lim - lim % 16)
    free = dev.memory.heap_free(dev.memory.types[dev.memory.device_type].heap)
    nbytes = min(nbytes, int(free * 0.5) // 16 * 16)
    src = dev.memory.alloc(nbytes)
    if src.host is not None:  # fill with non-zero data without a huge numpy temporary
        chunk = np.arange(1 << 20, dtype=np.uint32).view(np.uint8)
        for off in range(0, nbytes, chunk.nbytes):
            n = min(chunk.nbytes, nbytes - off)
            src.host[off:off + n] = chunk[:n]
    n_vec4 = nbytes // 16
    ts = TimestampPool(dev, 2)
    best = {"gbps": 0.0}
    sms = 132 if dev.info.type == "discrete" else 16
    for wg in (256, 1024):
        for unroll in (4, 8):
            for groups in (sms * 4, sms * 16, sms * 64):
                kp = stream_read.KERNEL.pipeline(dev, WG=wg, UNROLL=unroll)
                dst = dev.memory.alloc(groups * 16)
                with one_shot(dev) as rec:  # warm-up
                    stream_read.dispatch(rec, kp, src, dst, n_vec4, groups)
                with one_shot(dev) as rec:
                    rec.reset_queries(ts)
                    rec.timestamp(ts, 0)
                    for _ in range(reps):
                        stream_read.dispatch(rec, kp, src, dst, n_vec4, groups)
                        rec.barrier()
                    rec.timestamp(ts, 1)
                ns = ts.elapsed_ns()
                gbps = reps * nbytes / ns
                log(f"  stream wg={wg} unroll={unroll} groups={groups}: {gbps:.1f} GB/s")
                if gbps > best["gbps"]:
                    best = {"gbps": gbps, "wg": wg, "unroll": unroll, "groups": groups,
                            "bytes": nbytes}
                dst.free()
    src.free()
    ts.destroy()
    return best


def measure_submit_wait(dev, n: int = 200) -> float:
    """Median µs of submitting an empty command buffer and waiting on its fence."""
    rec, fence = Recorder(dev), Fence(dev)
    rec.begin()
    rec.end()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fence.reset()
        submit(dev, [rec.cb], fence)
        fence.wait()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def measure_dependent_dispatch(dev, n: int = 400) -> dict:
    """GPU µs per dependent dispatch in a replayed recording, wall µs per replay, and the
    Python recording cost per dispatch."""
    x = dev.memory.alloc(256)
    x.write(np.ones(64, np.float32))
    a = dev.memory.alloc(16)
    a.write(np.array([1e-3], np.float32))
    y = dev.memory.alloc(256)
    kp = axpy.KERNEL.pipeline(dev)
    ts = TimestampPool(dev, 2)
    rec, fence = Recorder(dev), Fence(dev)
    t0 = time.perf_counter()
    rec.begin()
    rec.reset_queries(ts)
    rec.timestamp(ts, 0)
    for _ in range(n):
        axpy.dispatch(rec, kp, x, a, y, 64)  # reads and writes y: a barrier each time
    rec.timestamp(ts, 1)
    rec.end()
    record_us = (time.perf_counter() - t0) * 1e6 / n
    gpu, wall = [], []
    for _ in range(7):
        t1 = time.perf_counter()
        fence.reset()
        submit(dev, [rec.cb], fence)
        fence.wait()
        wall.append(time.perf_counter() - t1)
        gpu.append(ts.elapsed_ns())
    return {"n": n, "gpu_us_per_dispatch": statistics.median(gpu) / 1e3 / n,
            "replay_wall_ms": statistics.median(wall) * 1e3,
            "record_us_per_dispatch": record_us, "barriers": rec.n_barriers}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="index or name substring (VKINFER_DEVICE)")
    ap.add_argument("--mib", type=int, default=1024, help="stream buffer size in MiB")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    dev = Device(select_device(args.device))
    info = dev.info
    log(f"device: {info.name} ({info.type}), driver {info.driver_name} {info.driver_info}")
    log("measuring stream-read bandwidth ...")
    bw = measure_stream_bandwidth(dev, args.mib << 20)
    log("measuring submit + wait ...")
    sw = measure_submit_wait(dev)
    log("measuring dependent dispatches ...")
    dd = measure_dependent_dispatch(dev)
    res = {"device": info.name, "driver": f"{info.driver_name} {info.driver_info}",
           "api": info.api_version, "stream_read": bw, "submit_wait_us": sw,
           "dependent_dispatch": dd}
    print(f"| device | stream read | submit+wait | dependent dispatch (GPU) | "
          f"{dd['n']} replayed (wall) | recording from Python |")
    print("|---|---|---|---|---|---|")
    print(f"| {info.name} | {bw['gbps']:.1f} GB/s ({bw['bytes'] >> 20} MiB, wg {bw['wg']}, "
          f"unroll {bw['unroll']}, {bw['groups']} groups) | {sw:.1f} µs | "
          f"{dd['gpu_us_per_dispatch']:.2f} µs | {dd['replay_wall_ms']:.2f} ms | "
          f"{dd['record_us_per_dispatch']:.1f} µs/dispatch |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
