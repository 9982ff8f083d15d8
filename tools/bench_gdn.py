#!/usr/bin/env python3
"""Benchmark shaders/gated_delta_net.comp: per-layer GDN time for decode (T=1) and MTP verify
(T=2..8) at real model shapes, sweeping lanes_per_column and workgroup size over every value
the kernel's contract accepts, for each reduction variant the device supports.

Each measurement records `--reps` dependent dispatches (the recorder puts a barrier between
them, as between layers) in one command buffer between two GPU timestamps, after a warm-up
submit. Reported: µs per dispatch (= per layer) and the state traffic in GB/s — one plane read
plus the planes written (the final state and the snapshots; with snapshots >= T the final state
is the last snapshot) of S²·H_v·4 bytes each — as a fraction of a stream bandwidth:
`--stream-gbps`, else tools/bench_device.py's measurement if that file exists, else a
vkCmdCopyBuffer measurement made here. Markdown on stdout, progress on stderr.

    python tools/bench_gdn.py [--shapes 27b,35b] [--tokens 1,2,4,8] [--configs all|default]
                              [--variants shuffle,shmem] [--reps 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vkinfer.pipelines import gated_delta_net as kg
from vkinfer.vk.device import get_device

from benchlib import gpu_time_ns, log, stream_gbps  # noqa: E402

# (name, H_v, H_k, S) from shared/reference/shapes.md
SHAPES = {"27b": ("Qwen3.6-27B", 48, 16, 128), "35b": ("Qwen3.6-35B-A3B", 32, 16, 128)}


def _timed(device, record, reps: int) -> float:
    return gpu_time_ns(device, lambda rec, i: record(rec), reps)


class Setup:
    """Device buffers for one shape and token count."""

    def __init__(self, device, H, H_k, S, T, n_snap, rng):
        self.H, self.H_k, self.S, self.T, self.n_snap = H, H_k, S, T, n_snap
        mem = device.memory
        self.plane_bytes = 4 * kg.plane_elems(1, H, S)

        def up(a):
            b = mem.alloc(a.nbytes)
            b.write(a.astype(np.float32))
            return b

        self.q = up(rng.standard_normal((T, H_k, S)))
        self.k = up(rng.standard_normal((T, H_k, S)))
        self.v = up(rng.standard_normal((T, H, S)))
        self.g = up(-rng.uniform(0.01, 1.0, (T, H)))
        self.b = up(rng.uniform(0.05, 1.0, (T, H)))
        self.state = mem.alloc(self.plane_bytes * (1 + n_snap))
        self.state.write((0.1 * rng.standard_normal((H, S, S))).astype(np.float32))
        self.out = mem.alloc(4 * T * H * S)
        self.ctl = mem.alloc(16)
        self.ctl.write(kg.ctl_words(T, [0]))
        self.bufs = [self.q, self.k, self.v, self.g, self.b, self.state, self.out, self.ctl]

    def record(self, kp):
        return lambda rec: kg.dispatch(
            rec, kp, self.q, self.k, self.v, self.g, self.b, self.state, self.out, self.ctl,
            n_seq=1, H=self.H, H_k=self.H_k, seq_rows=self.T, qk_stride=self.H_k * self.S,
            v_stride=self.H * self.S, n_snap=self.n_snap)

    def state_bytes(self) -> int:
        writes = min(self.T, self.n_snap) + (1 if self.T > self.n_snap else 0)
        return self.plane_bytes * (1 + writes)

    def free(self):
        for b in self.bufs:
            b.free()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="27b,35b", help=f"comma list of {list(SHAPES)}")
    ap.add_argument("--tokens", default="1,2,3,4,5,6,7,8", help="token counts T")
    ap.add_argument("--variants", default="", help="comma list (default: all supported)")
    ap.add_argument("--configs", choices=("all", "default"), default="all",
                    help="sweep every valid (WG, LANES) or only each variant's default")
    ap.add_argument("--wg", default="", help="restrict workgroup sizes (comma list)")
    ap.add_argument("--lanes", default="", help="restrict lanes_per_column (comma list)")
    ap.add_argument("--no-snapshots", action="store_true",
                    help="verify (T>1) without snapshot planes (default: T snapshot planes)")
    ap.add_argument("--reps", type=int, default=200, help="dispatches per timed command buffer")
    ap.add_argument("--stream-gbps", type=float, default=0.0)
    ap.add_argument("--copy-mib", type=int, default=256, help="buffer size of the copy test")
    ap.add_argument("--json", default="", help="write every measurement here")
    args = ap.parse_args(argv)

    device = get_device()
    info = device.info
    log(f"device: {info.name} (subgroup {info.subgroup_size}, clustered "
        f"{info.clustered_subgroup}, ops {info.subgroup_ops})")
    bw, bw_src = stream_gbps(device, args)
    log(f"stream bandwidth {bw:.1f} GB/s from {bw_src}")
    supported = kg.KERNEL.supported_variants(info)
    variants = [v for v in (args.variants.split(",") if args.variants else kg.PREFERENCE)
                if v in supported]
    tokens = [int(t) for t in args.tokens.split(",")]
    wgs = tuple(int(x) for x in args.wg.split(",")) if args.wg else None
    lanes = tuple(int(x) for x in args.lanes.split(",")) if args.lanes else None
    rng = np.random.default_rng(0)
    rows = []
    t_start = time.time()
    for shape in args.shapes.split(","):
        label, H, H_k, S = SHAPES[shape]
        default_var, default_spec = kg.choose(info, S)
        for T in tokens:
            n_snap = 0 if (T == 1 or args.no_snapshots) else T
            setup = Setup(device, H, H_k, S, T, n_snap, rng)
            try:
                for var in variants:
                    if args.configs == "default":
                        cfgs = [kg.choose(info, S, var)[1]]
                    else:
                        cfgs = kg.valid_configs(info, var, S, wgs=wgs, lanes=lanes)
                    for cfg in cfgs:
                        kp = kg.KERNEL.pipeline(device, var, **cfg)
                        ns = _timed(device, setup.record(kp), args.reps)
                        gbps = setup.state_bytes() / ns
                        row = {"shape": shape, "model": label, "H_v": H, "H_k": H_k, "S": S,
                               "T": T, "n_snap": n_snap, "variant": var, "WG": cfg["WG"],
                               "LANES": cfg["LANES"], "us": ns / 1e3,
                               "state_bytes": setup.state_bytes(), "state_gbps": gbps,
                               "frac_stream": gbps / bw,
                               "default": var == default_var and cfg == default_spec}
                        rows.append(row)
                        log(f"{shape} T={T} {var:9s} WG={cfg['WG']:3d} LANES={cfg['LANES']:2d}"
                            f"  {ns / 1e3:9.2f} us  {gbps:8.1f} GB/s  {100 * gbps / bw:5.1f}%")
            finally:
                setup.free()
    log(f"done in {time.time() - t_start:.1f} s")

    print(f"# gated_delta_net on {info.name}\n")
    print(f"Stream bandwidth: {bw:.1f} GB/s ({bw_src}). Default choice per head size: "
          f"`{kg.choose(info, 128)}`. State bytes = (1 read + planes written) x S²·H_v·4; "
          f"verify (T>1) writes {'no' if args.no_snapshots else 'T'} snapshot planes. "
          f"Reps per timing: {args.reps}.\n")
    print("## Best configuration per shape and T\n")
    print("| model | T | snaps | variant | WG | LANES | µs/layer | state GB/s | % stream "
          "| default µs | default % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["shape"], r["T"]) for r in rows}, key=lambda x: (x[0], x[1]))
    for key in keys:
        rs = [r for r in rows if (r["shape"], r["T"]) == key]
        b = min(rs, key=lambda r: r["us"])
        d = next((r for r in rs if r["default"]), None)
        dtxt = f"{d['us']:.2f} | {100 * d['frac_stream']:.1f}" if d else "- | -"
        print(f"| {b['model']} | {b['T']} | {b['n_snap']} | {b['variant']} | {b['WG']} | "
              f"{b['LANES']} | {b['us']:.2f} | {b['state_gbps']:.1f} | "
              f"{100 * b['frac_stream']:.1f} | {dtxt} |")
    print("\n## All measurements\n")
    print("| model | T | variant | WG | LANES | µs/layer | state GB/s | % stream |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        mark = " (default)" if r["default"] else ""
        print(f"| {r['model']} | {r['T']} | {r['variant']}{mark} | {r['WG']} | {r['LANES']} | "
              f"{r['us']:.2f} | {r['state_gbps']:.1f} | {100 * r['frac_stream']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"device": info.name, "driver": info.driver_info, "stream_gbps": bw,
             "stream_source": bw_src, "reps": args.reps, "rows": rows}, indent=1))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
