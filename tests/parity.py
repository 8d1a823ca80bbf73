"""Helpers to read the official-output fixtures (``../shared/fixtures``)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image


@lru_cache(maxsize=None)
def fixture_index(fixtures_dir: Path) -> dict:
    return json.loads((fixtures_dir / "fixtures.json").read_text())


def load_fixture_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """An official-format checkpoint (SAM 2: ``{"model": sd}``, SAM 1: bare), as float32."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = sd.get("model", sd)
    return {k: v.float() for k, v in sd.items()}


def unpack_masks(npz, prefix: str) -> np.ndarray:
    shape = tuple(npz[f"{prefix}/masks_shape"])
    bits = np.unpackbits(npz[f"{prefix}/masks_bits"])[: int(np.prod(shape))]
    return bits.reshape(shape).astype(bool)


def fixture_image(fixtures_dir: Path, name: str) -> np.ndarray:
    files = fixture_index(fixtures_dir)["_about"]["images"]
    return np.asarray(Image.open(fixtures_dir / "images" / files[name]).convert("RGB"))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def image_cases(fixtures_dir: Path, model_key: str):
    """``(image_name, case_dict)`` for every image case of a fixture model."""
    cases = fixture_index(fixtures_dir)[model_key]["image_cases"]
    return [(image, case) for image, lst in cases.items() for case in lst]
