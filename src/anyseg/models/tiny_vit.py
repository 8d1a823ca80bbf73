"""TinyViT, the image encoder of MobileSAM.

Four stages over a token grid that starts at 1/4 of the input resolution:

* a convolutional stem (two stride-2 3x3 conv+BN, GELU between): ``(B, 3, 1024, 1024)`` to
  ``(B, embed_dims[0], 256, 256)``;
* stage 0: inverted-residual (MBConv) blocks on the feature map;
* stages 1-3: TinyViT blocks on tokens: windowed attention with a learnt per-head bias
  indexed by the absolute (|dy|, |dx|) offset between tokens (LeViT style), a depthwise
  3x3 conv+BN, then an MLP;
* between stages, a patch-merging conv block changes the width and (usually) halves the
  grid. MobileSAM keeps the last merge at stride 1 so the output grid is 64x64;
* the same convolutional neck as SAM's ViT: ``(B, embed_dims[-1], 64, 64)`` to
  ``(B, out_chans, 64, 64)``.

All BatchNorms are the usual :class:`torch.nn.BatchNorm2d`: call ``.eval()`` for inference
(running statistics). Attention windows are zero-padded at the bottom/right and the
padded tokens take part in attention as keys, as in the official code.

Module attribute names follow the official (MobileSAM ``TinyViT``) state-dict layout,
including the unused ImageNet classifier (``norm_head``, ``head``) that the official
checkpoint carries, so official checkpoints load strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, Linear, attention, kept
from .vit import window_partition, window_unpartition

__all__ = ["TinyViTConfig", "TINY_VIT_5M", "TinyViTImageEncoder"]


@dataclass(frozen=True)
class TinyViTConfig:
    """Hyper-parameters of :class:`TinyViTImageEncoder`.

    Per-stage tuples have one entry per stage (stage 0 is convolutional: its
    ``num_heads``/``window_sizes`` entries are unused). ``merge_strides[i]`` is the stride of
    the patch merging after stage ``i`` (official MobileSAM: 2, 2, then 1, because the
    official code uses stride 1 whenever the merged width is 320, 448 or 576).
    ``num_classes`` sizes the (unused) classifier head kept for strict loading.
    """

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    merge_strides: tuple[int, ...] = (2, 2, 1)
    img_size: int = 1024
    in_chans: int = 3
    out_chans: int = 256
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    num_classes: int = 1000

    def stage_grids(self) -> list[int]:
        """Tokens per side of the grid each stage works on (``[256, 128, 64, 64]`` for MobileSAM)."""
        grids = [self.img_size // 4]
        for stride in self.merge_strides:
            grids.append((grids[-1] - 1) // stride + 1)  # 3x3 conv, padding 1
        return grids


TINY_VIT_5M = TinyViTConfig()
"""MobileSAM's encoder (``vit_t``): TinyViT-5M at 1024 px."""


class ConvBN(nn.Sequential):
    """Bias-free ``Conv2d`` (child ``c``) followed by ``BatchNorm2d`` (child ``bn``);
    ``(B, C_in, H, W)`` to ``(B, C_out, H', W')``."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.bn(self.c(x))
        # Inference: fold the BatchNorm's affine map into the convolution (one pass over the
        # feature map instead of two; same math, rounding differs at the 1e-7 level). Folded
        # from the current parameters at each call, so it can never go stale.
        c, bn = self.c, self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = c.weight * scale[:, None, None, None]
        bias = bn.bias - bn.running_mean * scale
        return F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups)


def as_map(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Tokens ``(B, grid * grid, C)`` as a channels-last ``(B, C, grid, grid)`` view (with
    the batch stride of a 4-D map: for B = 1 ``transpose`` + ``reshape`` leave a stride that
    convolutions do not take for channels-last, so their outputs come back contiguous and
    every later token op reads them transposed)."""
    b, _, c = x.shape
    return x.reshape(b, grid, grid, c).permute(0, 3, 1, 2)


def as_tokens(x: torch.Tensor) -> torch.Tensor:
    """A ``(B, C, H, W)`` map as tokens ``(B, H * W, C)``: a view of a channels-last map."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def map_gelu(act: nn.GELU, x: torch.Tensor) -> torch.Tensor:
    """``act(x)`` for an activation's own ``(B, C, H, W)`` map ``x``; without gradients in
    place, over its memory in order: on a channels-last map torch's GELU takes about twice
    as long as on the same values laid out contiguously (same values either way)."""
    if torch.is_grad_enabled():
        return act(x)
    dense = x.permute(0, 2, 3, 1) if x.is_contiguous(memory_format=torch.channels_last) else x
    torch.ops.aten.gelu_(dense, approximate=act.approximate)
    return x


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, GELU after each of the
    first two and after the residual sum. ``(B, C, H, W)`` to ``(B, C, H, W)``."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, padding=1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = map_gelu(self.act2, self.conv2(map_gelu(self.act1, self.conv1(x))))
        return map_gelu(self.act3, self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1 conv, GELU, 3x3 depthwise conv (``stride``), GELU, 1x1 conv.

    Takes a ``(B, C, H, W)`` map, or ``(B, H*W, C)`` tokens on the ``grid`` x ``grid``
    grid; returns tokens ``(B, H'*W', out_dim)``.
    """

    def __init__(self, grid: int, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.grid = grid
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = as_map(x, self.grid)
        x = map_gelu(self.act, self.conv1(x))
        x = map_gelu(self.act, self.conv2(x))
        return as_tokens(self.conv3(x))


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks on ``(B, C, H, W)``, then patch merging to tokens."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


def offset_bias_index(window: int, device: torch.device | None = None) -> torch.Tensor:
    """For a ``window`` x ``window`` patch, on ``device``: the ``(N, N)`` index (N =
    window^2) of each token pair's ``(|dy|, |dx|)`` offset class, ``|dy| * window + |dx|``
    (``window^2`` classes).

    The official numbering counts the classes in order of first appearance while scanning
    query tokens, then key tokens, row-major; the first query token, (0, 0), meets every
    offset, in this order, so the two agree (the learnt table relies on it).
    """
    r = torch.arange(window, device=device)
    d = (r[:, None] - r[None, :]).abs()  # |a - b| for coordinates a, b
    return (d[:, None, :, None] * window + d[None, :, None, :]).reshape(window**2, window**2)


class BiasedAttention(nn.Module):
    """Pre-normed multi-head self-attention with a learnt per-head offset bias.

    ``(B', N, dim)`` tokens of ``window`` x ``window`` windows to ``(B', N, dim)``. The
    qkv projection is laid out per head as ``[q_h | k_h | v_h]`` (``key_dim``,
    ``key_dim``, ``attn_ratio * key_dim`` wide).
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, window: int, attn_ratio: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = attn_ratio * key_dim
        self.scale = key_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = Linear(dim, num_heads * (2 * key_dim + self.value_dim))
        self.proj = Linear(num_heads * self.value_dim, dim)
        self.window = window
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window**2))  # per offset class
        # The (N, N) class index is derived data, not state: kept off the module's buffers so
        # that building on the meta device / ``to_empty`` cannot leave it uninitialised.
        self._index_cache: dict[torch.device, torch.Tensor] = {}

    def bias_index(self, device: torch.device) -> torch.Tensor:
        """``(N, N)`` offset-class index of the window's token pairs (:func:`offset_bias_index`),
        on ``device``, kept per device (:func:`~anyseg.models.common.kept`)."""
        return kept(self._index_cache, device, lambda: offset_bias_index(self.window, device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, -1)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=3)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B', heads, N, d)
        bias = self.attention_biases[:, self.bias_index(x.device)].to(q.dtype)  # (heads, N, N)
        # A 4-D mask (expanded, not copied) lets CPU SDPA take its fused kernel; a 3-D one
        # falls back to the slow reference path.
        mask = bias.unsqueeze(0).expand(b, -1, -1, -1)
        out = attention(q, k, v, mask, self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class TinyViTMLP(nn.Module):
    """LayerNorm, Linear, GELU, Linear: ``(..., dim)`` to ``(..., dim)``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = Linear(dim, hidden_dim)
        self.fc2 = Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed biased attention, depthwise conv, MLP, on ``(B, grid*grid, dim)`` tokens."""

    def __init__(
        self, dim: int, grid: int, num_heads: int, window: int, mlp_ratio: float, local_conv_size: int
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.grid = grid
        self.window = window
        self.attn = BiasedAttention(dim, dim // num_heads, num_heads, window)
        self.mlp = TinyViTMLP(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        g, ws = self.grid, self.window
        if g == ws:
            y = self.attn(x)
        else:
            # The attention's LayerNorm runs after padding, as in the official code.
            y, padded = window_partition(x.view(b, g, g, c), ws)
            y = self.attn(y.view(-1, ws * ws, c)).view(-1, ws, ws, c)
            y = window_unpartition(y, ws, padded, (g, g)).view(b, n, c)
        x = x + y
        x = as_tokens(self.local_conv(as_map(x, g)))
        return x + self.mlp(x)


class AttentionStage(nn.Module):
    """Stages 1-3: TinyViT blocks on tokens, then optional patch merging."""

    def __init__(self, blocks: list[TinyViTBlock], downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    """Stem: conv+BN (stride 2), GELU, conv+BN (stride 2): ``(B, 3, H, W)`` to
    ``(B, dim, H/4, W/4)``."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, dim // 2, 3, 2, 1),
            nn.GELU(),
            ConvBN(dim // 2, dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv1, act, conv2 = self.seq
        return conv2(map_gelu(act, conv1(x)))


class TinyViTImageEncoder(nn.Module):
    """MobileSAM's TinyViT image encoder.

    ``forward``: normalised images ``(B, in_chans, img_size, img_size)`` (``(B, 3, 1024, 1024)``)
    to embeddings ``(B, out_chans, g, g)`` with ``g = cfg.stage_grids()[-1]`` (``(B, 256, 64, 64)``).
    """

    def __init__(self, cfg: TinyViTConfig) -> None:
        super().__init__()
        n_stages = len(cfg.depths)
        if not (len(cfg.embed_dims) == len(cfg.num_heads) == len(cfg.window_sizes) == n_stages):
            raise ValueError("embed_dims, depths, num_heads and window_sizes need one entry per stage")
        if len(cfg.merge_strides) != n_stages - 1:
            raise ValueError("merge_strides needs one entry per stage but the last")
        self.cfg = cfg
        self.img_size = cfg.img_size
        grids = cfg.stage_grids()
        dims = cfg.embed_dims
        self.patch_embed = PatchEmbed(cfg.in_chans, dims[0])
        self.layers = nn.ModuleList()
        for i in range(n_stages):
            merge = None
            if i < n_stages - 1:
                merge = PatchMerging(grids[i], dims[i], dims[i + 1], cfg.merge_strides[i])
            if i == 0:
                stage: nn.Module = ConvStage(dims[0], cfg.depths[0], cfg.mbconv_expand_ratio, merge)
            else:
                blocks = [
                    TinyViTBlock(
                        dims[i],
                        grids[i],
                        cfg.num_heads[i],
                        cfg.window_sizes[i],
                        cfg.mlp_ratio,
                        cfg.local_conv_size,
                    )
                    for _ in range(cfg.depths[i])
                ]
                stage = AttentionStage(blocks, merge)
            self.layers.append(stage)
        self.out_grid = grids[-1]
        # ImageNet classifier of the TinyViT backbone: unused, kept for strict loading.
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = Linear(dims[-1], cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], cfg.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(cfg.out_chans),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last feature maps: faster convolutions on CPU, and (B, C, H, W) <-> tokens
        # (B, H*W, C) become free views.
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.patch_embed(x)  # (B, C0, H/4, W/4)
        for stage in self.layers:
            x = stage(x)  # tokens (B, N, C) after stage 0
        return self.neck(as_map(x, self.out_grid)).contiguous()
