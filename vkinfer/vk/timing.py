"""GPU time of recorded work, between two timestamps (what every benchmark and the autotuner
measure): record `reps` repetitions into one command buffer, submit, read the timestamps."""

from __future__ import annotations

import statistics

from .commands import Recorder, TimestampPool
from .sync import Fence, submit


def gpu_time_ns(device, record, reps: int, *, repeat: int = 1, warmup: int = 1,
                warmup_reps: int | None = None, fence_barriers: bool = False) -> float:
    """Median over `repeat` runs of the GPU ns per repetition of `record(rec, i)`, i < reps,
    after `warmup` untimed runs (caches, clocks, shader JIT). With `fence_barriers` a barrier
    separates the timed region from work before and after it."""
    pool = TimestampPool(device, 2)
    rec, fence = Recorder(device), Fence(device)
    times = []
    try:
        for run in range(warmup + repeat):
            warm = run < warmup
            n = (warmup_reps or reps) if warm else reps
            rec.begin(one_time=True)
            rec.reset_queries(pool)
            if fence_barriers:
                rec.barrier()
            rec.timestamp(pool, 0)
            for i in range(n):
                record(rec, i)
            if fence_barriers:
                rec.barrier()
            rec.timestamp(pool, 1)
            rec.end()
            fence.reset()
            submit(device, [rec.cb], fence)
            fence.wait()
            if not warm:
                times.append(pool.elapsed_ns() / n)
        return statistics.median(times)
    finally:
        pool.destroy()
        fence.destroy()
