"""Presenting evaluation results: Markdown tables, JSON and CSV files, progress bars."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tqdm import tqdm


def format_value(value: object, digits: int = 4) -> str:
    """A table cell: floats with ``digits`` decimals (``nan`` stays visible), others as text."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]], digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table; numeric columns are right-aligned."""
    rows = [[format_value(v, digits) for v in row] for row in rows]
    numeric = [
        bool(rows) and all(_is_number(r[i]) for r in rows) for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + (":" if num else "-") for w, num in zip(widths, numeric)]
    return "\n".join([line(headers), line(rule), *(line(r) for r in rows)])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_json(path: str | Path, data: object) -> Path:
    """Write ``data`` as indented JSON (NaN written as ``NaN``, as Python's json does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_csv(path: str | Path, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write a CSV file with a header row (full-precision values)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows(rows)
    return path


def progress_bar(description: str, enabled: bool | None = None) -> Callable[[Iterable, int], Iterable]:
    """A ``progress(iterable, total)`` wrapper drawing a tqdm bar on stderr.

    ``enabled=None`` shows it only on a terminal; ``False`` never.
    """

    def wrap(iterable: Iterable, total: int) -> Iterable:
        disable = None if enabled is None else not enabled
        return tqdm(iterable, total=total, desc=description, unit="it", disable=disable, leave=False)

    return wrap
