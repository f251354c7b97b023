"""Giving the process's freed heap back to the operating system."""

import ctypes
import ctypes.util
import functools
from typing import Optional

import pyarrow as pa


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Optional[ctypes._CFuncPtr]:
    libc = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None


def trim_heap() -> bool:
    """Returns the free memory of Arrow's memory pool and of glibc's heaps to the
    system (``malloc_trim(0)``), and says whether it could do the latter. Both keep
    what a process frees, where only they can use it again: glibc's heaps serve
    malloc, not Python's own object arenas nor another heap's threads, and Arrow's
    pool (mimalloc or jemalloc) serves Arrow alone. So after a large release (an
    engine unloaded, a slice's pipeline, a Parquet read) the resident size stays at
    the high mark unless trimmed. glibc's part does nothing (False) where the C
    library has no ``malloc_trim`` (musl, macOS)."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
