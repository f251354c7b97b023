"""trim_heap hands what a run freed back to the system, Arrow's pool included."""

import gc

import numpy as np
import pyarrow as pa

from common.heap import trim_heap

MIB = 1 << 20


def resident_mib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))


def test_memory_arrow_freed_goes_back_to_the_system():
    # What a Parquet read or write leaves: many buffers of Arrow's pool, used and freed.
    buffers = [pa.allocate_buffer(MIB) for _ in range(200)]
    for buffer in buffers:
        np.frombuffer(buffer, dtype=np.uint8)[:] = 1  # touched, so resident
    del buffers
    gc.collect()
    freed = resident_mib()
    trim_heap()
    # Arrow's pool keeps freed pages for itself until told (about 200 MiB here).
    assert resident_mib() < freed - 150
