#!/usr/bin/env python3
"""Kernel benchmarks, one section per kernel family (add a function to SECTIONS for a new one).

matvec  shaders/mul_mat_vec.comp: for each weight type × shape (rows × K) × columns 1..8,
        - steady state: back-to-back dispatches in one command buffer between two GPU
          timestamps, each depending on the previous (the recorder puts a barrier between them,
          as between decode layers; "chained"), and the same without barriers (independent
          outputs; "overlap", the steady-state figure). When one weight tensor would sit in L2,
          the dispatches rotate over enough copies to exceed `--l2-mib` four times, so every
          dispatch reads from DRAM. Clocks: the GPU is kept busy `--prewarm-ms` before the first
          timing and `--warm-ms` before each, and a timed submit lasts >= `--min-ms` (an H100
          idles at 345 MHz; short bursts measured the clock ramp, not the kernel).
        - latency: one dispatch between two timestamps (median of `--lat-reps`).
        Reported as GB/s of weight bytes and as a fraction of the stream-read bandwidth
        (`--stream-gbps`, else tools/bench_device.py's measurement).
matmul  shaders/mul_mat.comp at `--tokens` (512) tokens: TFLOP/s (2·rows·K·tokens per dispatch).

Weights are random bytes with finite fp16 scales written straight into device memory in chunks
(nothing of the big shapes is allocated by the tests). Markdown on stdout, progress on stderr.

    python tools/bench_kernels.py [--sections matvec,matmul] [--types q4_k,q8_0] [--cols 1-8]
        [--shapes 4096x4096,14336x4096] [--spec WG=128,NR=2] [--sweep [--sweep-space
        'NR=1,2,4;PREFETCH=0,1']] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vkinfer.gguf import quants
from vkinfer.pipelines import mul_mat as kmm
from vkinfer.pipelines import mul_mat_vec as kmv
from vkinfer.vk.commands import Recorder, TimestampPool
from vkinfer.vk.device import get_device
from vkinfer.vk.sync import Fence, submit

MATVEC_TYPES = "q4_k,q5_k,q6_k,q8_0,f16,bf16,f32,q4_0"
MATVEC_SHAPES = "4096x4096,14336x4096,4096x14336,248320x5120"
MATMUL_SHAPES = "4096x4096,14336x4096,4096x14336"
CHUNK = 64 << 20  # bytes of random weights generated per write


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --- shared helpers ----------------------------------------------------------------------------


def parse_ints(s: str) -> list[int]:
    out = []
    for part in s.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def parse_shapes(s: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in p.lower().split("x")) for p in s.split(",") if p]


def parse_spec(s: str) -> dict:
    out = {}
    for kv in filter(None, s.split(",")):
        k, v = kv.split("=")
        out[k.strip()] = int(v)
    return out


def stream_gbps(device, args) -> tuple[float | None, str]:
    """The bandwidth roofline: --stream-gbps, else tools/bench_device.py's stream measurement."""
    if args.stream_gbps:
        return args.stream_gbps, "--stream-gbps"
    path = ROOT / "tools" / "bench_device.py"
    if path.exists():
        spec = importlib.util.spec_from_file_location("bench_device", path)
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
            log("measuring stream bandwidth (tools/bench_device.py) ...")
            r = mod.measure_stream_bandwidth(device)
            return float(r["gbps"] if isinstance(r, dict) else r), "tools/bench_device.py"
        except Exception as e:  # noqa: BLE001 - report without a roofline rather than fail
            log(f"tools/bench_device.py unusable ({e}); no stream figure")
    return None, "none (pass --stream-gbps)"


MAX_REPS = 4096


def gpu_time_ns(
    device, record, reps: int, min_ms: float = 0.0, warm_ms: float = 0.0, trials: int = 1
) -> float:
    """GPU ns per repetition of record(rec, i), i = 0..n-1, between two timestamps.

    n = reps, raised (up to MAX_REPS) so that one timed submit lasts at least `min_ms`. GPU
    clocks ramp up only under sustained load: the same command buffer first runs for at least
    `warm_ms` (plus one warm-up submit), then the best of `trials` timed submits is reported."""
    pool = TimestampPool(device, 2)
    rec, fence = Recorder(device), Fence(device)

    def build(n):
        rec.begin()
        rec.reset_queries(pool)
        rec.barrier()
        rec.timestamp(pool, 0)
        for i in range(n):
            record(rec, i)
        rec.barrier()
        rec.timestamp(pool, 1)
        rec.end()

    def run_once():
        fence.reset()
        submit(device, [rec.cb], fence)
        fence.wait()
        return pool.elapsed_ns()

    try:
        n = reps
        build(n)
        run_once()
        t = run_once()
        if min_ms and t < min_ms * 1e6 and n < MAX_REPS:
            n = min(MAX_REPS, max(n, int(np.ceil(min_ms * 1e6 / max(t / n, 1.0)))))
            build(n)
            t = run_once()
        spent = t
        while spent < warm_ms * 1e6:
            spent += run_once()
        best = min([t] + [run_once() for _ in range(max(trials, 1))])
        return best / n
    finally:
        pool.destroy()
        fence.destroy()


def gpu_latency_ns(device, record, reps: int) -> float:
    """Median GPU ns of one dispatch alone between two timestamps (idle GPU before it)."""
    pool = TimestampPool(device, 2 * reps)
    rec, fence = Recorder(device), Fence(device)
    try:
        rec.begin(one_time=True)
        rec.reset_queries(pool)
        for i in range(reps):
            rec.barrier()
            rec.timestamp(pool, 2 * i)
            record(rec, i)
            rec.barrier()
            rec.timestamp(pool, 2 * i + 1)
        rec.end()
        fence.reset()
        submit(device, [rec.cb], fence)
        fence.wait()
        r = pool.results()
        return statistics.median(pool.elapsed_ns(2 * i, 2 * i + 1, r) for i in range(reps))
    finally:
        pool.destroy()
        fence.destroy()


def prewarm(device, ms: float, rng):
    """Keep the GPU busy for `ms` with a matvec: an idle GPU runs at a fraction of its clock and
    takes a while under load to ramp up; timings taken before that measure the ramp."""
    t = quants.T.Q8_0
    setup = MatvecSetup(device, t, 8192, 4096, 1, 1, rng)
    try:
        kp = kmv.pipeline(device, t, 1, 8192, 4096)
        gpu_time_ns(device, functools.partial(_mv, setup, kp, False), 20, min_ms=10, warm_ms=ms)
    finally:
        setup.free()


def random_weights(device, t, rows: int, K: int, rng) -> object:
    """A device buffer of rows × row_bytes random GGUF blocks with finite scales, generated and
    written in chunks (no host copy of the whole tensor)."""
    info = quants.type_info(t)
    rb = quants.row_bytes(t, K)
    nbytes = rows * rb
    buf = device.memory.alloc(nbytes + (-nbytes) % 16)
    rows_per = max(1, CHUNK // rb)
    for r0 in range(0, rows, rows_per):
        n = min(rows_per, rows - r0)
        raw = rng.integers(0, 256, size=n * rb, dtype=np.uint8)
        if info.quantized:
            b = raw.view(info.block_dtype())
            names = b.dtype.names
            b["d"] = np.float16(0.01 if "dmin" not in names else 1e-3)
            for f in ("dmin", "m"):
                if f in names:
                    b[f] = np.float16(1e-3)
        elif info.type == quants.T.F16:  # clear the top exponent bit: finite, |v| < 2
            raw.view(np.uint16)[:] &= np.uint16(0xBBFF)
        elif info.type == quants.T.BF16:
            raw.view(np.uint16)[:] &= np.uint16(0xBF7F)
        else:
            raw.view(np.uint32)[:] &= np.uint32(0xBF7FFFFF)
        buf.write(raw, r0 * rb)
    return buf


def fits(device, nbytes: int, copies: int = 1) -> bool:
    mem = device.memory
    if nbytes > device.info.max_storage_buffer_range:
        return False
    free = mem.heap_free(mem.types[mem.device_type].heap)
    return nbytes * copies < 0.8 * free


# --- matvec ------------------------------------------------------------------------------------


def parse_sweep(s: str) -> dict:
    """'WG=64,128;NR=1,2' -> {'WG': (64, 128), 'NR': (1, 2)}."""
    out = {}
    for part in filter(None, s.split(";")):
        k, v = part.split("=")
        out[k.strip()] = tuple(int(x) for x in v.split(","))
    return out


def matvec_configs(args, device) -> list[dict]:
    """--spec alone (else the per-call defaults), or the sweep: every combination of the
    swept constants (--sweep-space, else each tunable's choices) over --spec."""
    base = parse_spec(args.spec)
    if not args.sweep:
        return [base]
    by = {s.name: s.choices for s in kmv.KERNEL.spec if s.choices and s.name != "CHUNK"}
    by.update(parse_sweep(args.sweep_space))  # CHUNK (else derived) only when named here
    keys = [k for k in ("WG", "NR", "UNROLL", "PREFETCH", "CHUNK") if k not in base and k in by]
    return [{**base, **dict(zip(keys, vals))} for vals in itertools.product(*(by[k] for k in keys))]


class MatvecSetup:
    """Weight copies (rotated so L2 cannot hold them), activations and output buffers."""

    def __init__(self, device, t, rows, K, copies, n_out, rng):
        self.rows, self.K, self.rb = rows, K, quants.row_bytes(t, K)
        self.ws = [random_weights(device, t, rows, K, rng) for _ in range(copies)]
        self.x = device.memory.alloc(8 * K * 4)
        self.x.write(rng.standard_normal(8 * K).astype(np.float32))
        self.ys = [device.memory.alloc(8 * rows * 4) for _ in range(min(n_out, 64))]

    def dispatch(self, rec, kp, i: int, same_y: bool = True):
        """Dispatch i: weights copy i mod copies; output shared (chained) or rotating."""
        y = self.ys[0] if same_y else self.ys[i % len(self.ys)]
        kmv.dispatch(rec, kp, self.ws[i % len(self.ws)], self.x, y, self.rows, self.K, self.rb)

    def free(self):
        for b in self.ws + self.ys + [self.x]:
            b.free()


def bench_matvec_one(args, device, stream, setup, t, nc) -> dict | None:
    """The best configuration (of --spec, or of the sweep) for one type, shape and column count."""
    rows, K = setup.rows, setup.K
    wbytes = rows * setup.rb
    best, points = None, []
    timing = {"min_ms": args.min_ms, "warm_ms": args.warm_ms, "trials": args.trials}
    for cfg in matvec_configs(args, device):
        try:
            kp = kmv.pipeline(device, t, nc, rows, K, reduce=args.reduce, **cfg)
        except Exception as e:  # noqa: BLE001 - an invalid sweep point
            log(f"  c{nc} {cfg}: {e}")
            continue
        chained = gpu_time_ns(device, functools.partial(_mv, setup, kp, True), args.reps, **timing)
        overlap = gpu_time_ns(device, functools.partial(_mv, setup, kp, False), args.reps, **timing)
        r = {
            "rows": rows,
            "K": K,
            "cols": nc,
            "spec": {k: kp.spec[k] for k in ("WG", "NR", "UNROLL", "PREFETCH", "CHUNK")},
            "variant": kp.variant,
            "weight_bytes": wbytes,
            "chained_us": chained / 1e3,
            "overlap_us": overlap / 1e3,
            "chained_gbps": wbytes / chained,
            "overlap_gbps": wbytes / overlap,
        }
        if stream:
            r["chained_frac"] = r["chained_gbps"] / stream
            r["overlap_frac"] = r["overlap_gbps"] / stream
        points.append({k: r[k] for k in ("spec", "chained_gbps", "overlap_gbps")})
        key = "overlap_gbps" if args.rank == "overlap" else "chained_gbps"
        if best is None or r[key] > best[key]:
            best, best_kp = r, kp
        if args.sweep:
            log(
                f"  c{nc} {r['spec']}: {r['chained_gbps']:.0f} GB/s, overlap {r['overlap_gbps']:.0f}"
            )
    if best is None:
        return None
    if args.sweep:
        best["sweep"] = points
    lat = float("nan")
    if args.lat_reps > 0:
        lat = gpu_latency_ns(device, functools.partial(_mv, setup, best_kp, True), args.lat_reps)
    best["latency_us"] = lat / 1e3
    frac = f" ({best['chained_frac']:.0%})" if stream else ""
    log(
        f"  c{nc}: {best['chained_gbps']:.0f} GB/s{frac}, overlap {best['overlap_gbps']:.0f}, "
        f"latency {best['latency_us']:.1f} µs {best['spec']}"
    )
    return best


def _mv(setup, kp, same_y, rec, i):
    setup.dispatch(rec, kp, i, same_y)


def _mm(kp, w, x, y, rows, K, rb, n, rec, i):
    kmm.dispatch(rec, kp, w, x, y, rows, K, rb, n)


def bench_matvec(args, device, stream, rng) -> tuple[str, list]:
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    shapes, cols = parse_shapes(args.shapes), parse_ints(args.cols)
    results = []
    for tn in types:
        t = quants.parse_type(tn, supported_only=True)
        for rows, K in shapes:
            rb = quants.row_bytes(t, K)
            wbytes = rows * rb
            copies = max(1, -(-4 * (args.l2_mib << 20) // wbytes))
            if not fits(device, wbytes, copies):
                log(f"skip {tn} {rows}x{K}: {wbytes / 2**20:.0f} MiB × {copies} does not fit")
                results.append({"type": tn, "rows": rows, "K": K, "skipped": "memory"})
                continue
            log(f"{tn} {rows}x{K}: {wbytes / 2**20:.1f} MiB weights × {copies} copies")
            setup = MatvecSetup(device, t, rows, K, copies, max(args.reps, args.lat_reps), rng)
            try:
                for nc in cols:
                    r = bench_matvec_one(args, device, stream, setup, t, nc)
                    if r is not None:
                        r["type"] = tn
                        results.append(r)
            finally:
                setup.free()
    return matvec_table(results, cols, stream), results


def matvec_table(results, cols, stream) -> str:
    head = (
        ["type", "rows×K", "MiB"]
        + [f"c{c}" for c in cols]
        + [f"c{cols[0]} overlap", f"lat c{cols[0]} µs", f"lat c{cols[-1]} µs"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups = {}
    for r in results:
        groups.setdefault((r["type"], r["rows"], r["K"]), []).append(r)
    for (tn, rows, K), rs in groups.items():
        if rs[0].get("skipped"):
            lines.append(f"| {tn} | {rows}×{K} | – | skipped ({rs[0]['skipped']}) |")
            continue
        by = {r["cols"]: r for r in rs}
        cells = [tn, f"{rows}×{K}", f"{rs[0]['weight_bytes'] / 2**20:.1f}"]
        for c in cols:
            r = by.get(c)
            if r is None:
                cells.append("–")
            elif stream:
                cells.append(f"{r['overlap_frac']:.0%} / {r['chained_frac']:.0%}")
            else:
                cells.append(f"{r['overlap_gbps']:.0f} / {r['chained_gbps']:.0f}")
        first, last = by.get(cols[0]), by.get(cols[-1])
        cells.append(f"{first['overlap_gbps']:.0f}" if first else "–")
        cells.append(f"{first['latency_us']:.1f}" if first else "–")
        cells.append(f"{last['latency_us']:.1f}" if last else "–")
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"weight bytes per second as a fraction of stream {stream:.0f} GB/s: overlapped "
        "(back-to-back, no barrier: the steady state) / chained (barrier between dispatches)"
        if stream
        else "GB/s of weight bytes: overlapped / chained"
    )
    return "### mul_mat_vec\n\n" + note + "\n\n" + "\n".join(lines) + "\n"


# --- matmul ------------------------------------------------------------------------------------


def bench_matmul(args, device, stream, rng) -> tuple[str, list]:
    types = [t.strip() for t in (args.mm_types or args.types).split(",") if t.strip()]
    shapes, n = parse_shapes(args.mm_shapes), args.tokens
    results = []
    for tn in types:
        t = quants.parse_type(tn, supported_only=True)
        for rows, K in shapes:
            rb = quants.row_bytes(t, K)
            if not fits(device, rows * rb + 4 * n * (K + rows)):
                results.append({"type": tn, "rows": rows, "K": K, "skipped": "memory"})
                continue
            w = random_weights(device, t, rows, K, rng)
            x = device.memory.alloc(n * K * 4)
            x.write(rng.standard_normal(n * K).astype(np.float32))
            y = device.memory.alloc(n * rows * 4)
            try:
                kp = kmm.pipeline(device, t, rows, K, n, **parse_spec(args.mm_spec))
                ns = gpu_time_ns(
                    device,
                    functools.partial(_mm, kp, w, x, y, rows, K, rb, n),
                    args.mm_reps,
                    min_ms=args.min_ms,
                    warm_ms=args.warm_ms,
                    trials=args.trials,
                )
                flops = 2.0 * rows * K * n
                r = {
                    "type": tn,
                    "rows": rows,
                    "K": K,
                    "tokens": n,
                    "us": ns / 1e3,
                    "tflops": flops / ns / 1e3,
                    "spec": {k: kp.spec[k] for k in ("BM", "BN", "TM", "TN", "SLAB", "WG")},
                }
                log(f"matmul {tn} {rows}x{K} n={n}: {r['tflops']:.2f} TFLOP/s ({r['us']:.0f} µs)")
                results.append(r)
            finally:
                for b in (w, x, y):
                    b.free()
    lines = ["| type | rows×K | tokens | µs | TFLOP/s |", "|---|---|---|---|---|"]
    for r in results:
        if r.get("skipped"):
            lines.append(f"| {r['type']} | {r['rows']}×{r['K']} | – | skipped | – |")
        else:
            lines.append(
                f"| {r['type']} | {r['rows']}×{r['K']} | {r['tokens']} | "
                f"{r['us']:.0f} | {r['tflops']:.2f} |"
            )
    return "### mul_mat (prefill)\n\n" + "\n".join(lines) + "\n", results


SECTIONS = {"matvec": bench_matvec, "matmul": bench_matmul}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default="matvec,matmul", help=f"comma list of {list(SECTIONS)}")
    ap.add_argument("--types", default=MATVEC_TYPES, help="weight types (matvec; matmul default)")
    ap.add_argument("--shapes", default=MATVEC_SHAPES, help="rows x K list for matvec")
    ap.add_argument("--cols", default="1-8", help="column counts, e.g. 1-8 or 1,4,8")
    ap.add_argument("--spec", default="", help="matvec spec overrides, e.g. WG=128,NR=2,UNROLL=2")
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="matvec: try every WG x NR x UNROLL x PREFETCH choice, report the best",
    )
    ap.add_argument(
        "--sweep-space", default="", help="matvec sweep values, e.g. 'WG=64,128;NR=1,2,4'"
    )
    ap.add_argument(
        "--rank",
        choices=("overlap", "chained"),
        default="overlap",
        help="which steady state picks the best sweep point",
    )
    ap.add_argument(
        "--min-ms",
        type=float,
        default=5.0,
        help="each timed submit lasts at least this long (more repetitions)",
    )
    ap.add_argument(
        "--warm-ms",
        type=float,
        default=30.0,
        help="GPU busy time before each timing (clocks ramp up under load)",
    )
    ap.add_argument("--trials", type=int, default=2, help="timed submits; the best is kept")
    ap.add_argument(
        "--prewarm-ms",
        type=float,
        default=1500.0,
        help="GPU busy time before the first timing (idle clocks are low)",
    )
    ap.add_argument("--reduce", choices=("subgroup", "shmem"), default=None)
    ap.add_argument("--reps", type=int, default=20, help="dispatches per timing (at least)")
    ap.add_argument("--lat-reps", type=int, default=20, help="single-dispatch latency samples")
    ap.add_argument("--l2-mib", type=int, default=50, help="last-level cache size to defeat")
    ap.add_argument("--mm-types", default="", help="matmul types (default: --types)")
    ap.add_argument("--mm-shapes", default=MATMUL_SHAPES, help="rows x K list for matmul")
    ap.add_argument("--tokens", type=int, default=512, help="matmul tokens")
    ap.add_argument("--mm-spec", default="", help="matmul spec overrides, e.g. BM=64,BN=64")
    ap.add_argument("--mm-reps", type=int, default=5)
    ap.add_argument("--stream-gbps", type=float, default=None)
    ap.add_argument("--device", default=None, help="index or name substring (VKINFER_DEVICE)")
    ap.add_argument("--json", default=None, help="write all results to this JSON file")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    device = get_device(args.device)
    log(f"device: {device.info.name} ({device.info.type}, driver {device.info.driver_name})")
    stream, stream_src = stream_gbps(device, args)
    if stream:
        log(f"stream bandwidth {stream:.0f} GB/s ({stream_src})")
    rng = np.random.default_rng(args.seed)
    if args.prewarm_ms > 0 and device.info.type != "cpu":
        prewarm(device, args.prewarm_ms, rng)
    out = {
        "device": device.info.name,
        "driver": device.info.driver_info,
        "stream_gbps": stream,
        "stream_source": stream_src,
        "time": time.time(),
        "sections": {},
    }
    print(f"## Kernel benchmarks on {device.info.name}\n")
    for name in [s.strip() for s in args.sections.split(",") if s.strip()]:
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {name!r}; have {list(SECTIONS)}")
        md, res = SECTIONS[name](args, device, stream, rng)
        out["sections"][name] = res
        print(md, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
