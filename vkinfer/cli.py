"""The `vkinfer` command line: llama.cpp-style subcommands and flag names where they exist.

Implemented: `devices` (device report). Results go to stdout,
progress and errors to stderr; a VkinferError exits with status 2 and its message.
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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vkinfer", description="LLM inference on Vulkan")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("devices", help="list Vulkan devices and their capabilities")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(fn=cmd_devices)
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
