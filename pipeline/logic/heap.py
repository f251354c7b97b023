"""Giving the process's freed heap back to the operating system."""

import ctypes
import ctypes.util
import functools
from typing import Optional


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Optional[ctypes._CFuncPtr]:
    libc = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None


def trim_heap() -> bool:
    """Returns the free memory of glibc's heaps to the system (``malloc_trim(0)``) and
    says whether it could. glibc keeps what a process frees in its heaps, where only
    malloc can use it again: not Python's own object arenas, nor another heap's
    threads. So after a large release (an engine unloaded, a slice's pipeline) the
    resident size stays at the high mark unless trimmed. Does nothing (False) where
    the C library has no ``malloc_trim`` (musl, macOS)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
