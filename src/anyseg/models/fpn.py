"""SAM 2's image encoder: the Hiera trunk followed by a feature-pyramid neck."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyseg.models.hiera import Hiera, HieraConfig
from anyseg.models.position import PositionEmbeddingSine


class FpnNeck(nn.Module):
    """Projects each trunk stage to ``d_model`` channels with a 1x1 conv; the levels in
    ``top_down_levels`` also add the nearest-upsampled coarser level.

    Input: the trunk's maps, highest resolution first. Output: the same number of
    ``(B, d_model, H_i, W_i)`` maps and their sine position encodings.
    """

    def __init__(self, backbone_channel_list: list[int], d_model: int = 256, top_down_levels=(2, 3)) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:
            level = nn.Sequential()
            level.add_module("conv", nn.Conv2d(dim, d_model, kernel_size=1))
            self.convs.append(level)
        self.top_down_levels = tuple(top_down_levels)
        self.position_encoding = PositionEmbeddingSine(d_model)

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n = len(self.convs) - 1
        out: list[torch.Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        prev = None
        for i in range(n, -1, -1):  # coarsest first
            lateral = self.convs[n - i](xs[i])
            if i in self.top_down_levels and prev is not None:
                top_down = F.interpolate(prev.float(), scale_factor=2.0, mode="nearest")
                prev = lateral + top_down
            else:
                prev = lateral
            out[i] = prev
        pos = [self.position_encoding(x) for x in out]
        return out, pos


class Sam2ImageEncoder(nn.Module):
    """Hiera + FPN neck. ``forward`` maps ``(B, 3, 1024, 1024)`` to the three finest
    levels (strides 4, 8, 16; the stride-32 level is dropped) and their encodings."""

    def __init__(self, trunk: HieraConfig, d_model: int = 256, scalp: int = 1) -> None:
        super().__init__()
        self.trunk = Hiera(trunk)
        self.neck = FpnNeck(trunk.channel_list, d_model)
        self.scalp = scalp

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        features, pos = self.neck(self.trunk(images))
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return features, pos
