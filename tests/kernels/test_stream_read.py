import numpy as np
import pytest

from vkinfer.errors import ContractError
from vkinfer.pipelines import stream_read as k
from vkinfer.vk.commands import one_shot


@pytest.mark.parametrize("n,groups,wg,unroll", [(1, 1, 64, 1), (1000, 3, 64, 4), (4097, 7, 128, 8)])
def test_stream_read_matches_reference(device, rng, n, groups, wg, unroll):
    data = rng.integers(0, 2**32, size=n * 4, dtype=np.uint32)
    src, dst = device.memory.alloc(data.nbytes), device.memory.alloc(groups * 16)
    src.write(data)
    kp = k.KERNEL.pipeline(device, WG=wg, UNROLL=unroll)
    with one_shot(device) as rec:
        k.dispatch(rec, kp, src, dst, n, groups)
    got = dst.read(np.uint32, (groups, 4))
    np.testing.assert_array_equal(got, k.reference(data, groups, wg))
    src.free(), dst.free()


def test_contract_rejects_non_power_of_two(device):
    with pytest.raises(ContractError, match="power of two"):
        k.KERNEL.pipeline(device, WG=96)
