"""Process-wide memory settings anyseg makes when it is imported (torch on the CPU).

An encode allocates and frees buffers of tens to hundreds of MB, layer after layer. By
default glibc serves each with a fresh ``mmap`` and returns it on free, so every buffer's
pages fault in again, zero-filled, at each use: 15-20% of an encode (README, Performance).
:func:`keep_freed_memory` makes malloc serve them from its heap and keep what is freed for
the next one; the resident size stays at the largest working set instead of falling back
between calls. Where the environment already sets a threshold (glibc reads these variables
itself), anyseg leaves malloc alone: ``MALLOC_MMAP_THRESHOLD_=131072`` restores glibc's
default behaviour.
"""

from __future__ import annotations

import ctypes
import os
import sys

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
"""glibc's variables for the settings :func:`keep_freed_memory` makes: buffers under 1 GiB
come from the heap, and up to 2 GiB of freed heap top is kept. A process started with them
(the official side of ``anyseg bench``) behaves the same from its start."""

in_force: dict[str, str] = {}
"""The malloc variables in force in this process: :data:`MALLOC_ENV` once
:func:`keep_freed_memory` applied it, the environment's own where it sets them, else empty."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


def huge_page_buffers() -> None:
    """Ask torch's CPU allocator to put buffers of 2 MB and more on transparent huge pages:
    far fewer TLB misses when a click's buffers come back cold from idle, 3-5% of a click
    (benchmarks/README.md). torch reads the variable once, so this works only before torch
    is imported; ``THP_MEM_ALLOC_ENABLE=0`` in the environment turns it off."""
    if "torch" not in sys.modules:
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def keep_freed_memory() -> dict[str, str]:
    """Apply :data:`MALLOC_ENV` to this process with ``mallopt`` (glibc only; nothing where
    the environment sets either variable). Returns (and records in :data:`in_force`) the
    malloc variables in force."""
    given = {name: os.environ[name] for name in MALLOC_ENV if name in os.environ}
    if not given and _mallopt_all():
        given = dict(MALLOC_ENV)
    in_force.clear()
    in_force.update(given)
    return given


def _mallopt_all() -> bool:
    """``mallopt`` of both :data:`MALLOC_ENV` settings; False where this is not glibc."""
    if not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the threshold first: once it is set, malloc stops adjusting both thresholds itself
    return bool(mallopt(_M_MMAP_THRESHOLD, int(MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]))
                and mallopt(_M_TRIM_THRESHOLD, int(MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"])))
