"""Pre- and post-processing, exactly as each official family does it.

- SAM 1 / MobileSAM: resize the longest side to 1024 with PIL bilinear, normalise in
  0-255 units, pad bottom-right to a 1024 square.
- SAM 2 (images): scale to [0, 1], resize to a 1024 square with antialiased bilinear
  on tensors, normalise with ImageNet statistics.

Coordinates enter as (x, y) pixels of the original image and leave in model-input
pixels; mask logits leave at the original resolution.
"""

from __future__ import annotations

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
        threshold``, with the last resize fused into the comparison (:func:`resize_threshold`)."""
        *first, (last, _) = self.stages(orig_hw)
        x = _resize(logits, first)
        return resize_threshold(x[:, 0], last, threshold).reshape(*logits.shape[:-2], *orig_hw)


def _resize(logits: torch.Tensor, stages: list[Stage]) -> torch.Tensor:
    """``(..., h, w)`` maps through bilinear ``stages``: ``(N, 1, H, W)`` float32."""
    # one channel per map: CPU bilinear resizing runs about twice as fast on those
    x = logits.reshape(-1, 1, *logits.shape[-2:]).float()
    for size, (ch, cw) in stages:
        x = F.interpolate(x, size, mode="bilinear", align_corners=False)[..., :ch, :cw]
    return x


def resize_threshold(maps: torch.Tensor, size: tuple[int, int], threshold: float) -> np.ndarray:
    """``F.interpolate(maps, size, mode="bilinear", align_corners=False) > threshold`` for
    ``(N, h, w)`` maps: ``(N, H, W)`` bool, the same values at about a quarter of the time
    on CPU. Rows are resized along x by torch, then the vertical blend and the comparison run
    in one compiled loop that writes only the booleans (no ``(N, H, W)`` float map)."""
    if maps.device.type != "cpu":
        return (F.interpolate(maps[:, None], size, mode="bilinear", align_corners=False)[:, 0] > threshold).cpu().numpy()
    n, h, w = maps.shape
    rows = F.interpolate(maps.float().reshape(n * h, 1, w), size[1], mode="linear", align_corners=False)
    r0, r1, w0, w1 = _linear_taps(h, size[0])
    out = np.empty((n, *size), dtype=np.bool_)
    blend_rows_threshold(rows.reshape(n, h, size[1]).numpy(), r0, r1, w0, w1, threshold, out)
    return out


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
