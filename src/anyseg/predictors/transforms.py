"""Pre- and post-processing, exactly as each official family does it.

- SAM 1 / MobileSAM: resize the longest side to 1024 with PIL bilinear, normalise in
  0-255 units, pad bottom-right to a 1024 square.
- SAM 2 (images): scale to [0, 1], resize to a 1024 square with antialiased bilinear
  on tensors, normalise with ImageNet statistics.

Coordinates enter as (x, y) pixels of the original image and leave in model-input
pixels; mask logits leave at the original resolution.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
import PIL
from PIL import Image

from anyseg import kernels
from anyseg.errors import InvalidInputError

# (size, crop): bilinearly resize to ``size`` (h, w), then keep the top-left ``crop`` (h, w)
Stage = tuple[tuple[int, int], tuple[int, int]]


class Transform:
    """Interface of a family's transform (see :func:`transform_for`)."""

    size: int
    low_res_clamp: float | None = None  # SAM 2's image predictor clamps returned logits

    def input_hw(self, orig_hw: tuple[int, int]) -> tuple[int, int]:
        """Size of the image content inside the model input."""
        raise NotImplementedError

    def image(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 RGB -> ``(3, size, size)`` float32 normalised."""
        raise NotImplementedError

    def coords(self, coords: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
        """``(..., 2)`` original-image (x, y) -> model-input (x, y)."""
        h, w = self.input_hw(orig_hw)
        scale = torch.tensor([w / orig_hw[1], h / orig_hw[0]], dtype=coords.dtype, device=coords.device)
        return coords * scale

    def stages(self, orig_hw: tuple[int, int]) -> list[Stage]:
        """The bilinear resizes (size, then crop) from low-res logits to the image."""
        raise NotImplementedError

    def masks(self, logits: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
        """``(B, K, 256, 256)`` low-res logits -> ``(B, K, H, W)`` logits."""
        x = _resize(logits, self.stages(orig_hw))
        return x.reshape(*logits.shape[:-2], *orig_hw)

    def binary_masks(self, logits: torch.Tensor, orig_hw: tuple[int, int], threshold: float) -> np.ndarray:
        """``(B, K, 256, 256)`` low-res logits -> ``(B, K, H, W)`` bool: ``masks(...) >
        threshold``, the resizes fused with the comparison (:func:`resize_threshold`)."""
        maps = logits.reshape(-1, *logits.shape[-2:])
        return resize_threshold(maps, self.stages(orig_hw), threshold).reshape(*logits.shape[:-2], *orig_hw)


def _resize(logits: torch.Tensor, stages: list[Stage]) -> torch.Tensor:
    """``(..., h, w)`` maps through bilinear ``stages``: ``(N, 1, H, W)`` float32."""
    # one channel per map: CPU bilinear resizing runs about twice as fast on those
    x = logits.reshape(-1, 1, *logits.shape[-2:]).float()
    for size, (ch, cw) in stages:
        x = F.interpolate(x, size, mode="bilinear", align_corners=False)[..., :ch, :cw]
    return x


def resize_threshold(maps: torch.Tensor, stages: list[Stage], threshold: float) -> np.ndarray:
    """``(N, h, w)`` maps through bilinear ``stages`` (as :meth:`Transform.masks` does), then
    ``> threshold``: ``(N, H, W)`` bool, at a fraction of the time on CPU.

    Bilinear resizing is separable: each low-res row is resized along x (:func:`horizontal_plan`),
    and each output row is then a weighted sum of a few of those rows, which one compiled loop
    computes, adds up and compares, writing only the booleans (no float map at the image size)
    and skipping the output rows that cannot reach the threshold
    (:func:`~anyseg.kernels.resize_threshold`). With one stage the result is torch's to the
    bit; over two stages (SAM 1: to 1024, then to the image) the stages are composed into one
    along each axis, so a pixel whose logit is within rounding of the threshold may differ.
    """
    if maps.device.type != "cpu":
        return (_resize(maps, stages)[:, 0] > threshold).cpu().numpy()
    taps, weights = _composed_taps(maps.shape[1], tuple(stages), 0)
    plan = horizontal_plan(maps.shape[2], tuple(stages))
    out = np.empty((maps.shape[0], len(taps), stages[-1][1][1]), dtype=np.bool_)
    kernels.resize_threshold(maps.float().contiguous().numpy(), taps, weights, plan, threshold, out)
    return out


@functools.lru_cache(maxsize=32)
def horizontal_plan(n_in: int, stages: tuple[Stage, ...]) -> tuple[np.ndarray, ...]:
    """The resize along x of ``stages`` (composed, :func:`_composed_taps`) for
    :func:`anyseg.kernels.resize_threshold`: ``(index (T, P) int32, weight (T, P) float32,
    base (P / 16,) int64)``, P the output width rounded up to a multiple of 16. Sample j is
    ``fma(x[i_0], w_0, fma(x[i_1], w_1, ... x[i_T-1] * w_T-1))``; over one stage (T = 2) that
    is torch's CPU kernel's arithmetic, whose source positions along x are rounded once (a
    fused multiply-add). Where every 16 samples read at most 5 consecutive inputs (upscaling
    by 4 or more, as from 256 to most images), ``base`` holds each 16's first input and
    ``index`` the offsets from it; else ``base`` is -1 and ``index`` holds the inputs."""
    taps, weights = _composed_taps(n_in, stages, 1, fused=True)
    width = len(taps)
    p = -(-width // 16) * 16
    index = np.ascontiguousarray(np.concatenate([taps, np.repeat(taps[-1:], p - width, axis=0)]).T, dtype=np.int32)
    weight = np.zeros((len(index), p), np.float32)
    weight[:, :width] = weights.T
    first = np.minimum(index[0, ::16], n_in - 5)
    offsets = index - np.repeat(first, 16)
    if len(index) <= 3 and n_in >= 5 and offsets.min() >= 0 and offsets.max() <= 4:
        return offsets.astype(np.int32), weight, first.astype(np.int64)
    return index, weight, np.full(p // 16, -1, np.int64)


@functools.lru_cache(maxsize=64)
def _composed_taps(n_in: int, stages: tuple[Stage, ...], axis: int, fused: bool = False) -> tuple[np.ndarray, ...]:
    """``stages``' resizes along ``axis`` (0: y, 1: x) composed: output ``i`` is ``sum_t
    weights[i, t] * x[taps[i, t]]``, ``(n_out, T)`` each (``fused``: see :func:`_linear_taps`).
    One stage gives torch's two taps as they are (T = 2). Over more stages the composed taps
    of each output are merged by input (T is then their largest number, e.g. 3 from 256 to
    1024 to an image); an output with fewer repeats its last input, that tap's weight halved
    (``x w / 2 + x w / 2`` is exactly ``x w``: no product of a zero weight with an infinity)."""
    taps, weights = np.arange(n_in)[:, None], np.ones((n_in, 1), np.float32)
    for size, crop in stages:
        r0, r1, w0, w1 = (a[: crop[axis]] for a in _linear_taps(len(taps), size[axis], fused))
        taps = np.concatenate([taps[r0], taps[r1]], axis=1)
        weights = np.concatenate([weights[r0] * w0[:, None], weights[r1] * w1[:, None]], axis=1)
    if len(stages) == 1:
        return taps, weights
    rows = []
    for row_taps, row_weights in zip(taps, weights):
        merged: dict[int, np.float32] = {}
        for t, w in zip(row_taps.tolist(), row_weights):
            merged[t] = merged.get(t, np.float32(0)) + w
        rows.append(list(merged.items()))
    n_taps = max(len(row) for row in rows)
    for row in rows:
        while len(row) < n_taps:
            t, w = row.pop()
            row += [(t, w / np.float32(2))] * 2
    return np.array([[t for t, _ in row] for row in rows]), np.array([[w for _, w in row] for row in rows], np.float32)


def _linear_taps(n_in: int, n_out: int, fused: bool = False) -> tuple[np.ndarray, ...]:
    """Source rows and weights of a linear resize from ``n_in`` to ``n_out`` samples with
    half-pixel centres, computed in float32 as torch's CPU kernel does: output ``i`` is
    ``w0[i] * x[r0[i]] + w1[i] * x[r1[i]]``. ``fused``: each source position ``scale * (i +
    1/2) - 1/2`` rounded once (a fused multiply-add), as torch's kernel computes those of
    the last axis."""
    f32 = np.float32
    scale, centres = f32(n_in / n_out), np.arange(n_out, dtype=f32) + f32(0.5)
    if fused:  # exact in float64 (a product of two floats, less one half), then rounded once
        src = (scale.astype(np.float64) * centres - 0.5).astype(f32)
    else:
        src = scale * centres - f32(0.5)
    src = np.maximum(src, f32(0))
    r0 = src.astype(np.int64)
    r1 = r0 + (r0 < n_in - 1)
    w1 = src - r0.astype(f32)
    return r0, r1, f32(1) - w1, w1


def pillow_vertical_first(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> bool | None:
    """Whether the installed Pillow's ``Image.resize`` from ``in_hw`` to ``out_hw`` (h, w)
    resamples along y before x, which changes its bytes; None for a Pillow whose order is
    not known here (newer than 13). Up to 12 it resamples along x first; 13 along y first
    where the height shrinks by more than twice as many pixels as the width."""
    major = int(PIL.__version__.split(".")[0])
    if major > 13:
        return None
    shrink_h, shrink_w = in_hw[0] - out_hw[0], in_hw[1] - out_hw[1]
    return major == 13 and shrink_h > 0 and shrink_h > 2 * shrink_w


class Sam1Transform(Transform):
    pixel_mean = (123.675, 116.28, 103.53)
    pixel_std = (58.395, 57.12, 57.375)

    def __init__(self, size: int = 1024) -> None:
        self.size = size

    def input_hw(self, orig_hw):
        h, w = orig_hw
        scale = self.size / max(h, w)
        return int(h * scale + 0.5), int(w * scale + 0.5)

    def image(self, image):
        h, w = self.input_hw(image.shape[:2])
        if min(h, w) < 1:
            raise InvalidInputError(f"the image ({image.shape[1]}×{image.shape[0]} pixels) is too elongated: its "
                                    f"short side would be less than one pixel at the model's {self.size}")
        vertical_first = pillow_vertical_first(image.shape[:2], (h, w))
        if vertical_first is not None:
            return kernels.pil_resize_normalize(image, (h, w), self.size, vertical_first, mean=self.pixel_mean,
                                                std=self.pixel_std)
        resized = np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        x = torch.from_numpy(resized).permute(2, 0, 1).float()
        mean = torch.tensor(self.pixel_mean).view(3, 1, 1)
        std = torch.tensor(self.pixel_std).view(3, 1, 1)
        x = (x - mean) / std
        return F.pad(x, (0, self.size - w, 0, self.size - h))

    def stages(self, orig_hw):
        return [((self.size, self.size), self.input_hw(orig_hw)), (orig_hw, orig_hw)]


class Sam2Transform(Transform):
    low_res_clamp = 32.0
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)

    def __init__(self, size: int = 1024) -> None:
        self.size = size

    def input_hw(self, orig_hw):
        return self.size, self.size

    def image(self, image):
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255.0)
        x = F.interpolate(x[None], (self.size, self.size), mode="bilinear", align_corners=False, antialias=True)[0]
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std

    def stages(self, orig_hw):
        return [(orig_hw, orig_hw)]

    def video_frame(self, image: np.ndarray) -> torch.Tensor:
        """A video frame as the official video predictor loads it: PIL's default (bicubic)
        resize to the square, ``/ 255`` in float64, then normalised in float32."""
        square = (self.size, self.size)
        vertical_first = pillow_vertical_first(image.shape[:2], square)
        if vertical_first is not None:
            return kernels.pil_resize_normalize(image, square, self.size, vertical_first, cubic=True, divisor=255.0,
                                                mean=self.mean, std=self.std)
        resized = np.array(Image.fromarray(image).resize(square, Image.BICUBIC))
        x = torch.from_numpy(resized / 255.0).permute(2, 0, 1).float()
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std


def transform_for(model) -> Transform:
    """The transform of ``model``'s family (``model.family`` is ``"sam"`` or ``"sam2"``)."""
    if model.family == "sam2":
        return Sam2Transform(model.image_size)
    if model.family == "sam":
        return Sam1Transform(model.image_size)
    raise ValueError(f"unknown model family {model.family!r}")
