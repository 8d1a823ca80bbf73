"""SAM 2's memory encoder: fuses a frame's features with its predicted mask into a
compact memory (64 channels at stride 16)."""

from __future__ import annotations

import torch
from torch import nn

from anyseg.models.common import LayerNorm2d, Linear
from anyseg.models.position import PositionEmbeddingSine


class MaskDownSampler(nn.Module):
    """Four stride-2 3x3 convs (1 -> 4 -> 16 -> 64 -> 256 channels, LayerNorm + GELU),
    then a 1x1 conv: ``(B, 1, 1024, 1024)`` -> ``(B, dim, 64, 64)``."""

    def __init__(self, dim: int = 256, num_layers: int = 4) -> None:
        super().__init__()
        self.encoder = nn.Sequential()
        chans = 1
        for _ in range(num_layers):
            out = chans * 4
            self.encoder.append(nn.Conv2d(chans, out, kernel_size=3, stride=2, padding=1))
            self.encoder.append(LayerNorm2d(out))
            self.encoder.append(nn.GELU())
            chans = out
        self.encoder.append(nn.Conv2d(chans, dim, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depth-wise 7x7 conv, LayerNorm, MLP (x4), layer scale, residual."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    def __init__(self, dim: int = 256, out_dim: int = 64) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(dim)
        self.pix_feat_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.fuser = Fuser(dim)
        self.out_proj = nn.Conv2d(dim, out_dim, kernel_size=1)
        self.position_encoding = PositionEmbeddingSine(out_dim)

    def forward(self, pix_feat: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``pix_feat`` ``(B, dim, 64, 64)``, ``masks`` ``(B, 1, 1024, 1024)`` in [0, 1]
        (already sigmoid-ed) -> memory ``(B, out_dim, 64, 64)`` and its position encoding."""
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks)
        x = self.out_proj(self.fuser(x))
        return x, self.position_encoding(x)
