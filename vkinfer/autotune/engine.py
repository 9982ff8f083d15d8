"""The autotuner: for each case (kernel × shape class × variant) sweep the specialization
constants that declare `choices`, check every candidate against the family's numpy reference,
time the correct ones with GPU timestamps, and store the fastest in the tuning database (R7).

A unit of work is one (kernel, variant, shape class). Its candidates are the default values plus
the cartesian product of the swept choices; a candidate whose Kernel contract raises
ContractError is rejected before anything is compiled. Each remaining candidate is built, run
once on a freshly reset check workload and compared with the reference (a wrong candidate is
recorded as rejected and never timed), then timed: warm-up, then the median over `reps` runs,
each run `batch` back-to-back dispatches in one command buffer between two timestamps.

The chosen values are the fastest correct candidate's, unless the default is within `min_gain`
of it (then the default: not worth a change that is inside the noise). Finished units go to
the tuning database at once; candidate results of the unit in progress go to a resume file in
the cache directory after every candidate, so a run stopped by its budget or by Ctrl-C resumes
where it stopped. `fresh=True` ignores both.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import tuning
from ..errors import ContractError, DeviceFeatureError, ShaderCompileError, VkinferError
from ..paths import cache_dir
from ..vk.commands import Recorder, TimestampPool, one_shot
from ..vk.pipeline import evict_pipeline
from ..vk.sync import Fence, submit

MIN_GAIN = 0.02  # a tuned value must beat the default by 2% to replace it
RESUME_VERSION = 1


# --- timing ----------------------------------------------------------------------------------

@dataclass
class Trial:
    """What a timer is asked to measure (a fake timer in tests keys its answer on this)."""

    kernel: object
    variant: str
    shape_class: str
    spec: dict  # the swept values
    full: dict  # every specialization value the pipeline was built with
    case: object = None


class GpuTimer:
    """Median GPU time per dispatch from timestamp queries around `batch` back-to-back
    dispatches recorded in one command buffer (each run re-submits the same recording)."""

    name = "gpu-timestamps"

    def __init__(self, device, reps: int = 5, warmup: int = 1, target_ms: float | None = None,
                 max_batch: int = 256, busy_ms: float | None = None):
        self.device = device
        self.reps, self.warmup, self.max_batch = reps, warmup, max_batch
        cpu = device.info.type == "cpu"
        # per timed run: long enough to amortise submission, short enough for many candidates
        self.target_ns = (target_ms if target_ms is not None else (8.0 if cpu else 2.0)) * 1e6
        # GPU time spent on the candidate right before timing it: GPUs drop their clocks while
        # the host compiles the next candidate (an idle H100 sits at 345 MHz and ramps over
        # tens of ms), which inflates short kernels' times (see tools/bench_kernels.py).
        self.busy_ns = (busy_ms if busy_ms is not None else (0.0 if cpu else 30.0)) * 1e6
        self.rec = Recorder(device)
        self.fence = Fence(device)
        self.pool = TimestampPool(device, 2)

    def _record(self, record_one, n: int):
        rec = self.rec
        rec.begin()
        rec.reset_queries(self.pool)
        rec.timestamp(self.pool, 0)
        for _ in range(n):
            record_one(rec)
        rec.timestamp(self.pool, 1)
        rec.end()

    def _submit(self) -> float:
        self.fence.reset()
        submit(self.device, [self.rec.cb], self.fence)
        self.fence.wait()
        return self.pool.elapsed_ns()

    def measure(self, trial: Trial, record_one) -> list[float]:
        self._record(record_one, 1)
        self._submit()  # first touch: caches, lazy driver work
        one = max(self._submit(), 1.0)
        n = int(min(self.max_batch, max(1, self.target_ns // one)))
        if n > 1:
            self._record(record_one, n)
        spent, runs = 0.0, 0
        while runs < self.warmup or (spent < self.busy_ns and runs < 1000):
            spent += self._submit()
            runs += 1
        return [self._submit() / n for _ in range(self.reps)]

    def close(self):
        self.pool.destroy()
        self.fence.destroy()


class HostTimer(GpuTimer):
    """Fallback for devices without timestamp queries: host wall time of submit + wait."""

    name = "host-clock"

    def __init__(self, device, **kw):
        self.device = device
        self.reps, self.warmup = kw.get("reps", 5), kw.get("warmup", 1)
        self.max_batch = kw.get("max_batch", 256)
        self.target_ns = kw.get("target_ms", 10.0) * 1e6
        self.busy_ns = kw.get("busy_ms", 0.0) * 1e6
        self.rec, self.fence, self.pool = Recorder(device), Fence(device), None

    def _record(self, record_one, n: int):
        self.rec.begin()
        for _ in range(n):
            record_one(self.rec)
        self.rec.end()

    def _submit(self) -> float:
        t0 = time.perf_counter_ns()
        self.fence.reset()
        submit(self.device, [self.rec.cb], self.fence)
        self.fence.wait()
        return float(time.perf_counter_ns() - t0)

    def close(self):
        self.fence.destroy()


def default_timer(device):
    if device.info.timestamp_valid_bits:
        return GpuTimer(device)
    return HostTimer(device)


# --- results ---------------------------------------------------------------------------------

@dataclass
class UnitResult:
    family: str
    kernel: str
    variant: str
    shape_class: str
    shape: str = ""
    status: str = "pending"  # tuned | cached | failed | skipped | incomplete | pending
    names: list = field(default_factory=list)  # swept constant names
    default_spec: dict = field(default_factory=dict)
    default_ns: float | None = None
    chosen_spec: dict = field(default_factory=dict)
    chosen_ns: float | None = None
    best_ns: float | None = None
    bytes: int = 0
    results: list = field(default_factory=list)  # {"spec", "status", "ns", "msg"} per candidate
    note: str = ""
    group: str = ""  # units of one case with several same-semantics variants share a group

    @property
    def key(self) -> str:
        return tuning.entry_key(self.kernel, self.variant, self.shape_class)

    @property
    def speedup(self) -> float | None:
        if self.default_ns and self.chosen_ns:
            return self.default_ns / self.chosen_ns
        return None

    @property
    def rejected(self) -> list:
        return [r for r in self.results if r.get("status") != "ok"]


@dataclass
class TuneReport:
    device: str
    units: list = field(default_factory=list)
    elapsed_s: float = 0.0
    budget_s: float | None = None
    stopped: str | None = None  # "budget" or "interrupted" when work was left
    notes: list = field(default_factory=list)
    timer: str = ""

    def by_status(self, status: str) -> list:
        return [u for u in self.units if u.status == status]


class _Stop(Exception):
    def __init__(self, why: str):
        self.why = why


# --- resume file -----------------------------------------------------------------------------

def resume_path() -> Path:
    return cache_dir() / "autotune-resume.json"


class ResumeStore:
    """Candidate results of unfinished units, per device key and unit key."""

    def __init__(self, path: Path, dkey: str):
        self.path, self.dkey = path, dkey
        try:
            self.data = json.loads(path.read_text())
            if self.data.get("version") != RESUME_VERSION:
                self.data = {}
        except (FileNotFoundError, json.JSONDecodeError, AttributeError):
            self.data = {}
        self.data.setdefault("version", RESUME_VERSION)

    def _dev(self) -> dict:
        return self.data.setdefault(self.dkey, {})

    def get(self, ukey: str, stamp: dict) -> dict:
        ent = self._dev().get(ukey)
        if not ent or ent.get("stamp") != stamp:
            return {}
        return ent.get("results", {})

    def put(self, ukey: str, stamp: dict, results: dict):
        self._dev()[ukey] = {"stamp": stamp, "results": results}
        self._save()

    def drop(self, ukey: str):
        if self._dev().pop(ukey, None) is not None:
            self._save()

    def clear(self):
        if self.data.pop(self.dkey, None) is not None:
            self._save()

    def _save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


# --- candidates ------------------------------------------------------------------------------

def sweep_space(case, info, variant: str | None = None) -> tuple[list[str], dict, list[dict],
                                                                    dict]:
    """(swept names, default candidate, all candidates with the default first, base values).
    Candidates hold only the swept names; base holds the Kernel's defaults overlaid with what
    the host uses untuned (case.defaults(variant, info)) and case.fixed."""
    k = case.kernel
    variant = variant or case.variants[0]
    base = {**k.defaults(info), **case.defaults(variant, info), **case.fixed}
    if case.sweep is not None:
        axes = {n: tuple(v) for n, v in case.sweep.items() if n not in case.fixed}
    else:
        axes = {s.name: tuple(s.choices) for s in k.spec if s.choices and s.name not in case.fixed}
    names = [s.name for s in k.spec if s.name in axes]
    unknown = set(axes) - set(names)
    if unknown:
        raise TypeError(f"{k.stem}: case sweeps unknown constants {sorted(unknown)}")
    default = {n: base[n] for n in names}
    cands, seen = [default], {cand_key(default)}
    for combo in itertools.product(*(axes[n] for n in names)):
        c = dict(zip(names, combo))
        ck = cand_key(c)
        if ck not in seen:
            seen.add(ck)
            cands.append(c)
    return names, default, cands, base


def contract_violation(kernel, variant: str, values: dict, info) -> str | None:
    """Why `values` cannot run as kernel/variant on this device (its contract, and the
    variant's own contract where the Kernel has one, e.g. SubgroupKernel.check_variant), or
    None. Nothing is compiled."""
    try:
        if hasattr(kernel, "check_variant"):
            kernel.check_variant(variant, values, info)
        else:
            kernel.check_contract(values, info)
    except (ContractError, DeviceFeatureError) as e:
        return str(e)
    return None


def cand_key(spec: dict) -> str:
    return json.dumps([[n, spec[n]] for n in spec])


def _median(xs):
    return float(statistics.median(xs)) if xs else None


# --- the tuner -------------------------------------------------------------------------------

class Tuner:
    def __init__(self, device, cases, *, timer=None, budget_s: float | None = None,
                 fresh: bool = False, clock=time.monotonic, progress=None,
                 db_path: Path | None = None, resume_file: Path | None = None,
                 min_gain: float = MIN_GAIN, seed: int = 0, notes: list | None = None):
        self.device, self.info = device, device.info
        self.cases = list(cases)
        self.timer = timer
        self.budget_s = budget_s
        self.fresh = fresh
        self.clock = clock
        self.progress = progress
        self.db_path = db_path
        self.min_gain = min_gain
        self.seed = seed
        self.resume = ResumeStore(resume_file or resume_path(), tuning.device_key(self.info))
        self.notes = list(notes or [])
        self._t0 = None
        self._cand_cost = None  # running estimate of one candidate's wall time
        self._wl: dict = {}  # "check" / "time" -> Workload of the current share key
        self._wl_key = None

    # budget -----------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.clock() - self._t0

    def _may_start(self) -> bool:
        if self.budget_s is None:
            return True
        est = self._cand_cost or 0.0
        return self.elapsed() + est <= self.budget_s

    def _account(self, dt: float):
        self._cand_cost = dt if self._cand_cost is None else 0.7 * self._cand_cost + 0.3 * dt

    # workloads --------------------------------------------------------------------------
    def _share_key(self, case):
        k = case.share_key()
        return ("case", id(case)) if k is None else ("shared", k)

    def _workloads(self, case, variant):
        key = self._share_key(case)
        if self._wl_key != key:  # consecutive cases with one share key reuse the buffers
            self._free_workloads()
            self._wl_key = key
        if "check" not in self._wl:
            seed = zlib.crc32(f"{self.seed}/{case.kernel.stem}/{key}".encode())
            self._wl["check"] = case.workload(self.device, np.random.default_rng(seed), "check")
        return self._wl["check"]

    def _time_workload(self, case):
        if "time" not in self._wl:
            seed = zlib.crc32(f"{self.seed}/{case.kernel.stem}/{self._wl_key}/t".encode())
            wl = case.workload(self.device, np.random.default_rng(seed), "time")
            self._wl["time"] = wl if wl is not None else self._wl["check"]
        return self._wl["time"]

    def _free_workloads(self):
        done = set()
        for wl in self._wl.values():
            if id(wl) not in done:
                done.add(id(wl))
                wl.free()
        self._wl = {}
        self._wl_key = None

    # one candidate ----------------------------------------------------------------------
    def _candidate(self, case, variant: str, spec: dict, base: dict) -> dict:
        k, info = case.kernel, self.info
        full = {**base, **spec}
        full = case.derive(full)
        out = {"spec": spec}
        why = contract_violation(k, variant, full, info)
        if why:
            return {**out, "status": "contract", "msg": why}
        try:
            kp = k.pipeline(self.device, variant, **full)
        except ContractError as e:
            return {**out, "status": "contract", "msg": str(e)}
        except ShaderCompileError as e:  # the variant's SPIR-V: every candidate would fail
            return {**out, "status": "error", "msg": f"shader does not compile: {e}",
                    "compile_error": True}
        except (VkinferError, TypeError, ValueError) as e:
            return {**out, "status": "error", "msg": f"pipeline: {e}"}
        try:
            return self._check_and_time(case, variant, spec, full, kp, out)
        finally:
            # Thousands of candidates would exhaust the driver's pipeline memory (seen on the
            # H100); the winner is rebuilt from the pipeline cache when it is used.
            evict_pipeline(self.device, kp.pipeline)

    def _check_and_time(self, case, variant, spec, full, kp, out) -> dict:
        k = case.kernel
        try:
            wl = self._workloads(case, variant)
            wl.reset()
            with one_shot(self.device) as rec:
                case.record(rec, kp, wl)
            msg = case.verify(kp, wl)
        except ContractError as e:
            return {**out, "status": "contract", "msg": f"dispatch: {e}"}
        except Exception as e:  # noqa: BLE001 - a failing candidate (or case) must not end the run
            return {**out, "status": "error", "msg": f"{type(e).__name__}: {e}"}
        if msg:
            return {**out, "status": "wrong", "msg": msg}
        twl = self._time_workload(case)
        trial = Trial(k, variant, case.shape_class, spec, full, case)
        samples = [float(s) for s in self.timer.measure(trial, lambda rec: case.record(rec, kp,
                                                                                       twl))]
        return {**out, "status": "ok", "ns": _median(samples), "samples": samples}

    # one unit ---------------------------------------------------------------------------
    def _stamp(self, case, variant) -> dict:
        # JSON round trip: the stamp is compared with the one read back from the resume file
        return json.loads(json.dumps({
            "source_key": tuning._source_key(case.kernel, variant), "shape": case.shape,
            "timer": getattr(self.timer, "name", type(self.timer).__name__),
            "fixed": case.fixed}))

    def _unit(self, case, variant: str, u: UnitResult):
        names, default, cands, base = sweep_space(case, self.info, variant)
        u.names, u.default_spec = names, default
        stamp = self._stamp(case, variant)
        done = self.resume.get(u.key, stamp)
        results = {}
        broken = None  # a compile error of the variant's shader: no candidate can run
        for spec in cands:
            ck = cand_key(spec)
            if broken is not None:
                results[ck] = {"spec": spec, "status": "error", "msg": broken}
                continue
            label = f"{case.kernel.stem}/{variant} {case.shape_class} " + " ".join(
                f"{n}={v}" for n, v in spec.items())
            if ck in done:
                results[ck] = done[ck]
                u.results = list(results.values())
                self._tick(label, resumed=True)
                continue
            # contract rejections cost nothing: no budget check before them
            needs_run = not contract_violation(case.kernel, variant,
                                               case.derive({**base, **spec}), self.info)
            if needs_run and not self._may_start():
                raise _Stop("budget")
            t = self.clock()
            if self.progress:
                self.progress.label(label)
            r = self._candidate(case, variant, spec, base)
            if r.pop("compile_error", False):
                broken = r["msg"]
            if needs_run:
                self._account(self.clock() - t)
            results[ck] = r
            u.results = list(results.values())  # what an interrupted unit shows
            self.resume.put(u.key, stamp, results)
            self._tick(label)
        u.results = [results[cand_key(c)] for c in cands]
        self._decide(case, variant, u)
        self.resume.drop(u.key)

    def _decide(self, case, variant, u: UnitResult):
        ok = [r for r in u.results if r["status"] == "ok"]
        dflt = u.results[0]
        u.default_ns = dflt.get("ns") if dflt["status"] == "ok" else None
        extra = {"autotune": 1, "shape": case.shape, "fixed": case.fixed, "bytes": case.bytes,
                 "family": case.family, "default_spec": u.default_spec,
                 "default_ns": u.default_ns, "timer": self._stamp(case, variant)["timer"],
                 "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "results": [{k: r.get(k) for k in ("spec", "status", "ns", "msg") if k in r}
                             for r in u.results]}
        if not ok:
            u.status = "failed"
            kinds: dict = {}
            for r in u.results:
                kinds[r["status"]] = kinds.get(r["status"], 0) + 1
            u.note = "no candidate passed: " + ", ".join(f"{n} {k}" for k, n in kinds.items())
            tuning.store(self.info, case.kernel, variant, case.shape_class, {},
                         {**extra, "time_ns": None, "error": u.note}, self.db_path)
            return
        best = min(ok, key=lambda r: r["ns"])
        u.best_ns = best["ns"]
        chosen = best
        if u.default_ns is not None and best["ns"] > u.default_ns * (1.0 - self.min_gain):
            chosen = dflt
        u.chosen_spec, u.chosen_ns = dict(chosen["spec"]), chosen["ns"]
        u.status = "tuned"
        if dflt["status"] != "ok":
            first = (dflt.get("msg") or "").strip().splitlines()
            u.note = f"default rejected ({dflt['status']}: {first[0] if first else ''})"
        tuning.store(self.info, case.kernel, variant, case.shape_class, u.chosen_spec,
                     {**extra, "time_ns": u.chosen_ns, "best_ns": u.best_ns}, self.db_path)

    def _tick(self, label, resumed=False):
        if self.progress:
            self.progress.advance(label)

    # cached units -----------------------------------------------------------------------
    def _cached(self, case, variant, u: UnitResult) -> bool:
        if self.fresh:
            return False
        ent = tuning.entry(self.info, case.kernel, variant, case.shape_class, self.db_path)
        if not ent or not ent.get("autotune") or ent.get("shape") != case.shape \
                or ent.get("fixed", {}) != json.loads(json.dumps(case.fixed)):
            return False
        u.status = "cached" if ent.get("time_ns") is not None else "failed"
        order = [s.name for s in case.kernel.spec]  # JSON sorted the keys

        def ordered(d):
            return {n: d[n] for n in sorted(d, key=lambda n: order.index(n) if n in order else 99)}

        u.default_spec = ordered(ent.get("default_spec", {}))
        u.names = list(u.default_spec)
        u.default_ns = ent.get("default_ns")
        u.chosen_spec = ordered(ent.get("spec", {}))
        u.chosen_ns = ent.get("time_ns")
        u.best_ns = ent.get("best_ns")
        u.results = ent.get("results", [])
        u.note = ent.get("error", "") or f"tuned {ent.get('tuned_at', '')}"
        return True

    # the run ----------------------------------------------------------------------------
    def run(self) -> TuneReport:
        self._t0 = self.clock()
        own_timer = self.timer is None
        if own_timer:
            self.timer = default_timer(self.device)
        rep = TuneReport(self.info.name, budget_s=self.budget_s, notes=self.notes,
                         timer=getattr(self.timer, "name", type(self.timer).__name__))
        if self.fresh:
            self.resume.clear()
        pending = []
        for case in self.cases:
            runnable = set(case.kernel.supported_variants(self.info))
            for v in case.variants:
                u = UnitResult(case.family, case.kernel.stem, v, case.shape_class, case.shape,
                               bytes=case.bytes)
                if len(case.variants) > 1:
                    u.group = f"{case.kernel.stem}/{case.shape_class}/{'|'.join(case.variants)}"
                rep.units.append(u)
                if v not in case.kernel.variants:
                    u.status, u.note = "skipped", f"no variant {v!r}"
                elif v not in runnable:
                    if hasattr(case.kernel, "missing_features"):
                        need = ", ".join(case.kernel.missing_features(v, self.info))
                    else:
                        need = ", ".join(case.kernel.variants[v].requires)
                    u.status, u.note = "skipped", f"device lacks {need}"
                else:
                    pending.append((case, v, u))
        try:
            if self.progress:  # an estimate: a unit tuned earlier in this run may change another
                total = 0
                for case, v, _ in pending:
                    try:
                        case.prepare(self.device)
                        if self._cached(case, v, UnitResult("", "", "", "")):
                            continue
                        total += len(sweep_space(case, self.info, v)[2])
                    except Exception:  # noqa: BLE001 - reported when the unit runs
                        total += 1
                self.progress.start(total, budget_s=self.budget_s, clock=self.clock,
                                    t0=self._t0)
            for case, v, u in pending:
                # prepare() may read what an earlier unit of this run stored (e.g. constants
                # two shape classes must share), so it runs right before the unit
                try:
                    case.prepare(self.device)
                except Exception as e:  # noqa: BLE001 - one broken case must not end the run
                    u.status, u.note = "failed", f"prepare: {type(e).__name__}: {e}"
                    continue
                if self._cached(case, v, u):
                    continue
                try:
                    self._unit(case, v, u)
                except _Stop:
                    raise
                except TypeError as e:  # a case sweeping constants its kernel lacks
                    u.status, u.note = "failed", str(e)
                if u.status == "pending":
                    u.status = "failed"
        except _Stop as s:
            rep.stopped = s.why
        except KeyboardInterrupt:
            rep.stopped = "interrupted"
        finally:
            for _, _, u in pending:
                if u.status == "pending" and u.results:
                    u.status = "incomplete"
            try:
                self.device.wait_idle()
            except Exception:
                pass
            self._free_workloads()
            if self.progress:
                self.progress.finish()
            if own_timer and hasattr(self.timer, "close"):
                self.timer.close()
                self.timer = None
        rep.elapsed_s = self.elapsed()
        return rep


def tune(device=None, kernels=None, shape_classes=None, budget_s: float | None = None,
         fresh: bool = False, timer=None, cases=None, progress=None, **kw) -> TuneReport:
    """Tune every case (or those given) on `device` (default: the process's device).
    `kernels` / `shape_classes`: fnmatch patterns over family or kernel names / shape classes."""
    from .cases import load_cases, uncovered_families

    if device is None:
        from ..vk.device import get_device

        device = get_device()
    notes = []
    if cases is None:
        cases = load_cases(device.info, kernels, shape_classes, notes)
        missing = uncovered_families()
        if missing and not kernels:
            notes.append("families without autotune cases: " + ", ".join(missing))
    tuner = Tuner(device, cases, timer=timer, budget_s=budget_s, fresh=fresh, progress=progress,
                  notes=notes, **kw)
    return tuner.run()
