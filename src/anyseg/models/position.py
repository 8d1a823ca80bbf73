"""Positional encodings: sine (DETR-style), random Fourier features, axial RoPE."""

from __future__ import annotations

import math

import torch
from torch import nn


def sine_frequencies(num_feats: int, temperature: float, device=None) -> torch.Tensor:
    """Frequencies ``temperature ** (2 * (i // 2) / num_feats)`` for ``i < num_feats``."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * (dim_t // 2) / num_feats)


def _interleave_sin_cos(x: torch.Tensor) -> torch.Tensor:
    """``(..., F)`` phases -> ``(..., F)``: sin of even, cos of odd slots, interleaved."""
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """Normalised 2-D sine encoding of a feature map's grid.

    ``forward(x)`` with ``x`` of shape ``(B, C, H, W)`` returns ``(B, num_pos_feats, H, W)``
    (y features first, then x). The grid encoding depends only on ``(H, W)`` and is cached.
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError("num_pos_feats must be even")
        self.half = num_pos_feats // 2
        self.temperature = temperature
        self.scale = 2 * math.pi
        self._cache: dict[tuple, torch.Tensor] = {}

    def grid(self, h: int, w: int, device=None) -> torch.Tensor:
        """The ``(num_pos_feats, h, w)`` encoding of an ``h x w`` grid."""
        key = (h, w, str(device))
        if key not in self._cache:
            eps = 1e-6
            y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
            x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
            y = y / (y[-1] + eps) * self.scale
            x = x / (x[-1] + eps) * self.scale
            dim_t = sine_frequencies(self.half, self.temperature, device)
            pos_y = _interleave_sin_cos(y[:, None] / dim_t)  # (h, F)
            pos_x = _interleave_sin_cos(x[:, None] / dim_t)  # (w, F)
            pos = torch.cat(
                (pos_y[:, None, :].expand(h, w, -1), pos_x[None, :, :].expand(h, w, -1)), dim=-1
            )
            self._cache[key] = pos.permute(2, 0, 1).contiguous()
        return self._cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.grid(x.shape[-2], x.shape[-1], x.device)
        return pos[None].expand(x.shape[0], -1, -1, -1).to(x.dtype)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier-feature encoding of (x, y) positions (SAM's prompt encoder)."""

    def __init__(self, num_pos_feats: int = 64) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """``(..., 2)`` coordinates normalised to [0, 1] -> ``(..., 2 * num_pos_feats)``."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the pixel centres of an ``(h, w)`` grid: ``(C, h, w)``."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((h, w), device=device, dtype=torch.float32)
        y = (grid.cumsum(dim=0) - 0.5) / h
        x = (grid.cumsum(dim=1) - 0.5) / w
        return self.encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """``(B, N, 2)`` pixel (x, y) in an ``image_size=(H, W)`` input -> ``(B, N, C)``."""
        coords = coords.clone()
        coords[..., 0] = coords[..., 0] / image_size[1]
        coords[..., 1] = coords[..., 1] / image_size[0]
        return self.encode(coords.float())


def axial_rope(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> torch.Tensor:
    """Complex rotations for 2-D axial RoPE: ``(end_x * end_y, dim // 2)`` complex64.

    Token ``t`` sits at ``(x, y) = (t % end_x, t // end_x)``; the first half of the
    frequencies rotate with x, the second half with y.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    angles_x = torch.outer(t_x, freqs)
    angles_y = torch.outer(t_y, freqs)
    return torch.cat(
        [torch.polar(torch.ones_like(angles_x), angles_x), torch.polar(torch.ones_like(angles_y), angles_y)],
        dim=-1,
    )


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` of shape ``(B, heads, N, C)`` by ``freqs`` ``(M, C // 2)`` complex.

    When ``N`` is a multiple ``r`` of ``M`` (keys of ``r`` stacked memory frames) the
    rotations repeat ``r`` times along the token axis.
    """
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    n, m = xc.shape[-2], freqs.shape[0]
    if n != m:
        freqs = freqs.repeat(n // m, 1)
    return torch.view_as_real(xc * freqs).flatten(-2).type_as(x)
