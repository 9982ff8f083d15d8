"""The autotuner (vkinfer/autotune) and the tuning database (vkinfer/tuning.py) on lavapipe.

Most tests inject a fake timer (times chosen per candidate) and a fake clock, so what is
checked is the tuner's logic: fastest correct candidate wins, wrong and contract-violating ones
are rejected (the latter never compiled), the budget stops it, an interrupted run resumes. The
real axpy kernel runs every check; the last tests do real (tiny) tuning runs through the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vkinfer import tuning
from vkinfer.autotune import report
from vkinfer.autotune.cases import axpy as axpy_cases
from vkinfer.autotune.engine import Tuner, sweep_space
from vkinfer.pipelines import axpy
from vkinfer.pipelines.kernel import Kernel, Variant

ROOT = Path(__file__).resolve().parents[2]
N = 1000  # small, not a multiple of any workgroup size


class FakeTimer:
    """Per-dispatch ns from a table keyed by WG; counts calls; can advance a fake clock or
    raise KeyboardInterrupt on the k-th call (Ctrl-C in the middle of a run)."""

    name = "fake"

    def __init__(self, times, clock=None, cost_s=0.0, interrupt_at=None):
        self.times, self.clock, self.cost_s = times, clock, cost_s
        self.interrupt_at = interrupt_at
        self.calls = []

    def measure(self, trial, record_one):
        if self.interrupt_at is not None and len(self.calls) + 1 == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls.append(dict(trial.spec))
        if self.clock is not None:
            self.clock.t += self.cost_s
        return [self.times[trial.spec["WG"]]] * 3


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class WrongAt128(axpy_cases.AxpyCase):
    """The real axpy kernel, but the candidate WG=128 'has a bug': it skips the last element."""

    def record(self, rec, kp, wl):
        n = wl.meta["n"] - (1 if kp.spec["WG"] == 128 else 0)
        axpy.dispatch(rec, kp, wl["x"], wl["alpha"], wl["y"], n, alpha_index=1)


TIMES = {32: 50.0, 64: 40.0, 128: 10.0, 256: 20.0, 512: 30.0}


def make_case(cls=axpy_cases.AxpyCase, kernel=axpy.KERNEL, shape_class="n1024", **kw):
    return cls(kernel, shape_class, n=N, n_check=N, bytes=12 * N, shape=f"n={N}", **kw)


def tuner(device, tmp_path, cases, timer, **kw):
    return Tuner(device, cases, timer=timer, db_path=tmp_path / "tuning.json",
                 resume_file=tmp_path / "resume.json", **kw)


def test_picks_fastest_correct_and_rejects_wrong(device, tmp_path):
    timer = FakeTimer(TIMES)
    rep = tuner(device, tmp_path, [make_case(WrongAt128)], timer).run()
    (u,) = rep.units
    assert u.status == "tuned"
    assert u.chosen_spec == {"WG": 256}  # 128 is faster but wrong
    assert u.default_spec == {"WG": 64} and u.default_ns == 40.0 and u.chosen_ns == 20.0
    assert u.speedup == pytest.approx(2.0)
    bad = {r["spec"]["WG"]: r for r in u.rejected}
    assert list(bad) == [128] and bad[128]["status"] == "wrong"
    assert {"WG": 128} not in timer.calls  # a wrong candidate is never timed
    assert len(timer.calls) == 4
    ent = tuning.entry(device.info, axpy.KERNEL, "default", "n1024", tmp_path / "tuning.json")
    assert ent["spec"] == {"WG": 256} and ent["default_ns"] == 40.0
    assert any(r["status"] == "wrong" for r in ent["results"])  # rejections are recorded
    table = report.format_table(rep)
    assert "WG=256*" in table and "2.00x" in table and "1 wrong" in table


def test_default_kept_within_noise(device, tmp_path):
    times = {32: 50.0, 64: 20.2, 128: 20.0, 256: 25.0, 512: 30.0}  # best within 2% of default
    rep = tuner(device, tmp_path, [make_case()], FakeTimer(times)).run()
    assert rep.units[0].chosen_spec == {"WG": 64}


def test_contract_violation_is_never_compiled(device, tmp_path, monkeypatch):
    built = []
    real = Kernel.pipeline

    def spy(self, dev, variant="default", shape_class=None, **ov):
        built.append(ov.get("WG"))
        return real(self, dev, variant, shape_class, **ov)

    monkeypatch.setattr(Kernel, "pipeline", spy)
    too_big = 2 * device.info.max_workgroup_invocations
    case = make_case(sweep={"WG": (32, 128, too_big)})
    timer = FakeTimer({**TIMES, too_big: 1.0})
    (u,) = tuner(device, tmp_path, [case], timer).run().units
    assert too_big not in built and sorted(built) == [32, 64, 128]
    assert [r["status"] for r in u.rejected] == ["contract"]
    assert u.chosen_spec == {"WG": 128}


def test_unsupported_variant_skipped(device, tmp_path):
    k = dataclasses.replace(axpy.KERNEL, variants={
        "default": Variant(), "exotic": Variant({"EXOTIC": "1"}, requires=("no_such_feature",))})
    case = make_case(kernel=k)
    case.variants = ("default", "exotic")
    rep = tuner(device, tmp_path, [case], FakeTimer(TIMES)).run()
    st = {u.variant: (u.status, u.note) for u in rep.units}
    assert st["default"][0] == "tuned"
    assert st["exotic"] == ("skipped", "device lacks no_such_feature")


def test_shader_that_does_not_compile_fails_its_unit_once(device, tmp_path, monkeypatch):
    # -DACCUMULATE=1 turns axpy.comp's `const bool ACCUMULATE` into `const bool 1`
    k = dataclasses.replace(axpy.KERNEL, variants={"default": Variant({"ACCUMULATE": "1"})})
    import vkinfer.pipelines.kernel as kmod

    calls = []
    real = kmod.get_spirv
    monkeypatch.setattr(kmod, "get_spirv", lambda *a: calls.append(a) or real(*a))
    timer = FakeTimer(TIMES)
    (u,) = tuner(device, tmp_path, [make_case(kernel=k)], timer).run().units
    assert u.status == "failed" and timer.calls == [] and len(calls) == 1
    assert all(r["status"] == "error" and "does not compile" in r["msg"] for r in u.results)
    ent = tuning.entry(device.info, k, "default", "n1024", tmp_path / "tuning.json")
    assert ent["spec"] == {} and ent["time_ns"] is None  # done until the shader changes


def test_budget_then_resume_then_cached(device, tmp_path):
    clock = FakeClock()
    t1 = FakeTimer(TIMES, clock, cost_s=1.0)
    rep = tuner(device, tmp_path, [make_case()], t1, budget_s=2.5, clock=clock).run()
    assert rep.stopped == "budget"
    assert clock.t <= 2.5  # no candidate was started that the estimate said would overrun
    assert len(t1.calls) == 2 and rep.units[0].status == "incomplete"
    assert tuning.entry(device.info, axpy.KERNEL, "default", "n1024",
                        tmp_path / "tuning.json") is None
    # resume: the two finished candidates are not measured again
    t2 = FakeTimer(TIMES)
    (u,) = tuner(device, tmp_path, [make_case()], t2).run().units
    assert u.status == "tuned" and len(t2.calls) == 3
    assert {json.dumps(c) for c in t1.calls}.isdisjoint(json.dumps(c) for c in t2.calls)
    assert u.chosen_spec == {"WG": 128}
    # finished units are not redone; --fresh redoes them
    t3 = FakeTimer(TIMES)
    assert tuner(device, tmp_path, [make_case()], t3).run().units[0].status == "cached"
    assert t3.calls == []
    t4 = FakeTimer(TIMES)
    assert tuner(device, tmp_path, [make_case()], t4, fresh=True).run().units[0].status == "tuned"
    assert len(t4.calls) == 5


def test_interrupt_resumes(device, tmp_path):
    cases = [make_case(shape_class="a"), make_case(shape_class="b")]
    t1 = FakeTimer(TIMES, interrupt_at=7)  # Ctrl-C during the second unit's 2nd candidate
    rep = tuner(device, tmp_path, cases, t1).run()
    assert rep.stopped == "interrupted"
    assert [u.status for u in rep.units] == ["tuned", "incomplete"]
    t2 = FakeTimer(TIMES)
    rep2 = tuner(device, tmp_path, cases, t2).run()
    assert [u.status for u in rep2.units] == ["cached", "tuned"]
    assert len(t2.calls) == 4  # only the unfinished candidates of unit b


def test_db_roundtrip_and_invalidation(device, tmp_path, monkeypatch):
    db = tmp_path / "tuning.json"
    info = device.info
    tuning.store(info, axpy.KERNEL, "default", "n4096", {"WG": 256}, {"time_ns": 5.0}, path=db)
    tuning.forget_loaded()
    assert tuning.lookup(info, axpy.KERNEL, "default", "n4096", path=db) == {"WG": 256}
    assert tuning.lookup(info, axpy.KERNEL, "default", "n8192", path=db) is None
    # another driver version is another device key
    other = dataclasses.replace(info, driver_version=info.driver_version + 1)
    assert tuning.lookup(other, axpy.KERNEL, "default", "n4096", path=db) is None
    # a changed shader (source key) invalidates the entry: stored key edited...
    data = json.loads(db.read_text())
    ent = data[tuning.device_key(info)]["axpy/default/n4096"]
    good = ent["source_key"]
    ent["source_key"] = "0" * 24
    db.write_text(json.dumps(data))
    tuning.forget_loaded()
    assert tuning.lookup(info, axpy.KERNEL, "default", "n4096", path=db) is None
    # ... or the shader source hash changing under it
    ent["source_key"] = good
    db.write_text(json.dumps(data))
    tuning.forget_loaded()
    assert tuning.lookup(info, axpy.KERNEL, "default", "n4096", path=db) == {"WG": 256}
    from vkinfer.vk import shader

    monkeypatch.setattr(shader, "source_key", lambda stem, defines: "edited-shader")
    assert tuning.lookup(info, axpy.KERNEL, "default", "n4096", path=db) is None


def test_best_variant(device, tmp_path):
    db = tmp_path / "tuning.json"
    k = dataclasses.replace(axpy.KERNEL, variants={
        "a": Variant(), "b": Variant({"B": "1"}), "c": Variant({"C": "1"}, requires=("nope",))})
    info = device.info
    assert tuning.best_variant(info, k, "s", ["a", "b"], default="a", path=db) == "a"
    tuning.store(info, k, "a", "s", {"WG": 64}, {"time_ns": 30.0}, path=db)
    tuning.store(info, k, "b", "s", {"WG": 64}, {"time_ns": 20.0}, path=db)
    tuning.store(info, k, "c", "s", {"WG": 64}, {"time_ns": 1.0}, path=db)  # not runnable here
    assert tuning.best_variant(info, k, "s", ["a", "b", "c"], path=db) == "b"


def test_pipeline_picks_up_tuned_values(device, tmp_path, monkeypatch):
    monkeypatch.setenv("VKINFER_CACHE", str(tmp_path))
    tuning.forget_loaded()
    try:
        assert axpy.KERNEL.pipeline(device, shape_class="n1024").spec["WG"] == 64
        (u,) = Tuner(device, [make_case()], timer=FakeTimer(TIMES)).run().units
        assert u.chosen_spec == {"WG": 128}
        kp = axpy.KERNEL.pipeline(device, shape_class="n1024")
        assert kp.spec["WG"] == 128
        assert axpy.KERNEL.pipeline(device, shape_class="n1024", WG=32).spec["WG"] == 32
        assert axpy.KERNEL.pipeline(device, shape_class="other").spec["WG"] == 64
    finally:
        tuning.forget_loaded()


def test_sweep_space_default_first_and_deduplicated(device):
    names, default, cands, base = sweep_space(make_case(), device.info)
    assert names == ["WG"] and default == {"WG": 64} and cands[0] == default
    assert len(cands) == len({json.dumps(c) for c in cands}) == 5
    assert base["ACCUMULATE"] is True


def test_cli_tune_real_run_within_budget(device, tmp_path, monkeypatch, capsys):
    from vkinfer.cli import main

    monkeypatch.setenv("VKINFER_CACHE", str(tmp_path))
    tuning.forget_loaded()
    try:
        t0 = time.monotonic()
        assert main(["tune", "--kernel", "axpy", "--budget-s", "10"]) == 0
        took = time.monotonic() - t0
        assert took < 10.5, took
        out = capsys.readouterr()
        assert "| axpy" in out.out and "tuned" in out.out and "tune [" in out.err
        ent = tuning.device_entries(device.info)
        keys = [k for k in ent if k.startswith("axpy/default/")]
        assert keys, ent
        cls = keys[0].split("/", 2)[2]
        tuned = ent[keys[0]]["spec"]
        assert axpy.KERNEL.pipeline(device, shape_class=cls).spec["WG"] == tuned["WG"]
        # the next run uses the database: nothing measured again
        t1 = time.monotonic()
        assert main(["tune", "--kernel", "axpy", "--quiet"]) == 0
        assert time.monotonic() - t1 < 2.0
        assert "cached" in capsys.readouterr().out
    finally:
        tuning.forget_loaded()


def test_plot_needs_matplotlib(monkeypatch, capsys, tmp_path):
    from vkinfer.cli import main

    monkeypatch.setattr(report, "have_matplotlib", lambda: False)
    assert main(["tune", "--kernel", "axpy", "--plot", str(tmp_path / "p")]) == 2
    assert "needs matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_plot_writes_png(device, tmp_path):
    pytest.importorskip("matplotlib")
    rep = tuner(device, tmp_path, [make_case()], FakeTimer(TIMES)).run()
    files = report.plot(rep, tmp_path / "plots")
    assert [f.name for f in files] == ["axpy.png"] and files[0].stat().st_size > 1000


def test_tools_script_stream_read(tmp_path):
    """The thin script, as a user runs it: a real sweep of the bandwidth probe in a budget."""
    env = {**__import__("os").environ, "VKINFER_CACHE": str(tmp_path)}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "autotune.py"), "--kernel",
                        "stream_read", "--budget-s", "8", "--quiet"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 8 + 5  # + interpreter and device start-up
    assert "stream_read" in r.stdout
    db = json.loads((tmp_path / "tuning.json").read_text())
    (dev,) = db.values()
    assert any(k.startswith("stream_read/default/stream") for k in dev)


def _first_case_per_family():
    from vkinfer.autotune.cases import load_cases
    from vkinfer.vk.device import get_device

    out = {}
    for c in load_cases(get_device().info):
        out.setdefault(c.family, c)
    return out


FAMILIES = sorted(_first_case_per_family())


@pytest.mark.parametrize("family", FAMILIES)
def test_case_default_passes_its_check(device, family):
    """Each family's case (its first shape class), at the values the host uses untuned, passes
    its own reference check on this device for every variant it can run: a rejection in a real
    run then means the candidate is wrong, not the case."""
    from vkinfer.autotune.engine import sweep_space
    from vkinfer.vk.commands import one_shot

    case = _first_case_per_family()[family]
    case.prepare(device)
    runnable = [v for v in case.variants if v in case.kernel.supported_variants(device.info)]
    assert runnable, case
    for v in runnable:
        base = sweep_space(case, device.info, v)[3]
        kp = case.kernel.pipeline(device, v, **case.derive(base))
        wl = case.workload(device, np.random.default_rng(1), "check")
        try:
            wl.reset()
            with one_shot(device) as rec:
                case.record(rec, kp, wl)
            assert case.verify(kp, wl) is None, (case, v)
        finally:
            wl.free()

