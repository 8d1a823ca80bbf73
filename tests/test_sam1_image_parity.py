"""SAM 1 (a reduced ViT) and MobileSAM through the unchanged :class:`ImagePredictor`,
against the official outputs in ``../shared/fixtures``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from anyseg import ImagePredictor
from anyseg.loading import infer_preset
from anyseg.models.sam import PRESETS, SamConfig, build_sam
from anyseg.models.vit import VIT_B
from anyseg.predictors.transforms import Sam1Transform

from parity import (
    assert_matches_official,
    embed_fixture_images,
    fixture_image,
    fixture_index,
    image_cases,
    load_fixture_state_dict,
    run_image_case,
)

# The `sam_vit_small` fixture: ViT-B with embed 192, depth 4, 3 heads, global attention in
# blocks 1 and 3 (fixtures.json -> sam_vit_small -> config).
SAM_VIT_SMALL = replace(
    PRESETS["sam_vit_b"],
    encoder=replace(VIT_B, embed_dim=192, depth=4, num_heads=3, global_attn_indexes=(1, 3)),
)
CONFIGS: dict[str, SamConfig] = {"sam_vit_small": SAM_VIT_SMALL, "mobile_sam_vit_t": PRESETS["mobile_sam_vit_t"]}


@pytest.fixture(scope="module", params=list(CONFIGS))
def key(request):
    return request.param


@pytest.fixture(scope="module")
def state_dict(fixtures_dir, key):
    return load_fixture_state_dict(fixtures_dir / fixture_index(fixtures_dir)[key]["checkpoint"])


@pytest.fixture(scope="module")
def model(key, state_dict):
    m = build_sam(CONFIGS[key])
    m.load_state_dict(state_dict)
    return m.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def outputs(fixtures_dir, key):
    return np.load(fixtures_dir / fixture_index(fixtures_dir)[key]["image_outputs"])


@pytest.fixture(scope="module")
def predictors(model, fixtures_dir, key):
    """One predictor per fixture image, embedded once."""
    return embed_fixture_images(lambda: ImagePredictor(model), fixtures_dir, key)


def test_config_and_keys(key, state_dict):
    if key == "mobile_sam_vit_t":
        assert infer_preset(state_dict) == ("sam", "mobile_sam_vit_t")
    else:  # the reduced ViT is no preset: recognised as none of them
        assert infer_preset(state_dict) is None
        assert SAM_VIT_SMALL.encoder.embed_dim == 192 and SAM_VIT_SMALL.embedding_size == 64


def test_encoder_input_and_features(predictors, outputs, fixtures_dir):
    name = next(iter(predictors))
    ref_input = outputs[f"{name}/features/input_image"].astype(np.float32)
    ours = Sam1Transform().image(fixture_image(fixtures_dir, name))[None].numpy()
    assert np.abs(ours - ref_input).max() <= 5e-3
    embed = predictors[name].features().embed.numpy()
    assert np.abs(embed - outputs[f"{name}/features/image_embed"].astype(np.float32)).max() <= 5e-3


def test_every_image_case(predictors, outputs, fixtures_dir, key):
    for image, case in image_cases(fixtures_dir, key):
        prefix = f"{image}/{case['name']}"
        assert_matches_official(run_image_case(predictors[image], case, outputs, image), outputs, prefix)


def test_box_equals_two_corner_points(model, predictors):
    """SAM 1's separate box embedding is the corner points with labels 2 and 3."""
    feats = next(iter(predictors.values())).features()
    box = torch.tensor([[100.0, 120.0, 600.0, 500.0]])
    pe = model.prompt_encoder
    corners = pe.pe_layer.forward_with_coords(box.reshape(1, 2, 2) + 0.5, pe.input_size)
    corners[:, 0] += pe.point_embeddings[2].weight[0]
    corners[:, 1] += pe.point_embeddings[3].weight[0]
    coords, labels = model.prompt_tokens(None, None, box)
    sparse, _ = pe(coords, labels, None)
    torch.testing.assert_close(sparse, corners, rtol=0, atol=0)
    assert model.predict_masks(feats, boxes=box).masks.shape == (1, 3, 256, 256)
