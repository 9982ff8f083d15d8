"""argmax.comp against numpy.argmax on lavapipe: exact indices (a comparison, no rounding).
Odd widths and row counts, ties to the lowest index (within and across chunks), NaN and -inf,
strided rows, every CHUNKS / WG choice, and one vocabulary-sized row of 250k."""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer import ops
from vkinfer.errors import ContractError
from vkinfer.pipelines import argmax as k
from vkinfer.vk.commands import one_shot


@pytest.mark.parametrize("rows", [1, 3, 37])
@pytest.mark.parametrize("n", [1, 7, 33, 100, 129])
def test_matches_numpy(rng, rows, n):
    x = rng.standard_normal((rows, n)).astype(np.float32)
    np.testing.assert_array_equal(ops.argmax(x), np.argmax(x, -1))
    assert ops.argmax(x[0]) == int(np.argmax(x[0]))


@pytest.mark.parametrize("chunks", k.KERNEL.spec[1].choices)
def test_ties_go_to_the_lowest_index(rng, chunks):
    n = 1000
    x = rng.uniform(-1, 0, (4, n)).astype(np.float32)
    x[0, [900, 17, 500]] = 2.0  # spread over different chunks and lanes
    x[1, [256, 0]] = 2.0  # index 0 vs an index in the same lane (256 = WG)
    x[2] = 0.5  # all equal
    x[3, [999, 998]] = 3.0  # the last entries
    got = ops.argmax(x, CHUNKS=chunks)
    np.testing.assert_array_equal(got, [17, 0, 0, 998])
    np.testing.assert_array_equal(got, np.argmax(x, -1))


def test_nan_and_infinities():
    x = np.zeros((5, 300), np.float32)
    x[0, [250, 40]] = np.nan  # NaN beats everything; the first NaN wins (numpy's rule)
    x[1, 7] = np.inf
    x[1, 200] = np.nan
    x[2] = -np.inf  # all -inf: index 0
    x[3, [5, 280]] = np.inf
    x[4, 123] = np.nan
    x[4, 0] = np.inf
    for chunks in (1, 16):
        np.testing.assert_array_equal(ops.argmax(x, CHUNKS=chunks), [40, 200, 0, 5, 123])
    np.testing.assert_array_equal(ops.argmax(x), np.argmax(x, -1))


@pytest.mark.parametrize("wg", k.KERNEL.spec[0].choices)
def test_every_workgroup_size(rng, wg):
    x = rng.standard_normal((3, 4097)).astype(np.float32)
    for chunks in (1, 64):
        np.testing.assert_array_equal(ops.argmax(x, WG=wg, CHUNKS=chunks), np.argmax(x, -1))


def test_vocabulary_row(rng):
    # a Qwen3.5 vocabulary (248320) plus a few rows, with the maximum placed near the end
    x = rng.standard_normal((3, 250_000)).astype(np.float32)
    x[1, 249_999] = 10.0
    x[2, [123_456, 200_000]] = 10.0
    np.testing.assert_array_equal(ops.argmax(x), np.argmax(x, -1))
    np.testing.assert_array_equal(ops.argmax(x, CHUNKS=1), np.argmax(x, -1))


def test_strided_rows_and_more_chunks_than_entries(device, rng):
    # logits rows of 33 inside rows of 40, from element 5; CHUNKS=64 > 33 leaves empty chunks
    x = rng.standard_normal((7, 40)).astype(np.float32)
    bx, out = device.memory.alloc(x.nbytes), device.memory.alloc(4 * 7)
    part = device.memory.alloc(k.part_bytes(7, 64))
    bx.write(x)
    kps = k.pipelines(device, CHUNKS=64, WG=64)
    with one_shot(device) as rec:
        k.dispatch(rec, kps, bx, part, out, 33, 7, x_view=(5, 40))
    np.testing.assert_array_equal(out.read(np.int32, (7,)), np.argmax(x[:, 5:38], -1))
    for b in (bx, out, part):
        b.free()


def test_contract(device):
    with pytest.raises(ContractError):
        k.KERNEL.pipeline(device, WG=100)
    with pytest.raises(ContractError):
        k.KERNEL.pipeline(device, CHUNKS=0)
