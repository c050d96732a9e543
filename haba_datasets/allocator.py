"""Keep freed memory in the process, so large CPU tensors are not mapped and zero-filled afresh.

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and returns it to the kernel on ``free``. A distillation step allocates and frees
activations of ~50 MB dozens of times, so each one costs page faults and the kernel's zero fill
of every page: about a third of an MTT iteration's CPU time at CIFAR-10 IPC 10
(``benchmarks/distill_step.py`` measures it). :func:`keep_freed_memory` tells glibc to serve all
blocks from its heap and to keep freed memory for reuse instead.

The command line calls it at start-up (``HABA_KEEP_FREED_MEMORY=0`` opts out). It changes the
whole process, so the library never calls it on import; call it yourself in a script that
distils or evaluates on the CPU. Elsewhere than glibc (macOS, Windows, musl) it does nothing.
The price is memory: the process's resident memory stays at its peak until it exits, and freed
blocks that no later request fits make the heap grow past what is live at once (an MTT run with
``checkpoint: true`` at CIFAR-10 IPC 10 peaked at 3.6-6.8 GB instead of 1.1-1.5 GB). Where memory
is tighter than time, set ``HABA_KEEP_FREED_MEMORY=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (glibc malloc.h)
_applied = False


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep and reuse freed memory (no ``mmap`` per large block, no trimming).

    Returns:
        True when the setting is in effect (now or from an earlier call); False where the C library
        is not glibc, or when ``HABA_KEEP_FREED_MEMORY=0`` is set.

    Example::

        >>> from haba_datasets.allocator import keep_freed_memory
        >>> keep_freed_memory()  # on Linux with glibc
        True
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("HABA_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no glibc: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; a trim threshold of -1 turns trimming off (mallopt(3))
    _applied = mallopt(_M_TRIM_THRESHOLD, -1) == 1 and mallopt(_M_MMAP_MAX, 0) == 1
    return _applied
