"""Shared helpers for the benchmarks: timing, machine description, result files."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from anyseg.bench import machine

RESULTS = Path(__file__).resolve().parent / "results"


def timeit(fn, repeat: int, warmup: int = 1) -> dict:
    """Median and min wall time of ``fn()`` in seconds, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": repeat}


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
