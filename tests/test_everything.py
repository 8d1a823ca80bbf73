"""Segment everything: parity with the official automatic mask generators on the three
fixture models, the generator's stages on a stand-in model with known masks, NMS, and
bad input."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from anyseg.errors import InvalidInputError
from anyseg.io.masks import decode_rle, mask_to_box
from anyseg.models.features import ImageFeatures
from anyseg.models.mask_decoder import DecoderOutput
from anyseg.models.sam import PRESETS, build_sam
from anyseg.models.sam2 import build_sam2
from anyseg.models.vit import VIT_B
from anyseg.predictors import everything
from anyseg.predictors.everything import MaskGenerator, batched_nms, crop_boxes, layer_point_grids, nms

from parity import fixture_image, fixture_index, load_fixture_state_dict, mask_iou

SAM_VIT_SMALL = replace(
    PRESETS["sam_vit_b"],
    encoder=replace(VIT_B, embed_dim=192, depth=4, num_heads=3, global_attn_indexes=(1, 3)),
)
BUILDERS = {
    "sam2.1_hiera_tiny": lambda: build_sam2("sam2.1_hiera_t"),
    "sam_vit_small": lambda: build_sam(SAM_VIT_SMALL),
    "mobile_sam_vit_t": lambda: build_sam("mobile_sam_vit_t"),
}
OFF = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


# ------------------------------------------------------------------------------- parity


@pytest.fixture(scope="module")
def fixture_models(fixtures_dir):
    models = {}
    for key, build in BUILDERS.items():
        model = build()
        model.load_state_dict(load_fixture_state_dict(fixtures_dir / fixture_index(fixtures_dir)[key]["checkpoint"]))
        models[key] = model.eval().requires_grad_(False)
    return models


@pytest.mark.parametrize("key", list(BUILDERS))
def test_matches_official_generator(key, fixture_models, fixtures_dir):
    amg = fixture_index(fixtures_dir)[key]["amg"]
    expected = amg["records"]
    ref_masks = _amg_masks(fixtures_dir, amg)
    got = MaskGenerator(fixture_models[key], **amg["kwargs"]).generate(fixture_image(fixtures_dir, amg["image"]))
    assert len(got) == len(expected)
    unmatched = list(range(len(got)))
    for ref, ref_mask in zip(expected, ref_masks):
        # the anyseg mask from the same click and crop with the closest predicted IoU
        candidates = [i for i in unmatched if got[i]["point_coords"] == ref["point_coords"]
                      and got[i]["crop_box"] == ref["crop_box"]]
        assert candidates, ref
        i = min(candidates, key=lambda i: abs(got[i]["predicted_iou"] - ref["predicted_iou"]))
        unmatched.remove(i)
        assert mask_iou(got[i]["segmentation"], ref_mask) >= 0.99
        assert abs(got[i]["predicted_iou"] - ref["predicted_iou"]) <= 2e-3
        assert abs(got[i]["stability_score"] - ref["stability_score"]) <= 2e-3
        assert abs(got[i]["area"] - ref["area"]) <= 0.01 * ref["area"]
        assert got[i]["bbox"] == ref["bbox"]


@pytest.mark.parametrize("key", list(BUILDERS))
def test_bf16_generator_finds_the_official_masks(key, fixture_models, fixtures_dir):
    """The opt-in bf16 mode (encoder and decoder in bf16) runs the whole pipeline; most of
    its masks are the official ones (its accuracy is measured in benchmarks/)."""
    amg = fixture_index(fixtures_dir)[key]["amg"]
    got = MaskGenerator(fixture_models[key], precision="bf16", **amg["kwargs"]).generate(
        fixture_image(fixtures_dir, amg["image"]))
    ref_masks = _amg_masks(fixtures_dir, amg)
    assert got and all(r["segmentation"].dtype == bool for r in got)
    best = [max(mask_iou(r["segmentation"], ref) for r in got) for ref in ref_masks]
    assert np.median(best) >= 0.9


def _amg_masks(fixtures_dir, amg) -> np.ndarray:
    npz = np.load(fixtures_dir / amg["outputs"])
    shape = tuple(npz["masks_shape"])
    return np.unpackbits(npz["masks_bits"])[: int(np.prod(shape))].reshape(shape).astype(bool)


def test_sam2_m2m_refines_each_mask_with_itself(fixture_models, fixtures_dir):
    """``use_m2m``: each first-pass mask, clamped to +-32, is fed back with its click for
    one mask; the records carry the refined mask and score (checked with the image predictor)."""
    model = fixture_models["sam2.1_hiera_tiny"]
    image = fixture_image(fixtures_dir, "groceries")[100:260, 200:440]
    gen = MaskGenerator(model, points_per_side=1, use_m2m=True, **OFF)
    records = gen.generate(image)
    assert len(records) == 3
    pred = gen.predictor  # an ImagePredictor, still holding this (uncropped) image
    point = records[0]["point_coords"]
    first = pred.predict(points=point, labels=[1], multimask=True)
    refined = [pred.predict(points=point, labels=[1], mask_input=first.logits[k][None], multimask=False)
               for k in range(3)]
    for rec in records:
        k = int(np.argmin([abs(r.scores[0] - rec["predicted_iou"]) for r in refined]))
        assert abs(refined[k].scores[0] - rec["predicted_iou"]) <= 1e-5
        assert mask_iou(refined[k].masks[0], rec["segmentation"]) >= 0.999


# ---------------------------------------------------------------- a model with known masks


class DiscModel(torch.nn.Module):
    """Stand-in for SAM: a click at ``c`` gives three discs of radius 3, 6 and 12 model
    pixels (logit ``4 * (radius - distance)``) with predicted IoU 0.70, 0.80, 0.90. The
    middle one has a hole of radius 1.5 at the click, the largest a 2 x 2 island in the
    model input's top-right corner. With a mask prompt, it returns the prompt and IoU 0.5."""

    radii = (3.0, 6.0, 12.0)

    def __init__(self, family: str = "sam", size: int = 64) -> None:
        super().__init__()
        self.family, self.image_size, self.cfg = family, size, ("disc", family, size)
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    device = property(lambda self: self.anchor.device)
    dtype = property(lambda self: self.anchor.dtype)

    def encode_image(self, images):
        return ImageFeatures(images[:, :1, ::4, ::4])

    def keep_image(self, features, decoder=None):
        pass

    def predict_masks(self, features, coords=None, labels=None, boxes=None, mask_input=None, multimask=True,
                      decoder=None):
        if mask_input is not None:
            return DecoderOutput(mask_input.float(), torch.full((len(mask_input), 1), 0.5), None, None)
        s = self.image_size
        grid = torch.arange(s, dtype=torch.float32) + 0.5
        c = coords[:, 0].float()
        d = torch.hypot(grid[None, None, :] - c[:, 0, None, None], grid[None, :, None] - c[:, 1, None, None])
        logits = torch.stack([4 * (r - d) for r in self.radii], dim=1)
        logits[:, 1] = torch.minimum(logits[:, 1], 4 * (d - 1.5))
        logits[:, 2, :2, -2:] = 5.0
        iou = torch.tensor([[0.7, 0.8, 0.9]]).expand(len(c), -1)
        if not multimask:
            return DecoderOutput(logits[:, 2:], iou[:, 2:], None, None)
        return DecoderOutput(logits, iou, None, None)


IMAGE = np.random.default_rng(0).integers(0, 255, (96, 144, 3), dtype=np.uint8)  # 1.5 px per model px


def _box_iou(a, b) -> float:
    """IoU of two XYXY boxes, torchvision's way (no +1)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _xyxy(rec):
    x, y, w, h = rec["bbox"]
    return [x, y, x + w, y + h]


def test_records_describe_their_masks():
    records = MaskGenerator(DiscModel(), points_per_side=3, **OFF).generate(IMAGE)
    assert len(records) == 27
    for rec in records:
        mask = rec["segmentation"]
        assert mask.shape == IMAGE.shape[:2] and mask.dtype == bool
        assert rec["area"] == int(mask.sum())
        x0, y0, x1, y1 = mask_to_box(mask)
        assert rec["bbox"] == [x0, y0, x1 - x0, y1 - y0]
        assert rec["crop_box"] == [0, 0, 144, 96]
        (x, y), = rec["point_coords"]
        assert {x, y} <= {24.0, 72.0, 120.0, 16.0, 48.0, 80.0}
        assert round(rec["predicted_iou"], 6) in (0.7, 0.8, 0.9) and 0 <= rec["stability_score"] <= 1
    rle = MaskGenerator(DiscModel(), points_per_side=3, output_mode="coco_rle", **OFF).generate(IMAGE)
    assert all(np.array_equal(decode_rle(a["segmentation"]), b["segmentation"]) for a, b in zip(rle, records))


def test_thresholds_filter():
    records = MaskGenerator(DiscModel(), points_per_side=3, pred_iou_thresh=0.75, stability_score_thresh=0.8,
                            box_nms_thresh=1.0).generate(IMAGE)
    assert records and all(r["predicted_iou"] > 0.75 and r["stability_score"] >= 0.8 for r in records)
    everything_off = MaskGenerator(DiscModel(), points_per_side=3, **OFF).generate(IMAGE)
    expected = [r for r in everything_off if r["predicted_iou"] > 0.75 and r["stability_score"] >= 0.8]
    assert len(records) == len(expected)


def test_box_nms_keeps_the_best_of_overlapping_masks():
    records = MaskGenerator(DiscModel(), points_per_side=8, pred_iou_thresh=0, stability_score_thresh=0,
                            box_nms_thresh=0.3).generate(IMAGE)
    assert 0 < len(records) < 3 * 64
    boxes = [_xyxy(r) for r in records]
    assert all(_box_iou(a, b) <= 0.3 for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    # the big discs (IoU 0.9) are visited first
    assert records[0]["predicted_iou"] == pytest.approx(0.9)


def test_crops_drop_masks_on_inner_edges_and_dedupe_across_crops():
    gen = MaskGenerator(DiscModel(), points_per_side=4, crop_n_layers=1, crop_nms_thresh=0.5, **OFF)
    records = gen.generate(IMAGE)
    crops, _ = crop_boxes(IMAGE.shape[:2], 1, 512 / 1500)
    assert len(crops) == 5 and {tuple(r["crop_box"]) for r in records} > {(0, 0, 144, 96)}
    for rec in records:
        cx, cy, cw, ch = rec["crop_box"]
        x0, y0, x1, y1 = _xyxy(rec)
        for edge, value, image_edge in ((x0, cx, 0), (y0, cy, 0), (x1, cx + cw, 144), (y1, cy + ch, 96)):
            assert abs(edge - value) > 20 or abs(edge - image_edge) <= 20
    boxes = [_xyxy(r) for r in records]
    assert all(_box_iou(a, b) <= 0.5 for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_sam1_min_region_area_fills_holes_and_removes_islands():
    plain = MaskGenerator(DiscModel(), points_per_side=2, **OFF).generate(IMAGE)
    cleaned = MaskGenerator(DiscModel(), points_per_side=2, min_mask_region_area=30, **OFF).generate(IMAGE)
    assert len(cleaned) == len(plain)
    assert {r["area"] for r in cleaned} != {r["area"] for r in plain}
    eight = np.ones((3, 3), bool)
    for rec in cleaned:
        mask = rec["segmentation"]
        assert rec["area"] == mask.sum() and rec["bbox"] == [float(v) for v in _xywh(mask_to_box(mask))]
        islands = np.bincount(ndimage.label(mask, eight)[0].ravel())[1:]
        holes = np.bincount(ndimage.label(~mask, eight)[0].ravel())[1:]
        assert (islands >= 30).all() or len(islands) == 1
        assert (holes >= 30).all()


def _xywh(box):
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]


def test_sam2_min_region_area_works_on_low_res_logits():
    """SAM 2: holes and islands of at most that many *low-res* pixels are flipped before
    upscaling; the click at the hole's centre ends up inside the mask."""
    plain = MaskGenerator(DiscModel("sam2"), points_per_side=1, **OFF).generate(IMAGE)
    filled = MaskGenerator(DiscModel("sam2"), points_per_side=1, min_mask_region_area=8, **OFF).generate(IMAGE)
    ring = [r for r in plain if r["predicted_iou"] == pytest.approx(0.8)][0]["segmentation"]
    disc = [r for r in filled if r["predicted_iou"] == pytest.approx(0.8)][0]["segmentation"]
    big = [r for r in filled if r["predicted_iou"] == pytest.approx(0.9)][0]["segmentation"]
    assert not ring[48, 72] and disc[48, 72]
    assert not big[:2, -2:].any()  # the 4-pixel island is gone


def test_sam2_multimask_output_and_m2m_options():
    single = MaskGenerator(DiscModel("sam2"), points_per_side=2, multimask_output=False, **OFF).generate(IMAGE)
    assert len(single) == 4 and all(r["predicted_iou"] == pytest.approx(0.9) for r in single)
    refined = MaskGenerator(DiscModel("sam2"), points_per_side=2, use_m2m=True, **OFF).generate(IMAGE)
    assert len(refined) == 12 and all(r["predicted_iou"] == 0.5 for r in refined)


def test_family_defaults():
    assert MaskGenerator(DiscModel("sam")).pred_iou_thresh == 0.88
    assert MaskGenerator(DiscModel("sam2")).pred_iou_thresh == 0.8


# ----------------------------------------------------------------------------- geometry


def test_grids_and_crops_as_the_official_generators():
    grids = layer_point_grids(4, 2, 2)
    assert [len(g) for g in grids] == [16, 4, 1]
    np.testing.assert_array_equal(grids[0][:5], [[0.125, 0.125], [0.375, 0.125], [0.625, 0.125],
                                                 [0.875, 0.125], [0.125, 0.375]])
    boxes, layers = crop_boxes((534, 800), 1, 512 / 1500)
    assert boxes == [[0, 0, 800, 534], [0, 0, 491, 358], [0, 176, 491, 534], [309, 0, 800, 358],
                     [309, 176, 800, 534]]
    assert layers == [0, 1, 1, 1, 1]
    assert len(crop_boxes((534, 800), 2, 512 / 1500)[0]) == 1 + 4 + 16


def _reference_nms(boxes, scores, thr):
    """torchvision's algorithm, spelled out (stable order on ties)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep, dead = [], set()
    for n, i in enumerate(order):
        if i in dead:
            continue
        keep.append(i)
        for j in order[n + 1 :]:
            if _box_iou(boxes[i], boxes[j]) > thr:
                dead.add(j)
    return keep


def test_nms_semantics():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 5], [5, 5, 5, 5], [5, 5, 5, 5]])
    scores = np.array([0.8, 0.9, 0.7, 0.95, 0.1, 0.1], dtype=np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [3, 1, 2, 4, 5]  # IoU exactly 0.5 is kept; empty boxes never overlap
    assert nms(boxes, scores, 0.49).tolist() == [3, 2, 4, 5]
    assert nms(boxes[:2], np.array([0.5, 0.5], np.float32), 0.5).tolist() == [0]  # ties: the first


@pytest.mark.parametrize("n", [300, 1200])
def test_batched_nms_matches_reference(n):
    rng = np.random.default_rng(n)
    xy = rng.integers(0, 200, (n, 2))
    boxes = np.concatenate([xy, xy + rng.integers(1, 60, (n, 2))], axis=1)
    scores = rng.choice(np.linspace(0, 1, 50), n).astype(np.float32)  # many ties
    keep = batched_nms(boxes, scores, 0.4)
    ref = _reference_nms(boxes.tolist(), scores.tolist(), 0.4)
    assert sorted(keep.tolist()) == sorted(ref)
    assert np.all(np.diff(scores[keep]) <= 0)
    if n <= 1000:  # one NMS: the visiting order
        assert keep.tolist() == ref


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"points_per_side": 0}, "points_per_side must be in [1, 256]"),
        ({"points_per_side": 1000}, "points_per_side must be in [1, 256]"),
        ({"points_per_side": 2.5}, "points_per_side must be an integer"),
        ({"points_per_batch": 0}, "points_per_batch must be >= 1"),
        ({"stability_score_thresh": 1.5}, "stability_score_thresh must be <= 1.0"),
        ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh must be a finite number"),
        ({"box_nms_thresh": -0.1}, "box_nms_thresh must be in [0.0, 1.0]"),
        ({"crop_nms_thresh": 2}, "crop_nms_thresh must be in [0.0, 1.0]"),
        ({"crop_overlap_ratio": 1.5}, "crop_overlap_ratio must be in [0.0, 1.0]"),
        ({"stability_score_offset": -1}, "stability_score_offset must be >= 0.0"),
        ({"min_mask_region_area": -5}, "min_mask_region_area must be >= 0.0"),
        ({"crop_n_layers": 9}, "crop_n_layers must be in [0, 4]"),
        ({"crop_n_layers": 2, "points_per_side": 3, "crop_n_points_downscale_factor": 2}, "leaves no points"),
        ({"output_mode": "polygons"}, "output_mode must be one of binary_mask, coco_rle"),
        ({"points_per_side": None}, "exactly one of points_per_side and point_grids"),
        ({"point_grids": [np.array([[0.5, 0.5]])]}, "exactly one of points_per_side and point_grids"),
        ({"points_per_side": None, "point_grids": [np.array([[0.5, 1.5]])]}, "in [0, 1] (fractions of the crop)"),
        ({"points_per_side": None, "point_grids": [np.zeros((0, 2))]}, "shape"),
        ({"points_per_side": None, "point_grids": [np.zeros((1, 2))], "crop_n_layers": 1}, "list of 2 grids"),
        ({"use_m2m": True}, "use_m2m is an option of the SAM 2 generator"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        MaskGenerator(DiscModel("sam"), **kwargs)


def test_not_a_model():
    with pytest.raises(InvalidInputError, match="needs a SAM or SAM 2 model"):
        MaskGenerator(torch.nn.Linear(2, 2))


def test_explicit_point_grids():
    grid = np.array([[0.25, 0.5], [0.75, 0.5]])
    records = MaskGenerator(DiscModel(), points_per_side=None, point_grids=[grid], **OFF).generate(IMAGE)
    assert sorted({tuple(r["point_coords"][0]) for r in records}) == [(36.0, 48.0), (108.0, 48.0)]


@pytest.mark.parametrize(
    "shape, kwargs, message",
    [
        ((0, 0, 3), {}, "empty"),
        ((1, 1, 3), {}, "at least 16 per side"),
        ((10, 200, 3), {}, "at least 16 per side"),
        ((16, 1100, 3), {}, "at most 64 times"),
        ((40, 40, 3), {"crop_n_layers": 2}, "too small for crop_n_layers=2"),
        ((40, 40), {}, None),  # greyscale is fine
    ],
)
def test_bad_images(shape, kwargs, message):
    gen = MaskGenerator(DiscModel(), points_per_side=2, **kwargs)
    image = np.zeros(shape, dtype=np.uint8)
    if message is None:
        assert isinstance(gen.generate(image), list)
        return
    with pytest.raises(InvalidInputError, match=message):
        gen.generate(image)


def test_huge_image_is_refused(monkeypatch):
    monkeypatch.setattr(everything, "MAX_IMAGE_PIXELS", 40 * 40)
    with pytest.raises(InvalidInputError, match="at most 1,600: downscale it first"):
        MaskGenerator(DiscModel()).generate(np.zeros((41, 40, 3), np.uint8))


def test_float_image_is_refused():
    with pytest.raises(InvalidInputError, match="uint8"):
        MaskGenerator(DiscModel()).generate(np.zeros((32, 32, 3), np.float32))
