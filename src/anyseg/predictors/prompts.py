"""Validation of user prompts shared by the predictors."""

from __future__ import annotations

import numpy as np

from anyseg.errors import InvalidInputError


def as_float_array(value, name: str) -> np.ndarray:
    """``value`` as a finite float32 array, or a clear error naming ``name``."""
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be numeric") from None
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{name} contains NaN or infinite values")
    return arr


def check_inside(xy: np.ndarray, h: int, w: int, what: str, where: str = "image") -> None:
    """Every (x, y) row of ``xy`` must lie in the ``w x h`` frame: 0 <= x <= W, 0 <= y <= H."""
    flat = xy.reshape(-1, 2)
    bad = (flat[:, 0] < 0) | (flat[:, 0] > w) | (flat[:, 1] < 0) | (flat[:, 1] > h)
    if bad.any():
        x, y = flat[np.argmax(bad)]
        raise InvalidInputError(f"{what} ({x:g}, {y:g}) lies outside the {w}x{h} {where}")
