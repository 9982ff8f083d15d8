"""flash_attn: attention over the KV cache, tuned in the three kinds of entry that
`flash_attn.pipelines()` reads:

1. numerics — numerics_class(head dim, group, cache type): BC, CHUNK, CHUNK_MAX, NCHUNK, DL,
   the constants that define the bits, shared by every mode and token count of a layer. Timed on decode (split-K,
   one query token, a long context) with WG/BR at their untuned values. The subgroup and
   shared-memory reductions of a cache type have the same semantics: a group.
2. mode — shape_class(head dim, group, cache type, split, rows): WG, BR and VE, per variant, with
   the numerics fixed to what unit 1 stored for that variant (prepare(), so it runs after):
   decode, an MTP verify of 4 tokens, a prefill chunk (direct).
3. reduce — flash_attn_reduce's WG per head dim ("hd<HD>"), on the decode shape.

The KV length a class is timed at is fixed per device (the classes have no KV-length bucket).
"""

from __future__ import annotations

import numpy as np

from ... import tuning
from ...pipelines import flash_attn as fam
from . import Case, Workload, compare, is_cpu

PRIORITY = 20  # lower is tuned first (a budget goes to what matters most)

TOL = 1e-5  # tests/kernels/test_flash_attn.py: |d| <= 1e-5·max|V| + 1e-5·|ref|


def _choices(name: str, kernel=fam.FLASH) -> tuple:
    return next(s for s in kernel.spec if s.name == name).choices


MIN_CHUNK = min(_choices("CHUNK"))  # partial buffers sized for the most chunks any candidate has


def untuned_br(info, variant: str, vals: dict, rows: int, split: bool) -> int:
    """BR as flash_attn._pipelines picks it without a tuning entry."""
    return fam.default_br(info, variant, vals, rows)


class _Attn(Case):
    """Shared workload: q at the last n_q positions of a kv_len context, F16 or Q8_0 caches."""

    family = "flash_attn"

    def workload(self, device, rng, purpose):
        if purpose == "time":
            n_q, n_kv, kv_len = self.n_q, self.n_kv, self.kv_len
        else:  # a few chunks of every CHUNK choice, a partial last block
            n_q, n_kv, kv_len = (3 if self.split else 5), 1, 203
        n_head, hd = self.g * n_kv, self.hd
        kv_max = kv_len + 5
        wl = Workload(device, rng)
        wl.meta.update(n_q=n_q, n_head=n_head, n_kv=n_kv, kv_len=kv_len, kv_max=kv_max)
        wl.input("q", rng.standard_normal((n_q, n_head, hd)).astype(np.float32))
        for name in ("k", "v"):
            x = rng.standard_normal((kv_max, n_kv, hd)).astype(np.float32)
            wl.input(name, np.ascontiguousarray(fam.to_cache(x, self.kv_type)))
        wl.input("pos", np.arange(kv_len - n_q, kv_len, dtype=np.int32))
        wl.input("lens", np.array([kv_len, n_q], np.int32))
        wl.output("out", 4 * n_q * n_head * hd)
        if self.split:
            slots = n_q * n_head * -(-kv_max // MIN_CHUNK)
            wl.output("part_o", 4 * slots * hd)
            wl.output("part_ml", 8 * slots)
        return wl

    def _dispatch(self, rec, kp, kr, wl):
        m = wl.meta
        fam.dispatch(rec, kp, kr, wl["q"], wl["k"], wl["v"], wl["pos"], wl["lens"], wl["out"],
                     wl.bufs.get("part_o"), wl.bufs.get("part_ml"), n_q_max=m["n_q"],
                     n_head=m["n_head"], n_head_kv=m["n_kv"], kv_len_max=m["kv_max"])

    def _reduce_pipeline(self, device, kp):
        return fam.reduce_pipeline(device, kp)

    def verify(self, kp, wl):
        h, m, hd = wl.host, wl.meta, self.hd
        k = fam.from_cache(h["k"], self.kv_type, hd)
        v = fam.from_cache(h["v"], self.kv_type, hd)
        want = fam.reference(h["q"], k, v, h["pos"], m["kv_len"])
        got = wl.read("out", np.float32, want.shape)
        return compare("out", got, want, TOL, TOL * float(np.abs(v).max()))


class FlashAttnCase(_Attn):
    """Units 1 (numerics, split decode) and 2 (mode) of the module docstring."""

    def defaults(self, variant, info):
        wg = fam.auto_wg(self.hd)
        base = {**fam.FLASH.defaults(info), **self.fixed, "WG": wg}
        return {"WG": wg, "BR": untuned_br(info, variant, base, self.g * self.n_q, self.split)}

    def prepare(self, device):
        if self.numerics:
            return
        (v,) = self.variants
        num = tuning.lookup(device.info, fam.FLASH, v,
                            fam.numerics_class(self.hd, self.g, self.kv_type)) or {}
        base = fam.FLASH.defaults(device.info)
        self.fixed = {"HD": self.hd, "SPLIT": self.split,
                      **{k: num.get(k, base[k]) for k in fam.NUMERIC_SPEC if k != "HD"}}

    def record(self, rec, kp, wl):
        kr = self._reduce_pipeline(wl.device, kp) if self.split else None
        self._dispatch(rec, kp, kr, wl)


class FlashReduceCase(_Attn):
    """Unit 3: flash_attn_reduce's WG. The check runs the whole decode (main pass with the
    pipelines() values, then the candidate reduce); the timing runs the reduce alone over the
    partials a main pass left."""

    def prepare(self, device):
        self.main = fam.pipelines(device, self.hd, self.kv_type, True, self.g, rows=self.g)[0]
        self.fixed = {"HD": self.hd, **{k: self.main.spec[k] for k in fam.CHUNK_SPEC}}

    def workload(self, device, rng, purpose):
        wl = super().workload(device, rng, purpose)
        if purpose == "time":  # fill the partials once with a real main pass
            from ...vk.commands import one_shot

            with one_shot(device) as rec:
                self._dispatch(rec, self.main, self._reduce_pipeline(device, self.main), wl)
            wl.meta["reduce_only"] = True
        return wl

    def record(self, rec, kp, wl):
        if wl.meta.get("reduce_only"):
            self._dispatch_reduce(rec, kp, wl)
        else:
            self._dispatch(rec, self.main, kp, wl)

    def _dispatch_reduce(self, rec, kr, wl):
        m = wl.meta
        nch = fam.n_chunks(self.main, m["kv_max"])
        kr.record(rec, [wl["pos"], wl["lens"], wl["part_o"], wl["part_ml"], wl["out"]],
                  (m["n_q"] * m["n_head"], self.hd // kr.spec["WG"]), n_q_max=m["n_q"],
                  n_head=m["n_head"],
                  n_chunks_max=nch, kv_len_max=m["kv_max"], window=0)


def _cases(info, hd, g, n_kv, kv_type, cpu):
    row = fam.cache_row_bytes(kv_type, n_kv, hd)
    kv_len = 256 if cpu else 4096
    common = {"hd": hd, "g": g, "n_kv": n_kv, "kv_type": kv_type}
    vs = tuple(v for v in (kv_type, f"{kv_type}_shmem") if v in fam.FLASH.variants)
    num_sweep = ({"BC": (16, 32), "CHUNK": (32, 64), "DL": (4, 8)} if cpu else
                 {n: _choices(n) for n in ("BC", "CHUNK", "CHUNK_MAX", "NCHUNK", "DL")})
    mode_sweep = ({"WG": (64,), "BR": (2, 8)} if cpu else
                  {n: _choices(n) for n in ("WG", "BR", "VE")})
    what = f"hd={hd} g={g} kv_heads={n_kv} {kv_type}"
    out = [FlashAttnCase(
        fam.FLASH, fam.numerics_class(hd, g, kv_type), vs, fixed={"HD": hd, "SPLIT": True},
        sweep=num_sweep, split=True, numerics=True, n_q=1, kv_len=kv_len, **common,
        bytes=2 * kv_len * row, shape=f"numerics, decode: {what} kv_len={kv_len}")]
    modes = [(True, 1, kv_len), (True, 4, kv_len)] + [(False, 16 if cpu else 512,
                                                       64 if cpu else 512)]
    if cpu:
        modes = [modes[0], modes[2]]
    for v in vs:
        for split, n_q, kvl in modes:
            out.append(FlashAttnCase(
                fam.FLASH, fam.shape_class(hd, g, kv_type, split, n_q * g), (v,),
                fixed={"HD": hd, "SPLIT": split}, sweep=mode_sweep, split=split,
                numerics=False, n_q=n_q, kv_len=kvl, **common, bytes=2 * kvl * row,
                shape=f"{'split' if split else 'direct'}: {what} n_q={n_q} kv_len={kvl}"))
    out.append(FlashReduceCase(
        fam.REDUCE, f"hd{hd}", ("default",), fixed={"HD": hd}, split=True, n_q=1, kv_len=kv_len,
        **common, bytes=0, shape=f"reduce after decode: {what} kv_len={kv_len}"))
    return out


def cases(info):
    if is_cpu(info):
        return _cases(info, 64, 2, 1, "f16", True)
    out = []
    # Qwen3.6 27B: 24 q / 4 kv heads; 35B-A3B: 16 / 2; head dim 256
    for kv_type in fam.KV_TYPES:
        for g, n_kv in ((6, 4), (8, 2)):
            out += _cases(info, 256, g, n_kv, kv_type, False)
    # the reduce class is per head dim only: keep its first case
    seen, uniq = set(), []
    for c in out:
        key = (c.kernel.stem, c.shape_class, c.variants)
        if key not in seen:
            seen.add(key)
            uniq.append(c)
    return uniq
