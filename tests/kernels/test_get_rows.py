"""get_rows.comp on lavapipe: dequantized embedding rows for every weight type, compared bit for
bit with vkinfer.gguf.quants.dequantize (the shader repeats its float operations exactly, so the
tolerance is zero), with repeated ids, the smallest legal K, ids from a device buffer rewritten
between submits (R3), out-of-range ids and a strided output.
"""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer import ops
from vkinfer.gguf import quants
from vkinfer.pipelines import get_rows as k
from vkinfer.pipelines import mul_mat_vec as kv
from vkinfer.vk.commands import one_shot

TYPES = [t.name.lower() for t in kv.TYPES]


@pytest.mark.parametrize("t", TYPES)
def test_every_type_bit_exact(rng, t):
    unit = kv.unit_elems(t)
    for K in (max(quants.type_info(t).block_size, unit), 40 * unit):
        w = quants.random_blocks(t, 13, K, rng)
        ids = np.array([12, 0, 5, 5, 7], np.int32)
        out = ops.get_rows(w, t, ids)
        np.testing.assert_array_equal(out.view(np.uint32), k.reference(w, t, ids).view(np.uint32))


def test_ids_from_device_buffer_and_bad_ids(device, rng):
    """The same recording replayed with new ids; ids outside the table give zero rows; the
    output may be a strided view (out_stride > K)."""
    t, rows, K, stride = "q4_k", 9, 512, 520
    w = quants.random_blocks(t, rows, K, rng)
    bw, bi, bo = (device.memory.alloc(n) for n in (w.nbytes, 4 * 4, 4 * 4 * stride))
    try:
        bw.write(w)
        kp = k.pipeline(device, t)
        for ids in (np.array([8, 1, 2, 3], np.int32), np.array([-1, 4, 9, 0], np.int32)):
            bi.write(ids)
            bo.write(np.full(4 * stride, 7.0, np.float32))
            with one_shot(device) as rec:
                k.dispatch(rec, kp, bw, bi, bo, rows, K, w.shape[1], 4, out_stride=stride)
            got = bo.read(np.float32, (4, stride))
            np.testing.assert_array_equal(got[:, :K], k.reference(w, t, ids))
            assert np.all(got[:, K:] == 7.0)  # untouched padding
    finally:
        for b in (bw, bi, bo):
            b.free()


def test_errors(rng):
    w = quants.random_blocks("q8_0", 4, 64, rng)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        ops.get_rows(w, "q8_0", [0, 4])
    with pytest.raises(ValueError, match="whole"):
        ops.get_rows(w[:, :40], "q8_0", [0])
    assert ops.get_rows(w, "q8_0", np.zeros(0, np.int32)).shape == (0, 64)
