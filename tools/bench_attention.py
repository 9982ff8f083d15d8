#!/usr/bin/env python3
"""Benchmark attention kernels at real model shapes. Section "flash attention":
shaders/flash_attn.comp (+ flash_attn_reduce.comp) for decode/verify (split-K) at KV lengths
512/4096/32768, 1 and 4 query tokens, F16 and Q8_0 caches, for the Qwen3.6 attention shapes
(27B: 24 query / 4 KV heads, 35B-A3B: 16 / 2, head dim 256; shared/reference/shapes.md), and
optionally prefill (one pass) of a prompt chunk.

Method: `--reps` calls recorded back to back in one command buffer between two GPU timestamps
(vkinfer.vk.commands.TimestampPool), after a warm-up submit, submitted `--repeat` times (the
fastest submit counts: another process on the GPU only adds time); each call is the main pass plus the
reduce pass, with the barriers the recorder puts between dependent dispatches, as in a decode
step. Successive calls cycle through distinct copies of the KV cache (like successive layers)
so that the working set (`--working-set-mib`, default 512) exceeds the last-level cache and KV
bytes really come from memory. Reported per call: µs, and the effective bandwidth of the KV
bytes a call must read (K and V rows of kv_len positions, all KV heads) as a fraction of a
stream bandwidth: `--stream-gbps`, else tools/bench_device.py's measure_stream_bandwidth if that
file exists, else a vkCmdCopyBuffer measurement made here. The main pass alone is timed too.

Markdown on stdout, progress on stderr, everything as JSON with --json.

    python tools/bench_attention.py [--shapes 27b,35b] [--kv 512,4096,32768] [--tokens 1,4]
        [--types f16,q8_0] [--spec NCHUNK=64] [--sweep CHUNK_MAX=256,512 --sweep VE=4,8]
        [--prefill 512 --prefill-kv 512,4096] [--reps 50] [--stream-gbps G] [--json out.json]
        [--sweep-only 27b/f16/1]

Suggested tuning run on a GPU (the chunk rule CHUNK/CHUNK_MAX/NCHUNK trades occupancy at short
context against partial-result traffic at long context; BC, the chunk rule and DL change the
numerics, so a model uses one value per layer shape for all modes):
    python tools/bench_attention.py --sweep NCHUNK=64,128,256 --sweep CHUNK_MAX=256,512,1024
--sweep-only SHAPE/TYPE/TOKENS limits the sweep to those decode cases (others run the defaults).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vkinfer.errors import ContractError
from vkinfer.pipelines import flash_attn as fa
from vkinfer.vk.commands import Recorder, TimestampPool
from vkinfer.vk.device import get_device
from vkinfer.vk.sync import Fence, submit

# name -> (label, n_head, n_head_kv, head_dim)
SHAPES = {"27b": ("Qwen3.6-27B", 24, 4, 256), "35b": ("Qwen3.6-35B-A3B", 16, 2, 256),
          "gemma3": ("Gemma-3-270M", 4, 1, 256)}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


REPEAT = 1  # timed submits per measurement (--repeat); the fastest counts


def _timed(device, record, reps: int) -> float:
    """GPU ns per repetition of `record(rec, i)`, between two timestamps, after a warm-up; the
    minimum over REPEAT timed submits (another process on the GPU only ever adds time)."""
    pool = TimestampPool(device, 2)
    rec, fence = Recorder(device), Fence(device)
    best = float("inf")
    try:
        for warm in (True,) + (False,) * REPEAT:
            rec.begin(one_time=True)
            rec.reset_queries(pool)
            rec.timestamp(pool, 0)
            for i in range(min(reps, 4) if warm else reps):
                record(rec, i)
            rec.timestamp(pool, 1)
            rec.end()
            fence.reset()
            submit(device, [rec.cb], fence)
            fence.wait()
            if not warm:
                best = min(best, pool.elapsed_ns() / reps)
        return best
    finally:
        pool.destroy()
        fence.destroy()


def stream_gbps(device, args) -> tuple[float, str]:
    if args.stream_gbps:
        return args.stream_gbps, "--stream-gbps"
    path = ROOT / "tools" / "bench_device.py"
    if path.exists():
        spec = importlib.util.spec_from_file_location("bench_device", path)
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
            fn = getattr(mod, "measure_stream_bandwidth", None)
            if callable(fn):
                v = fn(device)
                v = v.get("gbps") if isinstance(v, dict) else v
                return float(v), "tools/bench_device.py:measure_stream_bandwidth"
        except Exception as e:  # noqa: BLE001 - fall back to our own copy measurement
            log(f"tools/bench_device.py unusable ({e}); measuring a buffer copy instead")
    n = 256 << 20
    a, b = device.memory.alloc(n), device.memory.alloc(n)
    try:
        ns = _timed(device, lambda rec, i: rec.copy(a, b, n), 10)
    finally:
        a.free()
        b.free()
    return 2 * n / ns, "vkCmdCopyBuffer 256 MiB (read+write)"


def _random_cache(rng, kv_type: str, rows: int, n_kv: int, hd: int) -> np.ndarray:
    """Random cache contents of a realistic scale (never zeros), as raw bytes."""
    if kv_type == "f16":
        x = rng.standard_normal((rows, n_kv * hd), dtype=np.float32).astype(np.float16)
        return x.view(np.uint8)
    nb = n_kv * hd // 32
    raw = rng.integers(0, 256, size=(rows * nb, 34), dtype=np.uint8)
    raw[:, :2] = np.frombuffer(np.float16(0.02).tobytes(), np.uint8)
    return raw.reshape(rows, nb * 34)


class Layers:
    """`n` distinct K/V caches of kv_len_max positions, as aligned ranges of one big buffer."""

    def __init__(self, device, rng, kv_type, kv_len_max, n_kv, hd, working_set):
        mem = device.memory
        align = max(256, device.info.min_storage_buffer_offset_alignment)
        self.cache_bytes = fa.cache_nbytes(kv_type, kv_len_max, n_kv, hd)
        stride = -(-self.cache_bytes // align) * align
        per_layer = 2 * stride
        lim = device.info.max_storage_buffer_range
        self.n = int(max(1, min(256, math.ceil(working_set / per_layer), lim // per_layer)))
        self.buf = mem.alloc(self.n * per_layer)
        k = _random_cache(rng, kv_type, kv_len_max, n_kv, hd)
        v = _random_cache(rng, kv_type, kv_len_max, n_kv, hd)
        self.k, self.v = [], []
        for i in range(self.n):
            off = i * per_layer
            self.buf.write(k, off)
            self.buf.write(v, off + stride)
            self.k.append(self.buf.range(off, self.cache_bytes))
            self.v.append(self.buf.range(off + stride, self.cache_bytes))

    def free(self):
        self.buf.free()


def _parse_kv(items) -> dict:
    out = {}
    for it in items or ():
        for part in it.split(";"):
            if part:
                name, val = part.split("=", 1)
                out[name.strip()] = [int(x) for x in val.split(",")]
    return out


def bench_decode(device, rng, args, bw, rows_out):
    shapes = args.shapes.split(",")
    fixed = {k: v[0] for k, v in _parse_kv(args.spec).items()}
    sweep = _parse_kv(args.sweep)
    combos = [dict(zip(sweep, vals)) for vals in itertools.product(*sweep.values())] or [{}]
    for shape in shapes:
        label, n_head, n_kv, hd = SHAPES[shape]
        for kv_type in args.types.split(","):
            for kv_len in (int(x) for x in args.kv.split(",")):
                layers = Layers(device, rng, kv_type, kv_len, n_kv, hd,
                                args.working_set_mib << 20)
                try:
                    for n_q in (int(x) for x in args.tokens.split(",")):
                        only = args.sweep_only
                        swept = not only or any(
                            o == f"{shape}/{kv_type}/{n_q}" for o in only.split(","))
                        for combo in (combos if swept else [{}]):
                            row = _decode_one(device, rng, args, bw, label, shape, n_head, n_kv,
                                              hd, kv_type, kv_len, n_q, layers,
                                              {**fixed, **combo})
                            if row:
                                rows_out.append(row)
                finally:
                    layers.free()


def _decode_one(device, rng, args, bw, label, shape, n_head, n_kv, hd, kv_type, kv_len, n_q,
                layers, spec):
    try:
        kp, kr = fa.pipelines(device, hd, kv_type, split=True, group=n_head // n_kv,
                              rows=n_q * n_head // n_kv, **spec)
    except ContractError as e:
        log(f"  skip {spec}: {e}")
        return None
    mem = device.memory
    bq = mem.alloc(n_q * n_head * hd * 4)
    bq.write(rng.standard_normal((n_q, n_head, hd), dtype=np.float32))
    bpos = mem.alloc(max(16, 4 * n_q))
    bpos.write(np.arange(kv_len - n_q, kv_len, dtype=np.int32))
    blens = mem.alloc(16)
    blens.write(np.array([kv_len, n_q], np.int32))
    bout = mem.alloc(n_q * n_head * hd * 4)
    po_b, pm_b = fa.partial_nbytes(kp, n_q, n_head, kv_len)
    po, pm = mem.alloc(po_b), mem.alloc(pm_b)
    try:
        def rec_fn(passes):
            def f(rec, i):
                j = i % layers.n
                fa.dispatch(rec, kp, kr, bq, layers.k[j], layers.v[j], bpos, blens, bout, po,
                            pm, n_q_max=n_q, n_head=n_head, n_head_kv=n_kv, kv_len_max=kv_len,
                            passes=passes)
            return f

        ns = _timed(device, rec_fn("all"), args.reps)
        ns_main = _timed(device, rec_fn("main"), args.reps)
    finally:
        for b in (bq, bpos, blens, bout, po, pm):
            b.free()
    kv_bytes = 2 * layers.cache_bytes
    gbps = kv_bytes / ns
    chunks = -(-kv_len // fa.chunk_size(kp.spec, kv_len))  # spans of a split dispatch
    wgs = chunks * -(-(n_q * n_head // n_kv) // kp.spec["BR"]) * n_kv
    row = {"section": "decode", "shape": shape, "model": label, "n_head": n_head,
           "n_head_kv": n_kv, "head_dim": hd, "kv_type": kv_type, "kv_len": kv_len,
           "n_q": n_q, "variant": kp.variant,
           "spec": {k: v for k, v in kp.spec.items()}, "chunks": chunks, "workgroups": wgs,
           "layers": layers.n, "us": ns / 1e3, "us_main": ns_main / 1e3, "kv_bytes": kv_bytes,
           "gbps": gbps, "frac_stream": gbps / bw,
           "partial_bytes": po_b + pm_b}
    s = kp.spec
    log(f"{shape} {kv_type:5s} kv={kv_len:6d} q={n_q:2d} {_spec_str(s)}: "
        f"{ns / 1e3:9.2f} us "
        f"(main {ns_main / 1e3:8.2f})  {gbps:8.1f} GB/s  {100 * gbps / bw:5.1f}%")
    return row


def _spec_str(s) -> str:
    return (f"WG {s['WG']} BR {s['BR']} BC {s['BC']} DL {s['DL']} VE {s['VE']} "
            f"CH {s['CHUNK']}-{s['CHUNK_MAX']}/{s['NCHUNK']}")


def bench_prefill(device, rng, args, rows_out):
    fixed = {k: v[0] for k, v in _parse_kv(args.spec).items()}
    for shape in args.shapes.split(","):
        label, n_head, n_kv, hd = SHAPES[shape]
        for kv_type in args.types.split(","):
            for n_q in (int(x) for x in args.prefill.split(",")):
                for kv_len in (int(x) for x in args.prefill_kv.split(",")):
                    if kv_len < n_q:
                        continue
                    try:
                        kp, _ = fa.pipelines(device, hd, kv_type, split=False,
                                             group=n_head // n_kv,
                                             rows=n_q * n_head // n_kv, **fixed)
                    except ContractError as e:
                        log(f"  skip prefill {fixed}: {e}")
                        continue
                    rows_out.append(_prefill_one(device, rng, args, label, shape, n_head, n_kv,
                                                 hd, kv_type, kv_len, n_q, kp))


def _prefill_one(device, rng, args, label, shape, n_head, n_kv, hd, kv_type, kv_len, n_q, kp):
    mem = device.memory
    layers = Layers(device, rng, kv_type, kv_len, n_kv, hd, 0)
    bq = mem.alloc(n_q * n_head * hd * 4)
    bq.write(rng.standard_normal((n_q, n_head, hd), dtype=np.float32))
    pos = np.arange(kv_len - n_q, kv_len, dtype=np.int32)
    bpos = mem.alloc(4 * n_q)
    bpos.write(pos)
    blens = mem.alloc(16)
    blens.write(np.array([kv_len, n_q], np.int32))
    bout = mem.alloc(n_q * n_head * hd * 4)
    reps = max(2, args.reps // 10)
    try:
        ns = _timed(device, lambda rec, i: fa.dispatch(
            rec, kp, None, bq, layers.k[0], layers.v[0], bpos, blens, bout, n_q_max=n_q,
            n_head=n_head, n_head_kv=n_kv, kv_len_max=kv_len), reps)
    finally:
        for b in (bq, bpos, blens, bout):
            b.free()
        layers.free()
    flops = 4.0 * hd * n_head * float((pos + 1).sum())  # QK^T and PV over the causal triangle
    s = kp.spec
    log(f"prefill {shape} {kv_type:5s} T={n_q} kv={kv_len} {_spec_str(s)}: "
        f"{ns / 1e3:10.1f} us  {flops / ns / 1e3:7.2f} TFLOP/s")
    return {"section": "prefill", "shape": shape, "model": label, "n_head": n_head,
            "n_head_kv": n_kv, "head_dim": hd, "kv_type": kv_type, "kv_len": kv_len,
            "n_q": n_q, "variant": kp.variant, "spec": dict(kp.spec), "us": ns / 1e3,
            "tflops": flops / ns / 1e3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default=None, help="index or name substring (VKINFER_DEVICE)")
    ap.add_argument("--shapes", default="27b,35b", help=f"comma list of {list(SHAPES)}")
    ap.add_argument("--kv", default="512,4096,32768", help="decode KV lengths")
    ap.add_argument("--tokens", default="1,4", help="decode/verify query token counts")
    ap.add_argument("--types", default="f16,q8_0", help="cache types")
    ap.add_argument("--spec", action="append", help="fixed spec overrides, e.g. CHUNK=512")
    ap.add_argument("--sweep", action="append",
                    help="decode spec sweep, e.g. CHUNK=128,256,512 (repeat for a product)")
    ap.add_argument("--sweep-only", default="",
                    help="comma list of SHAPE/TYPE/TOKENS decode cases the sweep applies to")
    ap.add_argument("--prefill", default="512", help="prefill chunk sizes (\"\" to skip)")
    ap.add_argument("--prefill-kv", default="512,4096", help="KV lengths for prefill")
    ap.add_argument("--reps", type=int, default=50, help="calls per timed command buffer")
    ap.add_argument("--repeat", type=int, default=3,
                    help="timed command buffers per measurement; the fastest is reported")
    ap.add_argument("--working-set-mib", type=int, default=512,
                    help="KV bytes cycled through per timing (defeats the GPU's L2)")
    ap.add_argument("--stream-gbps", type=float, default=0.0)
    ap.add_argument("--json", default="", help="write every measurement here")
    args = ap.parse_args(argv)
    global REPEAT
    REPEAT = max(1, args.repeat)

    device = get_device(args.device)
    info = device.info
    log(f"device: {info.name} ({info.type}), subgroup {info.subgroup_size}, "
        f"ops {info.subgroup_ops}")
    bw, bw_src = stream_gbps(device, args)
    log(f"stream bandwidth {bw:.1f} GB/s from {bw_src}")
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    t0 = time.time()
    bench_decode(device, rng, args, bw, rows)
    if args.prefill:
        bench_prefill(device, rng, args, rows)
    log(f"done in {time.time() - t0:.1f} s")

    print(f"# Attention on {info.name}\n")
    print("## Flash attention, decode / verify (split-K + reduce)\n")
    print(f"Stream bandwidth {bw:.1f} GB/s ({bw_src}). µs per call (main + reduce pass, "
          f"{args.reps} calls back to back, cycling through distinct caches); KV bytes = "
          "K and V rows of kv_len positions, all KV heads; GB/s = KV bytes / time.\n")
    print("| model | cache | kv_len | tokens | µs/call | main µs | KV MB | GB/s | % stream "
          "| spans | WGs | spec |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in (r for r in rows if r["section"] == "decode"):
        s = r["spec"]
        spec = _spec_str(s)
        print(f"| {r['model']} ({r['n_head']}/{r['n_head_kv']}/{r['head_dim']}) | "
              f"{r['kv_type']} | {r['kv_len']} | {r['n_q']} | {r['us']:.2f} | "
              f"{r['us_main']:.2f} | {r['kv_bytes'] / 1e6:.2f} | {r['gbps']:.1f} | "
              f"{100 * r['frac_stream']:.1f} | {r['chunks']} | {r['workgroups']} | {spec} |")
    pre = [r for r in rows if r["section"] == "prefill"]
    if pre:
        print("\n## Flash attention, prefill (one pass, causal)\n")
        print("| model | cache | tokens | kv_len | µs | TFLOP/s | spec |")
        print("|---|---|---|---|---|---|---|")
        for r in pre:
            s = r["spec"]
            print(f"| {r['model']} | {r['kv_type']} | {r['n_q']} | {r['kv_len']} | "
                  f"{r['us']:.1f} | {r['tflops']:.2f} | {_spec_str(s)} |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"device": info.name, "driver": info.driver_info, "stream_gbps": bw,
             "stream_source": bw_src, "reps": args.reps, "rows": rows}, indent=1))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
