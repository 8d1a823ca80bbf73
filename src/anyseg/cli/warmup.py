"""``anyseg warmup``: compile the CPU loops now, not on the first image and click."""

from __future__ import annotations

import argparse
import time


def register(sub) -> None:
    p = sub.add_parser(
        "warmup",
        help="compile anyseg's CPU loops now (once per install), so the first click does not wait for it",
        description="anyseg's CPU loops are compiled by numba on first use after an install or upgrade "
        "(20-30 s on 2 cores) and then read from numba's cache on disk. This compiles them now: run it "
        "once after installing, e.g. in a container image's build. NUMBA_CACHE_DIR sets where the cache goes.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anyseg.errors import AnysegError
    from anyseg.kernels import loops_cached
    from anyseg.models.mask_decoder import compile_loops

    if not loops_cached():  # compiling now would be lost with this process
        raise AnysegError("numba finds no writable folder to cache anyseg's compiled loops in: set NUMBA_CACHE_DIR "
                          "to one (in every process that runs anyseg), then run anyseg warmup again")
    start = time.perf_counter()
    compile_loops()
    print(f"anyseg's CPU loops are compiled and cached ({time.perf_counter() - start:.1f} s)")
    return 0
