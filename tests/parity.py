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


def embed_fixture_images(predictor_factory, fixtures_dir: Path, model_key: str) -> dict:
    """One predictor per image of a fixture model's image cases, each embedded once."""
    preds = {}
    for name in fixture_index(fixtures_dir)[model_key]["image_cases"]:
        preds[name] = predictor_factory()
        preds[name].set_image(fixture_image(fixtures_dir, name))
    return preds


def run_image_case(pred, case: dict, outputs, image: str):
    """Replay one official ``predict`` call (``refine_mask_input`` feeds the official
    low-res logits of the best mask of ``mask_from``)."""
    mask_input = None
    if case.get("mask_from"):
        prev = f"{image}/{case['mask_from']}"
        mask_input = outputs[f"{prev}/low_res_logits"][int(np.argmax(outputs[f"{prev}/iou"]))][None]
    return pred.predict(
        points=case.get("point_coords"),
        labels=case.get("point_labels"),
        box=case.get("box"),
        mask_input=mask_input,
        multimask=case["multimask"],
    )


def assert_matches_official(out, outputs, prefix: str) -> None:
    """Low-res logits and predicted IoUs within 2e-3, full-resolution masks at IoU >= 0.995."""
    ref_logits = outputs[f"{prefix}/low_res_logits"]
    ref_masks = unpack_masks(outputs, prefix)
    assert out.logits.shape == ref_logits.shape, prefix
    assert np.abs(out.logits - ref_logits).max() <= 2e-3, prefix
    assert np.abs(out.scores - outputs[f"{prefix}/iou"]).max() <= 2e-3, prefix
    assert out.masks.shape == ref_masks.shape, prefix
    for a, b in zip(out.masks.reshape(-1, *out.masks.shape[-2:]), ref_masks.reshape(-1, *ref_masks.shape[-2:])):
        assert mask_iou(a, b) >= 0.995, prefix
