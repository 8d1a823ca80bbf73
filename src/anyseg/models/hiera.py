"""Hiera: the hierarchical vision transformer trunk of SAM 2's image encoder.

Four stages; between stages the query tokens are max-pooled 2x2 (halving H, W) while
the channel width and head count double. Most blocks attend within windows; a few
listed blocks attend globally.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from anyseg.models.common import MLP, Linear, attention, kept


@dataclass(frozen=True)
class HieraConfig:
    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (2, 3, 16, 3)
    global_att_blocks: tuple[int, ...] = (12, 16, 20)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    q_pool: int = 3  # number of stage transitions that pool the queries
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    mlp_ratio: float = 4.0

    @property
    def stage_ends(self) -> list[int]:
        """Index of the last block of each stage."""
        return [sum(self.stages[: i + 1]) - 1 for i in range(len(self.stages))]

    @property
    def channel_list(self) -> list[int]:
        """Output widths of the stages, deepest first (as the FPN neck expects)."""
        widths = [int(self.embed_dim * self.dim_mul**i) for i in range(len(self.stages))]
        return widths[::-1]


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(B, H, W, C)`` -> ``(B * nW, window, window, C)`` (zero-padded), and the padded size."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, window, window, C)`` -> ``(B, H, W, C)``."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :] if (hp > h or wp > w) else x


def _pool(x: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    """Apply a 2-D pooling to a channels-last ``(B, H, W, C)`` tensor."""
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """7x7 stride-4 convolution: ``(B, 3, H, W)`` -> ``(B, H/4, W/4, C)``."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a channels-last input gives a channels-last output: the permuted map is then the
        # contiguous (B, H, W, C) that the first block's norm reads (not a strided copy)
        return self.proj(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Self-attention whose queries are optionally pooled (at stage transitions)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: nn.Module | None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = Linear(dim, dim_out * 3)
        self.proj = Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, dim)`` -> ``(B, H', W', dim_out)`` (H' = H/2 when pooling)."""
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = torch.unbind(qkv, 2)
        if self.q_pool is not None:
            q = _pool(q.reshape(b, h, w, -1), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        x = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(x.transpose(1, 2).reshape(b, h, w, -1))


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block with windowed attention and optional query pooling."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float,
        q_stride: tuple[int, int] | None,
        window_size: int,
    ) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride) if q_stride else None
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_pool=self.pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, dim)`` -> ``(B, H', W', dim_out)``."""
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.pool is not None:
                shortcut = _pool(shortcut, self.pool)

        window = self.window_size
        if window > 0:
            hw = x.shape[1:3]
            x, padded_hw = window_partition(x, window)
        x = self.attn(x)
        if window > 0:
            if self.q_stride:
                # the queries were pooled: windows shrank and so did the map
                window = window // self.q_stride[0]
                hw = shortcut.shape[1:3]
                padded_hw = (hw[0] + (-hw[0]) % window, hw[1] + (-hw[1]) % window)
            x = window_unpartition(x, window, padded_hw, hw)

        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """Hiera trunk: ``(B, 3, 1024, 1024)`` -> one ``(B, C_i, H_i, W_i)`` map per stage,
    highest resolution first (strides 4, 8, 16, 32)."""

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, cfg.embed_dim, cfg.window_spec[0], cfg.window_spec[0])
        )
        stage_ends = cfg.stage_ends
        q_pool_blocks = [end + 1 for end in stage_ends[:-1]][: cfg.q_pool]

        self.blocks = nn.ModuleList()
        dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
        for i in range(sum(cfg.stages)):
            dim_out = dim
            # the first block of a stage still uses the previous stage's window size
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
            if i - 1 in stage_ends:
                dim_out = int(dim * cfg.dim_mul)
                heads = int(heads * cfg.head_mul)
                stage += 1
            self.blocks.append(
                MultiScaleBlock(
                    dim,
                    dim_out,
                    heads,
                    cfg.mlp_ratio,
                    q_stride=cfg.q_stride if i in q_pool_blocks else None,
                    window_size=window,
                )
            )
            dim = dim_out
        self._stage_ends = set(stage_ends)
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """Background embedding interpolated to ``(h, w)`` plus the tiled window embedding:
        ``(1, h, w, C)``. Kept (:func:`~anyseg.models.common.kept`) in inference, where the
        parameters do not change."""

        def make() -> torch.Tensor:
            pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
            win = self.pos_embed_window
            return (pos + win.tile([1, 1, h // win.shape[-2], w // win.shape[-1]])).permute(0, 2, 3, 1)

        if self.training:
            return make()
        return kept(self._pos_cache, (h, w, self.pos_embed.device, self.pos_embed.dtype), make)

    def _load_from_state_dict(self, *args, **kwargs):
        self._pos_cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self.position_embedding(x.shape[1], x.shape[2])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
