#!/usr/bin/env python3
"""Benchmark shaders/mul_mat_id.comp, the MoE expert matvec, at the Qwen3.6-35B-A3B shape
(shared/reference/shapes.md: 256 experts, 8 routed per token, hidden 2048, expert FFN 512):
gate/up (rows 512, K 2048, input shared by the slots) and down (rows 2048, K 512, one input per
slot, with the fused routing-weighted sum), for T = 1..8 tokens (decode and MTP verify) and
optional prefill token counts (`--prefill 128,512`), in two modes (`--modes`):
  direct    the decode kernel: a workgroup set per (token, slot), each reading its expert's rows
            (down: the fused WEIGHTED epilogue)
  grouped   moe_route's GROUP work list, then each expert's rows read once per `--cols` of the
            (token, slot) pairs that chose it (down: + the combine pass); the time includes the
            work-list dispatch (a model builds it once per layer for its three projections)

Routing: every timed dispatch uses a different routing (ids/weights at their own offset), drawn
so that each token picks k distinct experts and, with probability `--overlap`, reuses one of the
previous token's experts (neighbouring tokens share experts in real models); `--routings`
routings cycle, so the experts read are not the same few megabytes every time.

Measured between two GPU timestamps (vkinfer.vk.commands.TimestampPool) around `--reps`
dispatches in one command buffer, after a warm-up submit, in two forms:
  serial         a barrier after each dispatch (as between dependent layers of a decode step)
  back-to-back   no barriers (each dispatch writes its own output): throughput; direct mode only
Bytes: "distinct" = bytes of the distinct experts the tokens selected, the least any kernel must
read (the roofline's numerator); "fetched" = expert matrices the kernel reads (direct: T·k,
an expert picked by several tokens is re-read, the cache may absorb that; grouped: one per work
item). GB/s are unique bytes / time, as a fraction
of a stream-read bandwidth: `--stream-gbps`, else tools/bench_device.py's
measure_stream_bandwidth(dev). Markdown on stdout, progress on stderr.

    python tools/bench_moe.py [--types q4_k,q6_k,q8_0] [--tokens 1,2,4,8] [--prefill 512]
                              [--modes direct,grouped] [--reps 64] [--experts 256]
                              [--stream-gbps G] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vkinfer.gguf import quants
from vkinfer.pipelines import moe_route
from vkinfer.pipelines import mul_mat_id as km
from vkinfer.vk.device import get_device

from benchlib import gpu_time_ns, log, stream_gbps  # noqa: E402
from vkinfer.vk.memory import align_up

# Qwen3.6-35B-A3B (shared/reference/shapes.md)
HIDDEN, EXPERT_FF, N_EXPERT, K_USED = 2048, 512, 256, 8


def routings(rng, n: int, T: int, k: int, n_expert: int, overlap: float) -> np.ndarray:
    """int32 [n, T, k]: k distinct experts per token; each slot reuses one of the previous
    token's experts with probability `overlap`."""
    out = np.empty((n, T, k), np.int32)
    everyone = np.arange(n_expert)
    for r in range(n):
        prev = np.empty(0, np.int64)
        for t in range(T):
            n_reuse = min(int(rng.binomial(k, overlap)), prev.size)
            reuse = rng.choice(prev, n_reuse, replace=False) if n_reuse else prev[:0]
            fresh = rng.choice(np.setdiff1d(everyone, reuse), k - n_reuse, replace=False)
            chosen = rng.permutation(np.concatenate([reuse, fresh]))
            out[r, t] = chosen
            prev = chosen
    return out


def timed(dev, record, reps: int, repeat: int = 3) -> float:
    """Median GPU ns per dispatch of `record(rec, i)` for i < reps."""
    return gpu_time_ns(dev, record, reps, repeat=repeat, warmup_reps=1)


class Experts:
    """One expert tensor [n_expert, rows, K] of a type, random blocks with sane scales."""

    def __init__(self, dev, rng, w_type, rows, K, n_expert):
        self.w_type, self.rows, self.K, self.n_expert = w_type, rows, K, n_expert
        self.expert_bytes = km.expert_stride(w_type, rows, K)
        self.w = dev.memory.alloc(n_expert * self.expert_bytes + 16)
        for e in range(n_expert):  # expert by expert: no huge temporary
            self.w.write(quants.random_blocks(w_type, rows, K, rng), e * self.expert_bytes)

    def free(self):
        self.w.free()


class Run:
    """Inputs, routings and outputs of T tokens over an expert tensor."""

    def __init__(self, dev, rng, ex: Experts, k, ids, per_slot, weighted, grouped=False, cols=8):
        self.dev, self.ex, self.k, self.ids = dev, ex, k, ids  # ids [n, T, k]
        self.T = T = ids.shape[1]
        self.per_slot, self.weighted = per_slot, weighted
        self.grouped, self.cols = grouped, cols
        self.bufs = []
        xshape = (T, k, ex.K) if per_slot else (T, ex.K)
        self.x = self._alloc(4 * int(np.prod(xshape)))
        self.x.write(rng.standard_normal(xshape).astype(np.float32))
        n = ids.shape[0]
        align = max(16, dev.info.min_storage_buffer_offset_alignment)
        self.rstride = align_up(4 * T * k, align)
        self.ids_buf = self._alloc(n * self.rstride)
        self.wts_buf = self._alloc(n * self.rstride)
        for r in range(n):
            self.ids_buf.write(ids[r], r * self.rstride)
            self.wts_buf.write(np.full(T * k, 1.0 / k, np.float32), r * self.rstride)
        self.ysize = 4 * T * ex.rows * (1 if weighted else k)
        self.ystride = align_up(self.ysize, align)
        self.y = self._alloc(n * self.ystride)
        if grouped:  # a work list per routing, and per-slot results for the combine pass
            words = moe_route.group_layout(T, k, ex.n_expert, cols)[2]
            self.gsize = 4 * words
            self.gstride = align_up(self.gsize, align)
            self.groups = self._alloc(n * self.gstride)
            self.yssize = 4 * T * k * ex.rows
            self.ys = self._alloc(self.yssize) if weighted else None

    def _alloc(self, n):
        b = self.dev.memory.alloc(n)
        self.bufs.append(b)
        return b

    def unique_bytes(self, r: int) -> int:
        return len(np.unique(self.ids[r])) * self.ex.expert_bytes

    def fetched_bytes(self, r: int) -> int:
        if not self.grouped:
            return self.ids[r].size * self.ex.expert_bytes
        counts = np.bincount(self.ids[r].reshape(-1), minlength=self.ex.n_expert)
        return int((-(-counts // self.cols)).sum()) * self.ex.expert_bytes

    def recorder(self, kp, serial: bool, kgroup=None, kcombine=None):
        n, ex = self.ids.shape[0], self.ex

        def record(rec, i):
            r = i % n
            ids = self.ids_buf.range(r * self.rstride, 4 * self.T * self.k)
            wts = self.wts_buf.range(r * self.rstride, 4 * self.T * self.k)
            y = self.y.range(r * self.ystride, self.ysize)
            if self.grouped:
                g = self.groups.range(r * self.gstride, self.gsize)
                moe_route.dispatch_group(rec, kgroup, ids, g, ex.n_expert, self.k, self.T)
                out = self.ys if self.weighted else y
                km.dispatch_grouped(
                    rec,
                    kp,
                    ex.w,
                    self.x,
                    g,
                    out,
                    w_type=ex.w_type,
                    rows=ex.rows,
                    K=ex.K,
                    n_expert=ex.n_expert,
                    n_slots=self.k,
                    tokens=self.T,
                    per_slot_input=self.per_slot,
                )
                if self.weighted:
                    km.dispatch_combine(
                        rec, kcombine, self.ys, wts, y, rows=ex.rows, n_slots=self.k, tokens=self.T
                    )
                if serial:
                    rec.barrier()
                return
            km.dispatch(
                rec,
                kp,
                ex.w,
                self.x,
                ids,
                y,
                w_type=ex.w_type,
                rows=ex.rows,
                K=ex.K,
                n_expert=ex.n_expert,
                n_slots=self.k,
                tokens=self.T,
                weights=wts if self.weighted else None,
                per_slot_input=self.per_slot,
            )
            if serial:
                rec.barrier()

        return record

    def free(self):
        for b in self.bufs:
            b.free()


def measure(dev, args, ex, pname, T, ids, per_slot, weighted, mode, spec, sgbps):
    """One (type, projection, T, mode) row."""
    grouped = mode == "grouped"
    cols = args.cols
    kp = km.pipeline(
        dev,
        ex.w_type,
        weighted=weighted and not grouped,
        grouped=grouped,
        cols=cols,
        rows=ex.rows,
        K=ex.K,
        n_slots=args.k,
        reduce=args.reduce,
        **spec,
    )
    kg = moe_route.group_pipeline(dev, cols) if grouped else None
    kc = km.combine_pipeline(dev) if grouped and weighted else None
    n = ids.shape[0]
    reps = args.reps if T <= 8 else max(2, args.reps // 8)
    run = Run(
        dev, np.random.default_rng(args.seed), ex, args.k, ids, per_slot, weighted, grouped, cols
    )
    try:
        ns_serial = timed(dev, run.recorder(kp, True, kg, kc), reps)
        # Grouped work is a chain of dependent dispatches: only the serial form is meaningful.
        ns_b2b = None if grouped else timed(dev, run.recorder(kp, False), reps)
        uniq = float(np.mean([run.unique_bytes(i % n) for i in range(reps)]))
        fetched = float(np.mean([run.fetched_bytes(i % n) for i in range(reps)]))
    finally:
        run.free()
    r = {
        "type": args_type_name(ex.w_type),
        "proj": pname,
        "T": T,
        "mode": mode,
        "rows": ex.rows,
        "K": ex.K,
        "experts_unique": uniq / ex.expert_bytes,
        "unique_bytes": uniq,
        "variant": kp.variant,
        "spec": kp.spec,
        "fetched_bytes": fetched,
        "us_serial": ns_serial / 1e3,
        "gbps_serial": uniq / ns_serial,
        "us_b2b": None if ns_b2b is None else ns_b2b / 1e3,
        "gbps_b2b": None if ns_b2b is None else uniq / ns_b2b,
        "stream_gbps": sgbps,
    }
    if sgbps:
        r["frac_serial"] = r["gbps_serial"] / sgbps
        if ns_b2b is not None:
            r["frac_b2b"] = r["gbps_b2b"] / sgbps
    return r


def args_type_name(t) -> str:
    return quants.type_info(t).name.lower()


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--types", default="q4_k,q6_k,q8_0")
    ap.add_argument("--tokens", default="1,2,3,4,5,6,7,8", help="token counts T (decode, verify)")
    ap.add_argument("--prefill", default="512", help="prefill token counts ('' for none)")
    ap.add_argument(
        "--modes",
        default="direct,grouped",
        help="direct (one workgroup set per token and slot), grouped (work list)",
    )
    ap.add_argument("--cols", type=int, default=8, help="grouped: pairs per work item")
    ap.add_argument("--experts", type=int, default=N_EXPERT)
    ap.add_argument("--k", type=int, default=K_USED, help="experts per token")
    ap.add_argument("--proj", default="gate_up,down", help="gate_up (shared x), down (weighted)")
    ap.add_argument("--reps", type=int, default=64, help="dispatches per timed command buffer")
    ap.add_argument("--routings", type=int, default=64, help="distinct routings cycled")
    ap.add_argument(
        "--overlap",
        type=float,
        default=0.25,
        help="probability a slot reuses one of the previous token's experts",
    )
    ap.add_argument("--reduce", default=None, choices=(None, "subgroup", "shmem"))
    ap.add_argument("--spec", default="", help="spec overrides, e.g. WG=128,NR=2,UNROLL=2")
    ap.add_argument("--stream-gbps", type=float, default=None)
    ap.add_argument("--stream-mib", type=int, default=1024, help="stream probe size (MiB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    dev = get_device()
    log(f"device: {dev.info.name} ({dev.info.type})")
    sgbps, ssrc = stream_gbps(dev, args)
    if sgbps:
        log(f"stream bandwidth {sgbps:.1f} GB/s ({ssrc})")
    spec = {kv.split("=")[0]: int(kv.split("=")[1]) for kv in args.spec.split(",") if kv}
    rng = np.random.default_rng(args.seed)
    tokens = [int(t) for t in args.tokens.split(",") if t]
    tokens += [int(t) for t in args.prefill.split(",") if t]
    modes = [m for m in args.modes.split(",") if m]
    projs = {"gate_up": (EXPERT_FF, HIDDEN, False, False), "down": (HIDDEN, EXPERT_FF, True, True)}
    rows_out = []
    for tname in args.types.split(","):
        w_type = quants.parse_type(tname, supported_only=True)
        for pname in args.proj.split(","):
            rows, K, per_slot, weighted = projs[pname]
            log(
                f"{tname} {pname}: {args.experts} experts × {rows}×{K} "
                f"({args.experts * km.expert_stride(w_type, rows, K) / 2**20:.0f} MiB)"
            )
            ex = Experts(dev, rng, w_type, rows, K, args.experts)
            try:
                for T in tokens:
                    n = args.routings if T <= 8 else min(args.routings, 4)
                    ids = routings(rng, n, T, args.k, args.experts, args.overlap)
                    for mode in modes:
                        r = measure(
                            dev, args, ex, pname, T, ids, per_slot, weighted, mode, spec, sgbps
                        )
                        rows_out.append(r)
                        b2b = (
                            f"; {r['us_b2b']:.1f} µs back-to-back, {r['gbps_b2b']:.1f} GB/s"
                            if r["us_b2b"] is not None
                            else ""
                        )
                        log(
                            f"  T={T} {mode}: {r['us_serial']:.1f} µs serial, "
                            f"{r['gbps_serial']:.1f} GB/s{b2b}"
                        )
            finally:
                ex.free()

    def pct(r, key):
        return f"{100 * r[key]:.0f}%" if key in r else "–"

    def num(v, fmt):
        return "–" if v is None else format(v, fmt)

    print(
        f"## mul_mat_id on {dev.info.name}: Qwen3.6-35B-A3B expert shapes, {args.experts} "
        f"experts, {args.k} per token"
    )
    print()
    print(
        f"Stream bandwidth: {f'{sgbps:.1f} GB/s' if sgbps else 'unknown'} ({ssrc}). GB/s = "
        "bytes of the distinct selected experts / time. direct: each (token, slot) reads its "
        "expert (WEIGHTED epilogue for down); grouped: work list + each expert read once per "
        f"{args.cols} pairs (+ combine pass for down), serial only."
    )
    print()
    print(
        "| type | proj | T | mode | distinct experts | MiB distinct | MiB fetched | µs serial | "
        "GB/s | of stream | µs back-to-back | GB/s | of stream |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows_out:
        print(
            f"| {r['type']} | {r['proj']} | {r['T']} | {r['mode']} | "
            f"{r['experts_unique']:.1f} | {r['unique_bytes'] / 2**20:.2f} | "
            f"{r['fetched_bytes'] / 2**20:.2f} | {r['us_serial']:.1f} | {r['gbps_serial']:.1f} | {pct(r, 'frac_serial')} | "
            f"{num(r['us_b2b'], '.1f')} | {num(r['gbps_b2b'], '.1f')} | {pct(r, 'frac_b2b')} |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "device": dev.info.name,
                    "stream_gbps": sgbps,
                    "stream_source": ssrc,
                    "args": vars(args),
                    "results": rows_out,
                },
                indent=1,
                default=str,
            )
        )
    return rows_out


if __name__ == "__main__":
    main()
