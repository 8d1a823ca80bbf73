"""The transforms' compiled steps: SAM 1's input and SAM 2's video frames (Pillow's resize,
its bytes) and the fused resize-and-threshold of low-res mask logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from anyseg.errors import InvalidInputError
from anyseg.predictors import transforms
from anyseg.predictors.transforms import Sam1Transform, Sam2Transform, horizontal_plan, resize_threshold


def pillow_input(image: np.ndarray) -> torch.Tensor:
    """SAM 1's model input as the official code makes it: Pillow's bilinear resize of the
    longest side to 1024, normalised in 0-255 units, padded bottom-right."""
    t = Sam1Transform()
    h, w = t.input_hw(image.shape[:2])
    x = torch.from_numpy(np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))).permute(2, 0, 1).float()
    x = (x - torch.tensor(t.pixel_mean).view(3, 1, 1)) / torch.tensor(t.pixel_std).view(3, 1, 1)
    return F.pad(x, (0, 1024 - w, 0, 1024 - h))


# landscape, portrait (Pillow 13 resamples along y first where the height shrinks most),
# square, one side at 1024 already (one pass), upscaling, a single pixel, extreme ratios
SAM1_SIZES = [(1200, 1800), (1800, 1200), (1386, 84), (1677, 7), (1024, 1024), (768, 1024), (2048, 1024),
              (1023, 1025), (300, 200), (1, 1), (2, 3000), (333, 4097), (2399, 1601)]


@pytest.mark.parametrize("hw", SAM1_SIZES)
def test_sam1_input_equals_pillow_resize_then_normalise(hw, loop_threads):
    image = np.random.default_rng(hw[0] * 7 + hw[1]).integers(0, 256, (*hw, 3), dtype=np.uint8)
    got = Sam1Transform().image(image)
    assert got.shape == (3, 1024, 1024) and got.dtype == torch.float32
    assert torch.equal(got, pillow_input(image))


def pillow_video_frame(image: np.ndarray) -> torch.Tensor:
    """A SAM 2 video frame as the official video predictor loads it: Pillow's bicubic resize
    to the 1024 square, / 255 in float64, then normalised in float32."""
    t = Sam2Transform()
    x = torch.from_numpy(np.array(Image.fromarray(image).resize((1024, 1024), Image.BICUBIC)) / 255.0)
    x = x.permute(2, 0, 1).float()
    return (x - torch.tensor(t.mean).view(3, 1, 1)) / torch.tensor(t.std).view(3, 1, 1)


@pytest.mark.parametrize("hw", [(540, 960), (1080, 1920), (1024, 1024), (1024, 700), (2000, 100), (100, 2000),
                                (3000, 1500), (1, 1)])
def test_sam2_video_frame_equals_pillow_bicubic_then_normalise(hw, loop_threads):
    image = np.random.default_rng(hw[0] * 5 + hw[1]).integers(0, 256, (*hw, 3), dtype=np.uint8)
    got = Sam2Transform().video_frame(image)
    assert got.shape == (3, 1024, 1024) and got.dtype == torch.float32
    assert torch.equal(got, pillow_video_frame(image))


def test_inputs_of_a_pillow_of_unknown_order_are_pillow_s(monkeypatch):
    monkeypatch.setattr(transforms.PIL, "__version__", "14.0.0")
    assert transforms.pillow_vertical_first((1800, 1200), (1024, 683)) is None
    image = np.random.default_rng(0).integers(0, 256, (1800, 1200, 3), dtype=np.uint8)
    assert torch.equal(Sam1Transform().image(image), pillow_input(image))
    assert torch.equal(Sam2Transform().video_frame(image), pillow_video_frame(image))


def test_pillow_pass_order_by_version(monkeypatch):
    for version, expected in [("10.4.0", False), ("12.3.0", False), ("13.0.0", True)]:
        monkeypatch.setattr(transforms.PIL, "__version__", version)
        assert transforms.pillow_vertical_first((1386, 84), (1024, 62)) is expected
        assert transforms.pillow_vertical_first((1200, 1800), (683, 1024)) is False


def test_sam1_input_of_too_elongated_an_image_is_refused():
    with pytest.raises(InvalidInputError, match="too elongated"):
        Sam1Transform().image(np.zeros((1, 3000, 3), np.uint8))


@pytest.mark.parametrize("size", [(1200, 1800), (540, 960), (257, 255), (100, 37), (1, 1)])
def test_resize_threshold_equals_interpolate_then_compare(size, loop_threads):
    maps = torch.randn(3, 64, 80, generator=torch.Generator().manual_seed(0))
    for threshold in (0.0, 0.3):
        expected = F.interpolate(maps[:, None], size, mode="bilinear", align_corners=False)[:, 0] > threshold
        got = resize_threshold(maps, [(size, size)], threshold)
        assert got.dtype == np.bool_ and got.shape == (3, *size)
        assert np.array_equal(got, expected.numpy())


def test_horizontal_plan_selects_where_it_can_and_gathers_elsewhere():
    # the cases of the test above: upscaling by 4 or more reads 5 inputs per 16 samples
    chunked = {size: horizontal_plan(80, ((size, size),))[2][0] >= 0 for size in [(1200, 1800), (100, 37)]}
    assert chunked == {(1200, 1800): True, (100, 37): False}
    # SAM 1's two stages (256 -> 1024 -> 1800) composed: three taps per sample, still selected
    index, weight, base = horizontal_plan(256, tuple(Sam1Transform().stages((1200, 1800))))
    assert index.shape == (3, 1808) and base[0] >= 0
    assert np.allclose(weight.sum(axis=0)[:1800], 1.0, atol=1e-6)


def test_resize_threshold_skips_background_rows_exactly(loop_threads):
    # a mask of background rows around an object: rows whose bound is below, at and just
    # above the threshold take the skip, and the comparison, paths
    maps = torch.full((2, 64, 80), -4.0)
    maps[0, 20:30, 10:50] = torch.linspace(-1, 3, 40)
    maps[0, 40] = 0.0  # a row exactly at the threshold: all False
    maps[1, 5:60:7, 33] = 1e-7  # isolated pixels just above it
    maps[1, 50, 79] = float("nan")
    for size in [(1200, 1800), (97, 51)]:
        expected = F.interpolate(maps[:, None], size, mode="bilinear", align_corners=False)[:, 0] > 0
        got = resize_threshold(maps, [(size, size)], 0.0)
        assert np.array_equal(got, expected.numpy())
        assert 0 < got.sum() < got.size


@pytest.mark.parametrize("hw", [(480, 640), (640, 480), (1200, 1800)])
@pytest.mark.parametrize("transform", [Sam1Transform(), Sam2Transform()])
def test_binary_masks_are_the_thresholded_logits(transform, hw):
    # equal up to float rounding: only a pixel whose logit is within rounding of the
    # threshold may differ (one of 13 M here)
    logits = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    got = transform.binary_masks(logits, hw, 0.0)
    expected = transform.masks(logits, hw).numpy()
    differ = got != (expected > 0)
    assert differ.sum() <= 2 and np.abs(expected[differ]).max(initial=0) < 1e-5


def test_resize_threshold_of_all_background_and_of_extreme_rows(loop_threads):
    # every output row skipped; and rows whose maxima are subnormal, huge, or infinite
    # next to the threshold, where the bound of a row must still hold every pixel
    size = (300, 200)
    empty = resize_threshold(torch.full((2, 16, 16), -3.0), [(size, size)], 0.0)
    assert empty.shape == (2, *size) and not empty.any()
    maps = torch.full((2, 16, 16), -1.0)
    maps[0, 3] = 1e-45
    maps[0, 7, ::2] = 3e38
    maps[0, 7, 1::2] = -3e38
    maps[1, 5, 4] = float("inf")
    maps[1, 9] = -float("inf")
    for threshold in (0.0, 1e-45, -1.0):
        expected = F.interpolate(maps[:, None], size, mode="bilinear", align_corners=False)[:, 0] > threshold
        assert np.array_equal(resize_threshold(maps, [(size, size)], threshold), expected.numpy())
