"""SAM 2.1 image predictor against the official outputs in ``../shared/fixtures``."""

from __future__ import annotations

import numpy as np
import pytest

from anyseg import ImagePredictor
from anyseg.models.sam2 import build_sam2
from anyseg.predictors.transforms import Sam2Transform

from parity import (
    assert_matches_official,
    embed_fixture_images,
    fixture_image,
    fixture_index,
    image_cases,
    load_fixture_state_dict,
    run_image_case,
)

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
    return embed_fixture_images(lambda: ImagePredictor(model), fixtures_dir, KEY)


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


def test_every_image_case(predictors, outputs, fixtures_dir):
    for image, case in image_cases(fixtures_dir, KEY):
        prefix = f"{image}/{case['name']}"
        assert_matches_official(run_image_case(predictors[image], case, outputs, image), outputs, prefix)
