"""Keeping the operator's memory where its data is (glibc malloc tuning).

glibc gives each thread that allocates its own malloc arena, and keeps freed memory
in them: with pools of threads parsing JSON, the operator's RSS grows by arenas and
fragments, not by data.
"""

from __future__ import annotations

import contextlib
import ctypes

M_ARENA_MAX = -8


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return None


def few_malloc_arenas() -> None:
    """Two arenas (what MALLOC_ARENA_MAX=2 would set); call before any thread starts."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.mallopt(M_ARENA_MAX, 2)
