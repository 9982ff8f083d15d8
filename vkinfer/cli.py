"""The `vkinfer` command line: llama.cpp-style subcommands and flag names where they exist.

Implemented: `devices` (device report), `tune` (kernel autotuning, vkinfer/autotune). Results
go to stdout, progress and errors to stderr; a VkinferError exits with status 2 and its message.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import VkinferError


def _fmt_bytes(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def cmd_devices(args) -> int:
    from .vk.device import select_device
    from .vk.instance import list_devices

    devs = list_devices()
    if not devs:
        print("no Vulkan device with a compute queue found; install a driver (CPU fallback on "
              "Debian/Ubuntu: apt-get install mesa-vulkan-drivers)", file=sys.stderr)
        return 1
    chosen = select_device().index
    if args.json:
        print(json.dumps([d.report() for d in devs], indent=1))
        return 0
    for d in devs:
        mark = "*" if d.index == chosen else " "
        heaps = ", ".join(f"{_fmt_bytes(h['size_bytes'])}{' local' if h['device_local'] else ''}"
                          for h in d.heaps)
        print(f"{mark} {d.index}: {d.name} [{d.type}] vendor 0x{d.vendor_id:04x}, "
              f"Vulkan {d.api_version}, driver {d.driver_name} {d.driver_info}")
        print(f"     subgroup {d.subgroup_size} ({d.min_subgroup_size}-{d.max_subgroup_size}): "
              f"{', '.join(d.subgroup_ops)}; clustered={d.clustered_subgroup}")
        print(f"     fp16={d.fp16} int8={d.int8} int_dot={d.int_dot} coopmat={d.coopmat} "
              f"uma={d.uma} rebar={d.rebar} external_memory_host={d.external_memory_host} "
              f"memory_budget={d.memory_budget}")
        print(f"     heaps: {heaps}; maxStorageBufferRange {_fmt_bytes(d.max_storage_buffer_range)}"
              f"; shared memory {d.max_compute_shared_memory // 1024} KiB")
    print("(* = the device vkinfer uses; choose another with VKINFER_DEVICE=index|name)")
    return 0


def cmd_tune(args) -> int:
    from .autotune import report
    from .autotune.engine import tune
    from .vk.device import Device, get_device, select_device

    if args.plot and not report.have_matplotlib():
        print(f"vkinfer tune: {report.PLOT_NEEDS}", file=sys.stderr)
        return 2
    if args.device is None:
        dev = get_device()
    else:
        info = select_device(args.device)
        dev = get_device()
        if dev.info.index != info.index:
            dev = Device(info)
    kernels = [p for x in args.kernel or [] for p in x.split(",") if p] or None
    classes = [p for x in args.shape_class or [] for p in x.split(",") if p] or None
    prog = None if args.quiet else report.Progress()
    rep = tune(dev, kernels=kernels, shape_classes=classes, budget_s=args.budget_s,
               fresh=args.fresh, progress=prog)
    if not rep.units:
        print(f"vkinfer tune: no cases match --kernel {args.kernel} --shape-class "
              f"{args.shape_class}", file=sys.stderr)
        for n in rep.notes:
            print(f"  {n}", file=sys.stderr)
        return 1
    print(report.format_table(rep))
    rej = report.format_rejections(rep)
    if rej:
        print("rejected candidates (never chosen):", file=sys.stderr)
        print(rej, file=sys.stderr)
    for n in rep.notes:
        print(f"note: {n}", file=sys.stderr)
    print(report.summary(rep), file=sys.stderr)
    if args.plot:
        for p in report.plot(rep, args.plot):
            print(f"wrote {p}", file=sys.stderr)
    return 130 if rep.stopped == "interrupted" else 0


def _add_tune_parser(sub):
    p = sub.add_parser("tune", help="autotune kernel specialization constants for this device",
                       description="Sweep each kernel's specialization constants per shape "
                       "class, check every candidate against its reference, time the correct "
                       "ones and store the fastest in the tuning database. An interrupted run "
                       "resumes where it stopped.")
    p.add_argument("--kernel", action="append", metavar="NAME",
                   help="kernel family or kernel name (comma-separated, globs; repeatable)")
    p.add_argument("--budget-s", type=float, default=None, metavar="S",
                   help="wall-time budget: no new candidate starts once it is spent")
    p.add_argument("--device", default=None, metavar="D",
                   help="device index or name substring (default: $VKINFER_DEVICE or the best)")
    p.add_argument("--shape-class", action="append", metavar="C",
                   help="only these shape classes (comma-separated, globs; repeatable)")
    p.add_argument("--plot", default=None, metavar="DIR",
                   help="write a PNG per kernel to DIR (needs matplotlib: vkinfer[plot])")
    p.add_argument("--fresh", action="store_true",
                   help="ignore earlier results and the resume file; tune everything again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_tune)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vkinfer", description="LLM inference on Vulkan")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("devices", help="list Vulkan devices and their capabilities")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(fn=cmd_devices)
    _add_tune_parser(sub)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except VkinferError as e:
        print(f"vkinfer: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vkinfer: interrupted", file=sys.stderr)
        return 130
