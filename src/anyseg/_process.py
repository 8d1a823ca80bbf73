"""Process-wide settings anyseg makes when it is imported (torch on the CPU): memory, and the
thread count in a container with a CPU quota (:func:`fit_threads_to_quota`).

An encode allocates and frees buffers of tens to hundreds of MB, layer after layer. By
default glibc serves each with a fresh ``mmap`` and returns it on free, so every buffer's
pages fault in again, zero-filled, at each use: 15-20% of an encode (docs/performance.md).
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
    (docs/performance.md). torch reads the variable once, so this works only before torch
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


def cpu_quota(root: str = "/sys/fs/cgroup", membership: str = "/proc/self/cgroup") -> int | None:
    """The CPUs this process's cgroup may use at once by its CPU quota (a container's
    ``--cpus``, a Kubernetes CPU limit), rounded up; None where it has none. The lowest of
    cgroup v2's ``cpu.max`` and v1's ``cpu.cfs_quota_us / cpu.cfs_period_us`` along the
    process's group (as ``membership`` lists it) and those above it (in a container, up to
    the root it sees)."""

    def ratio(path: str, v2: bool) -> int | None:
        try:
            if v2:
                with open(os.path.join(root, path, "cpu.max")) as f:
                    quota, period = f.read().split()
            else:
                with open(os.path.join(root, path, "cpu.cfs_quota_us")) as f, \
                        open(os.path.join(root, path, "cpu.cfs_period_us")) as g:
                    quota, period = f.read().strip(), g.read().strip()
            return None if quota == "max" or int(quota) <= 0 else max(1, -(-int(quota) // int(period)))
        except (OSError, ValueError):
            return None

    groups = {}  # controller ("" for v2's unified tree) -> the process's group
    try:
        with open(membership) as f:
            for line in f:
                _, controllers, group = line.rstrip("\n").split(":", 2)
                groups.update(dict.fromkeys(controllers.split(","), group))
    except (OSError, ValueError):
        pass

    def upwards(group: str) -> list[str]:  # the group, its parents, the root
        parts = [p for p in group.split("/") if p]
        return ["/".join(parts[:k]) for k in range(len(parts), -1, -1)]

    found = [ratio(path, v2=True) for path in upwards(groups.get("", "/"))]
    found += [ratio(os.path.join("cpu", path), v2=False) for path in upwards(groups.get("cpu", "/"))]
    found = [q for q in found if q is not None]
    return min(found) if found else None


def _visible_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def usable_cpus() -> int:
    """The CPUs this process can run on (its affinity), capped by its CPU quota."""
    visible = _visible_cpus()
    return min(visible, cpu_quota() or visible)


def fit_threads_to_quota() -> int | None:
    """Where the CPU quota (:func:`cpu_quota`) allows fewer CPUs than the process can see and
    ``OMP_NUM_THREADS`` is not set, set it to the quota (torch reads it when it starts; if it
    has started, its thread count is set too) and return the quota; else None. Torch counts
    the CPUs it sees, in a container the host's: its threads would wait on each other's
    slices of the quota, many times slower."""
    quota = cpu_quota()
    if quota is None or quota >= _visible_cpus() or "OMP_NUM_THREADS" in os.environ:
        return None
    os.environ["OMP_NUM_THREADS"] = str(quota)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() > quota:
        torch.set_num_threads(quota)
    return quota
