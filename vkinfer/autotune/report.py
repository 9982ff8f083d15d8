"""What `vkinfer tune` shows: a progress bar on stderr while it runs, a table of tuned vs
default time per kernel and shape class on stdout at the end, and (with matplotlib, the `plot`
extra) one PNG per kernel of time or GB/s against each swept constant."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path


class Progress:
    """A one-line progress bar (candidates done / total, elapsed vs budget, current candidate).
    On a terminal it redraws in place; otherwise it prints a line every few seconds."""

    def __init__(self, stream=None, width: int = 24, interval_s: float = 5.0):
        self.stream = stream or sys.stderr
        self.width, self.interval_s = width, interval_s
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = self.done = 0
        self.budget_s = None
        self.clock, self.t0 = time.monotonic, 0.0
        self.text = ""
        self._last = -1e9
        self._drawn = 0

    def start(self, total: int, budget_s=None, clock=time.monotonic, t0=None):
        self.total, self.done, self.budget_s = max(total, 0), 0, budget_s
        self.clock = clock
        self.t0 = clock() if t0 is None else t0
        if self.total:
            self._draw(force=True)

    def label(self, text: str):
        self.text = text
        self._draw()

    def advance(self, text: str = "", n: int = 1):
        self.done += n
        if text:
            self.text = text
        self._draw(force=self.done >= self.total)

    def line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        fill = round(frac * self.width)
        bar = "#" * fill + "-" * (self.width - fill)
        el = self.clock() - self.t0
        tail = f"{el:.0f}s" + (f"/{self.budget_s:.0f}s" if self.budget_s else "")
        return f"tune [{bar}] {self.done}/{self.total} {tail}  {self.text}"

    def _draw(self, force: bool = False):
        if not self.total:
            return
        now = time.monotonic()
        if not self.tty and not force and now - self._last < self.interval_s:
            return
        self._last = now
        s = self.line()
        if self.tty:
            s = s[:max(20, _columns() - 1)]
            pad = " " * max(0, self._drawn - len(s))
            self.stream.write("\r" + s + pad)
            self._drawn = len(s)
        else:
            self.stream.write(s + "\n")
        self.stream.flush()

    def finish(self):
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = 0


def _columns() -> int:
    import shutil

    return shutil.get_terminal_size((100, 20)).columns


def _fmt_ns(ns) -> str:
    if ns is None:
        return "-"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def _fmt_spec(spec: dict, default: dict | None = None) -> str:
    if not spec:
        return "(defaults)"
    parts = []
    for k, v in spec.items():
        mark = "*" if default is not None and default.get(k) != v else ""
        parts.append(f"{k}={v}{mark}")
    return " ".join(parts)


def format_table(report) -> str:
    """Markdown table: kernel, variant, shape class, default and tuned time, speedup, GB/s,
    chosen values (* = differs from the default), rejected candidates, status."""
    head = ["kernel", "variant", "shape class", "default", "tuned", "speedup", "GB/s",
            "chosen", "rejected", "status"]
    best_in_group = {}
    for u in report.units:
        if u.group and u.chosen_ns is not None:
            b = best_in_group.get(u.group)
            if b is None or u.chosen_ns < b.chosen_ns:
                best_in_group[u.group] = u
    rows = []
    for u in report.units:
        gbps = f"{u.bytes / u.chosen_ns:.1f}" if u.bytes and u.chosen_ns else "-"
        sp = f"{u.speedup:.2f}x" if u.speedup else "-"
        rej = u.rejected
        kinds = {}
        for r in rej:
            kinds[r.get("status")] = kinds.get(r.get("status"), 0) + 1
        rj = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) if rej else "0"
        status = u.status + (f" ({u.note})" if u.note and u.status != "cached" else "")
        if u.group and best_in_group.get(u.group) is u:
            status += ", best variant"
        rows.append([u.kernel, u.variant, u.shape_class, _fmt_ns(u.default_ns),
                     _fmt_ns(u.chosen_ns), sp, gbps,
                     _fmt_spec(u.chosen_spec, u.default_spec) if u.chosen_ns else "-", rj,
                     status])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(out)


def format_rejections(report, limit: int = 20) -> str:
    """Wrong or failed candidates, one line per unit and message (contract rejections are only
    counted in the table)."""
    lines = []
    for u in report.units:
        groups: dict = {}
        for r in u.rejected:
            if r.get("status") in ("wrong", "error"):
                msg = (r.get("msg") or "").strip().splitlines()
                groups.setdefault((r["status"], msg[0] if msg else ""), []).append(r)
        for (status, msg), rs in groups.items():
            who = _fmt_spec(rs[0].get("spec", {})) if len(rs) == 1 else f"{len(rs)} candidates"
            lines.append(f"  {u.kernel}/{u.variant} {u.shape_class} {who}: {status}: {msg}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"  ... and {len(lines) - limit} more"]
    return "\n".join(lines)


def summary(report) -> str:
    n = {s: len(report.by_status(s)) for s in ("tuned", "cached", "failed", "skipped",
                                               "incomplete", "pending")}
    parts = [f"{v} {k}" for k, v in n.items() if v]
    s = f"{report.device}: " + ", ".join(parts or ["nothing to tune"]) + \
        f" in {report.elapsed_s:.1f}s ({report.timer})"
    if report.stopped == "budget":
        s += f"; budget of {report.budget_s:g}s spent, run again to resume"
    elif report.stopped == "interrupted":
        s += "; interrupted, run again to resume"
    return s


# --- plots -----------------------------------------------------------------------------------

def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


PLOT_NEEDS = ("--plot needs matplotlib, which is not installed: "
              "pip install 'vkinfer[plot]' (or pip install matplotlib)")


def plot(report, out_dir) -> list[Path]:
    """One PNG per kernel: for each swept constant a panel of time (GB/s when the case knows its
    bytes) against the constant's value, best over the other constants, one line per
    (variant, shape class); the chosen value is marked. Returns the files written."""
    if not have_matplotlib():
        raise RuntimeError(PLOT_NEEDS)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_kernel: dict[str, list] = {}
    for u in report.units:
        if any(r.get("status") == "ok" for r in u.results) and u.names:
            by_kernel.setdefault(u.kernel, []).append(u)
    written = []
    for kname, units in sorted(by_kernel.items()):
        names = []
        for u in units:
            names += [n for n in u.names if n not in names]
        fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
        for ax, name in zip(axes[0], names):
            for u in units:
                pts: dict = {}
                for r in u.results:
                    if r.get("status") != "ok" or name not in r.get("spec", {}):
                        continue
                    x = r["spec"][name]
                    pts[x] = min(pts.get(x, float("inf")), r["ns"])
                if not pts:
                    continue
                xs = sorted(pts, key=lambda v: (isinstance(v, str), v))
                gb = bool(u.bytes)
                ys = [u.bytes / pts[x] if gb else pts[x] / 1e3 for x in xs]
                lab = f"{u.variant} {u.shape_class}" if len(units) > 1 else u.shape_class
                line, = ax.plot([str(x) for x in xs], ys, marker="o", label=lab)
                if u.chosen_spec.get(name) in pts:
                    cx = u.chosen_spec[name]
                    ax.plot([str(cx)], [u.bytes / pts[cx] if gb else pts[cx] / 1e3], marker="*",
                            markersize=14, color=line.get_color())
            ax.set_xlabel(name)
            ax.set_ylabel("GB/s (best over other constants)" if units[0].bytes
                          else "µs per dispatch (best over other constants)")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
        fig.suptitle(f"{kname} on {report.device} (* = chosen)")
        fig.tight_layout()
        p = out_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', kname)}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written
