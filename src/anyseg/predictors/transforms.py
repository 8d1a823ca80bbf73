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
from PIL import Image

from anyseg.kernels import blend_rows_threshold

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

    Bilinear resizing is separable, so the rows are first resized along x through every
    stage by torch (on the low-res rows only, and only those the vertical resizes reach: a
    crop may leave some out); each output row is then a weighted sum of at most
    ``2 ** len(stages)`` of those rows, which one compiled loop adds up and compares, writing
    only the booleans (no float map at the image size) and skipping the output rows that
    cannot reach the threshold (:func:`~anyseg.kernels.blend_rows_threshold`). The
    values equal torch's up to float rounding: a pixel whose logit is within rounding of
    the threshold may differ.
    """
    if maps.device.type != "cpu":
        return (_resize(maps, stages)[:, 0] > threshold).cpu().numpy()
    n, _, w = maps.shape
    taps, weights = _composed_taps(maps.shape[1], tuple(stages))
    h = int(taps.max()) + 1
    rows = maps[:, :h].float().reshape(n * h, 1, w)
    # bounds of the resized rows, from the few low-res samples: a linear resize takes convex
    # combinations, which exceed their largest term only by rounding (relative, or absolute
    # among subnormals); a bound too high merely skips fewer rows
    peaks = rows.amax(dim=-1).reshape(n, h)
    peaks = peaks + peaks.abs() * 2**-16 + 1e-37
    for size, (_, cw) in stages:
        rows = _resize_kept(rows, size[1], cw)
    out = np.empty((n, len(taps), rows.shape[-1]), dtype=np.bool_)
    rows = rows.reshape(n, h, -1).contiguous()
    blend_rows_threshold(rows.numpy(), peaks.numpy(), taps, weights, threshold, out)
    return out


def _resize_kept(rows: torch.Tensor, n_out: int, keep: int) -> torch.Tensor:
    """``F.interpolate(rows, n_out, mode="linear")[..., :keep]`` for ``rows`` ``(N, 1, n)``,
    computing only what is kept when ``n_out`` is a multiple ``f n``: the first ``keep``
    outputs are then those of the first ``ceil(keep / f) + 1`` samples resized by the same
    factor (the same source positions and weights, so the same values). SAM's resize to
    1024 keeps as little as two thirds of its width."""
    n = rows.shape[-1]
    if n_out % n == 0:
        factor = n_out // n
        m = min(n, -(-keep // factor) + 1)
        rows, n_out = rows[..., :m], m * factor
    return F.interpolate(rows, n_out, mode="linear", align_corners=False)[..., :keep]


@functools.lru_cache(maxsize=32)
def _composed_taps(n_in: int, stages: tuple[Stage, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``stages``' vertical resizes composed: output row ``i`` is
    ``sum_t weights[i, t] * x[taps[i, t]]``, ``(H, 2 ** len(stages))`` each."""
    taps, weights = np.arange(n_in)[:, None], np.ones((n_in, 1), np.float32)
    for size, (ch, _) in stages:
        r0, r1, w0, w1 = (a[:ch] for a in _linear_taps(len(taps), size[0]))
        taps = np.concatenate([taps[r0], taps[r1]], axis=1)
        weights = np.concatenate([weights[r0] * w0[:, None], weights[r1] * w1[:, None]], axis=1)
    return taps, weights


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, ...]:
    """Source rows and weights of a linear resize from ``n_in`` to ``n_out`` samples with
    half-pixel centres, computed in float32 as torch's CPU kernel does: output ``i`` is
    ``w0[i] * x[r0[i]] + w1[i] * x[r1[i]]``."""
    f32 = np.float32
    src = np.maximum(f32(n_in / n_out) * (np.arange(n_out, dtype=f32) + f32(0.5)) - f32(0.5), f32(0))
    r0 = src.astype(np.int64)
    r1 = r0 + (r0 < n_in - 1)
    w1 = src - r0.astype(f32)
    return r0, r1, f32(1) - w1, w1


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
        resized = np.array(Image.fromarray(image).resize((self.size, self.size), Image.BICUBIC))
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
