"""ImagePredictor behaviour that needs no official weights: shapes, batching, the
embedding cache, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from anyseg import AnysegError, ImagePredictor, InvalidInputError
from anyseg.models.sam import build_sam
from anyseg.models.sam2 import build_sam2

H, W = 240, 320


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_sam2("sam2.1_hiera_t").eval().requires_grad_(False)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def pred(model, image):
    p = ImagePredictor(model)
    p.set_image(image)
    return p


def test_shapes_single_and_multimask(pred):
    out = pred.predict(points=[[100, 120]], labels=[1])
    assert out.masks.shape == (3, H, W) and out.masks.dtype == bool
    assert out.scores.shape == (3,) and out.logits.shape == (3, 256, 256)
    one = pred.predict(points=[[100, 120], [10, 10]], labels=[1, 0], multimask=False)
    assert one.masks.shape == (1, H, W)
    refined = pred.predict(points=[[100, 120]], labels=[1], mask_input=out.logits[out.best][None], multimask=False)
    assert refined.masks.shape == (1, H, W)


def test_batched_boxes_equal_one_by_one(pred):
    boxes = np.array([[10, 10, 100, 100], [50, 60, 300, 200]], dtype=np.float32)
    batched = pred.predict(box=boxes, multimask=False)
    assert batched.masks.shape == (2, 1, H, W) and batched.logits.shape == (2, 1, 256, 256)
    for i, b in enumerate(boxes):
        single = pred.predict(box=b, multimask=False)
        np.testing.assert_allclose(single.logits, batched.logits[i], atol=1e-4)


def test_pil_input_and_image_batch(model, image, pred):
    p = ImagePredictor(model)
    p.set_images([Image.fromarray(image), image[:100, :200]])
    a = p.predict(points=[[100, 120]], labels=[1], image=0)
    np.testing.assert_allclose(a.logits, pred.predict(points=[[100, 120]], labels=[1]).logits, atol=1e-3)
    b = p.predict(points=[[50, 50]], labels=[1], image=1)
    assert b.masks.shape == (3, 100, 200)
    with pytest.raises(InvalidInputError, match="out of range"):
        p.predict(points=[[5, 5]], labels=[1], image=2)


def test_embedding_round_trip(pred, model, tmp_path):
    path = tmp_path / "truck.emb"
    pred.save_embedding(path)
    fresh = ImagePredictor(model)
    fresh.load_embedding(path)
    a = pred.predict(points=[[100, 120]], labels=[1])
    b = fresh.predict(points=[[100, 120]], labels=[1])
    np.testing.assert_array_equal(a.logits, b.logits)
    assert fresh.image_size == (H, W)


def test_embedding_of_other_weights_is_refused(pred, tmp_path):
    path = tmp_path / "e.emb"
    pred.save_embedding(path)
    torch.manual_seed(1)
    other = ImagePredictor(build_sam2("sam2.1_hiera_t").eval())
    with pytest.raises(InvalidInputError, match="another model"):
        other.load_embedding(path)
    (tmp_path / "junk.emb").write_bytes(b"not a torch file")
    with pytest.raises(InvalidInputError, match="not an anyseg embedding"):
        other.load_embedding(tmp_path / "junk.emb")
    with pytest.raises(InvalidInputError, match="no embedding file"):
        other.load_embedding(tmp_path / "missing.emb")


def test_embedding_of_another_precision_is_refused(pred, model, image, tmp_path):
    """Features are used in the precision that made them, never converted: a bf16 embedding
    would give an fp32 predictor bf16 accuracy silently."""
    pred.save_embedding(tmp_path / "fp32.emb")
    fast = ImagePredictor(model, precision="bf16")
    fast.set_image(image)
    fast.save_embedding(tmp_path / "bf16.emb")
    with pytest.raises(InvalidInputError, match="computed in bf16 precision, this predictor computes in fp32"):
        ImagePredictor(model).load_embedding(tmp_path / "bf16.emb")
    with pytest.raises(InvalidInputError, match="computed in fp32 precision, this predictor computes in int8"):
        ImagePredictor(model, precision="int8").load_embedding(tmp_path / "fp32.emb")
    again = ImagePredictor(model, precision="bf16")
    again.load_embedding(tmp_path / "bf16.emb")
    np.testing.assert_array_equal(again.predict(points=[[100, 120]], labels=[1]).logits,
                                  fast.predict(points=[[100, 120]], labels=[1]).logits)
    # a file from before the precision was recorded: its features' type tells
    payload = torch.load(tmp_path / "bf16.emb", weights_only=True)
    del payload["precision"]
    torch.save(payload, tmp_path / "old.emb")
    with pytest.raises(InvalidInputError, match="computed in a reduced precision"):
        ImagePredictor(model).load_embedding(tmp_path / "old.emb")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "empty prompt"),
        ({"points": [[10, 10]]}, "together"),
        ({"points": [[10, 10]], "labels": [1, 1]}, "labels must have shape"),
        ({"points": [[10, 10]], "labels": [2]}, "1 \\(foreground\\) or 0"),
        ({"points": [[-1, 10]], "labels": [1]}, "outside the 320x240 image"),
        ({"points": [[10, 241]], "labels": [1]}, "outside"),
        ({"points": [[float("nan"), 1]], "labels": [1]}, "NaN"),
        ({"points": [[1, 2, 3]], "labels": [1]}, "shape \\(N, 2\\)"),
        ({"points": "abc", "labels": [1]}, "numeric"),
        ({"box": [10, 10, 5, 50]}, "x1 >= x0"),
        ({"box": [10, 10, 50]}, "shape \\(4,\\)"),
        ({"box": [0, 0, 400, 100]}, "outside"),
        ({"mask_input": np.zeros((64, 64))}, "low-res logits"),
        ({"box": np.zeros((2, 4)), "mask_input": np.zeros((3, 1, 256, 256))}, "disagree"),
    ],
)
def test_bad_prompts_get_clear_errors(pred, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        pred.predict(**kwargs)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((10, 10, 3), dtype=np.float32), "uint8"),
        (np.zeros((10, 10, 5), dtype=np.uint8), "shape"),
        (np.zeros((0, 10, 3), dtype=np.uint8), "empty"),
        ("not an image", "array or a PIL image"),
    ],
)
def test_bad_images_get_clear_errors(model, bad, message):
    with pytest.raises(InvalidInputError, match=message):
        ImagePredictor(model).set_image(bad)


def test_predict_before_set_image(model):
    with pytest.raises(AnysegError, match="no image is set"):
        ImagePredictor(model).predict(points=[[1, 1]], labels=[1])


def test_reduced_precision_is_opt_in(model, image, pred):
    fast = ImagePredictor(model, precision="bf16")
    fast.set_image(image)
    a = fast.predict(points=[[100, 120]], labels=[1])
    b = pred.predict(points=[[100, 120]], labels=[1])
    assert a.logits.dtype == np.float32 and a.masks.shape == b.masks.shape
    assert np.abs(a.scores - b.scores).max() < 0.05
    # the decoder computes on its own bf16 copy; the model keeps its fp32 weights
    assert fast.features().embed.dtype == torch.bfloat16
    assert model.mask_decoder.iou_token.weight.dtype == torch.float32
    assert pred.features().embed.dtype == torch.float32
    with pytest.raises(InvalidInputError, match="precision must be one of"):
        ImagePredictor(model, precision="int4")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("family", ["sam2", "sam"])
def test_first_prompt_gives_what_later_ones_give(model, image, family, precision):
    """Every prompt on an image takes one path (the first layer's image-side projections,
    made when the image is set, ``keep_image``, or on a prompt after another image's have
    replaced them): the same prompt gives the same masks first, after other prompts, and
    after another predictor on the same model (in fp32 the same decoder) or another image of
    the batch was prompted."""
    if family == "sam":
        torch.manual_seed(0)
        model = build_sam("mobile_sam_vit_t").eval().requires_grad_(False)
    p = ImagePredictor(model, precision=precision)
    p.set_image(image)
    first = p.predict(points=[[100, 120]], labels=[1])
    p.predict(box=[10, 10, 100, 100])
    p.predict(points=[[30, 40]], labels=[1], mask_input=first.logits[first.best][None])
    again = p.predict(points=[[100, 120]], labels=[1])
    np.testing.assert_array_equal(first.logits, again.logits)
    np.testing.assert_array_equal(first.masks, again.masks)
    other = ImagePredictor(model, precision=precision)
    other.set_image(image[::-1])
    other.predict(points=[[100, 120]], labels=[1])
    np.testing.assert_array_equal(first.logits, p.predict(points=[[100, 120]], labels=[1]).logits)
    p.set_images([image[::-1], image])
    p.predict(points=[[100, 120]], labels=[1], image=0)
    np.testing.assert_array_equal(first.logits, p.predict(points=[[100, 120]], labels=[1], image=1).logits)


def test_int8_is_refused_off_the_cpu():
    """int8's products run on the CPU only: elsewhere it would silently be bf16."""
    from anyseg import VideoPredictor
    from anyseg.predictors.precision import check_precision

    assert check_precision("int8", "cpu") == "int8" and check_precision("bf16", "cuda") == "bf16"
    with torch.device("meta"):
        elsewhere = build_sam2("sam2.1_hiera_t")
    for make in (ImagePredictor, VideoPredictor):
        with pytest.raises(InvalidInputError, match="int8 is a CPU mode"):
            make(elsewhere, precision="int8")
