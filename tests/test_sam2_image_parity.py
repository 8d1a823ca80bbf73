"""SAM 2.1 image predictor against the official outputs in ``../shared/fixtures``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anyseg import ImagePredictor
from anyseg.models.sam2 import build_sam2
from anyseg.predictors.transforms import Sam2Transform

from parity import fixture_image, fixture_index, image_cases, load_fixture_state_dict, mask_iou, unpack_masks

KEY = "sam2.1_hiera_tiny"


@pytest.fixture(scope="module")
def model(fixtures_dir):
    m = build_sam2("sam2.1_hiera_t")
    m.load_state_dict(load_fixture_state_dict(fixtures_dir / fixture_index(fixtures_dir)[KEY]["checkpoint"]))
    return m.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def outputs(fixtures_dir):
    return np.load(fixtures_dir / fixture_index(fixtures_dir)[KEY]["image_outputs"])


@pytest.fixture(scope="module")
def predictors(model, fixtures_dir):
    """One predictor per fixture image, embedded once."""
    preds = {}
    for name in fixture_index(fixtures_dir)[KEY]["image_cases"]:
        p = ImagePredictor(model)
        p.set_image(fixture_image(fixtures_dir, name))
        preds[name] = p
    return preds


def test_encoder_input_and_features(predictors, outputs, fixtures_dir):
    name = next(iter(predictors))
    ref_input = outputs[f"{name}/features/input_image"].astype(np.float32)
    ours = Sam2Transform().image(fixture_image(fixtures_dir, name))[None].numpy()
    assert np.abs(ours - ref_input).max() <= 5e-3

    pred = predictors[name]
    feats = pred.features()
    embed = (feats.embed + pred.model.no_mem_embed.reshape(1, -1, 1, 1)).numpy()
    assert np.abs(embed - outputs[f"{name}/features/image_embed"].astype(np.float32)).max() <= 5e-3
    for i, f in enumerate(feats.high_res):
        ref = outputs[f"{name}/features/high_res_feats_{i}"].astype(np.float32)
        assert np.abs(f.numpy() - ref).max() <= 5e-3


def _run_case(pred, case, outputs, image):
    mask_input = None
    if case.get("mask_from"):
        prev = outputs[f"{image}/{case['mask_from']}/low_res_logits"]
        best = int(np.argmax(outputs[f"{image}/{case['mask_from']}/iou"]))
        mask_input = prev[best][None]
    return pred.predict(
        points=case.get("point_coords"),
        labels=case.get("point_labels"),
        box=case.get("box"),
        mask_input=mask_input,
        multimask=case["multimask"],
    )


def test_every_image_case(predictors, outputs, fixtures_dir):
    for image, case in image_cases(fixtures_dir, KEY):
        prefix = f"{image}/{case['name']}"
        out = _run_case(predictors[image], case, outputs, image)
        ref_logits = outputs[f"{prefix}/low_res_logits"]
        ref_iou = outputs[f"{prefix}/iou"]
        ref_masks = unpack_masks(outputs, prefix)
        assert out.logits.shape == ref_logits.shape, prefix
        assert np.abs(out.logits - ref_logits).max() <= 2e-3, prefix
        assert np.abs(out.scores - ref_iou).max() <= 2e-3, prefix
        assert out.masks.shape == ref_masks.shape, prefix
        flat_ours = out.masks.reshape(-1, *out.masks.shape[-2:])
        flat_ref = ref_masks.reshape(-1, *ref_masks.shape[-2:])
        for a, b in zip(flat_ours, flat_ref):
            assert mask_iou(a, b) >= 0.995, prefix
