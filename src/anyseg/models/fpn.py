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

    :meth:`level` computes one output level ``(B, d_model, H_i, W_i)`` from the trunk's
    maps (highest resolution first); ``position_encoding`` encodes a level's grid.
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

    def level(self, xs: list[torch.Tensor], i: int, then: nn.Conv2d | None = None) -> torch.Tensor:
        """Output level ``i`` (0: finest). ``then``: a 1x1 conv applied to a level without
        top-down input, folded into its lateral conv (one ``Cin -> Cout`` conv instead of
        ``Cin -> d_model -> Cout``; the ``d_model``-channel map is never formed)."""
        lateral = self.convs[len(self.convs) - 1 - i].conv  # convs run coarsest first
        coarser = i + 1 < len(xs) and i in self.top_down_levels
        if then is not None:
            if coarser:
                raise ValueError("only a level without top-down input can be folded")
            w2 = then.weight.flatten(1)  # (Cout, d_model)
            weight = (w2 @ lateral.weight.flatten(1))[..., None, None]
            return F.conv2d(xs[i], weight, w2 @ lateral.bias + then.bias)
        out = lateral(xs[i])
        if coarser:
            out = out + F.interpolate(self.level(xs, i + 1).float(), scale_factor=2.0, mode="nearest")
        return out


class Sam2ImageEncoder(nn.Module):
    """Hiera trunk + FPN neck."""

    def __init__(self, trunk: HieraConfig, d_model: int = 256) -> None:
        super().__init__()
        self.trunk = Hiera(trunk)
        self.neck = FpnNeck(trunk.channel_list, d_model)

    def forward(
        self, images: torch.Tensor, proj_s0: nn.Conv2d, proj_s1: nn.Conv2d
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, 3, 1024, 1024)`` -> the stride-16 level ``(B, d_model, 64, 64)`` (the
        stride-32 level only feeds it, top-down) and the stride-4 / stride-8 levels after
        the 1x1 projections ``proj_s0`` / ``proj_s1`` (the only way they are read), each
        folded into its lateral conv: ``[(B, C0, 256, 256), (B, C1, 128, 128)]``."""
        xs = self.trunk(images)
        high_res = [self.neck.level(xs, 0, then=proj_s0), self.neck.level(xs, 1, then=proj_s1)]
        return self.neck.level(xs, 2), high_res
