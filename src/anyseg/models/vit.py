"""The SAM 1 image encoder: a plain ViT with windowed and global attention.

A ``(B, 3, img_size, img_size)`` normalised image is cut into ``patch_size`` patches,
given an absolute position embedding, and run through ``depth`` pre-norm transformer
blocks. Most blocks attend inside non-overlapping ``window_size`` windows (the token grid
is zero-padded to a multiple of the window first); the blocks listed in
``global_attn_indexes`` attend over the whole grid. Every attention adds decomposed
relative-position terms (MViTv2): a learnt table per axis, dotted with the query. A
convolutional neck maps the ``(B, embed_dim, H/16, W/16)`` grid to ``out_chans`` channels.

Module attribute names follow the official state-dict layout (``patch_embed.proj``,
``pos_embed``, ``blocks.N.{norm1,attn.{qkv,proj,rel_pos_h,rel_pos_w},norm2,mlp.{lin1,lin2}}``,
``neck.{0,1,2,3}``), so official checkpoints load strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from anyseg.models.common import LayerNorm2d, Linear, MLPBlock, attention

__all__ = [
    "ViTConfig",
    "VIT_B",
    "VIT_L",
    "VIT_H",
    "ViTImageEncoder",
    "ViTBlock",
    "RelPosAttention",
    "window_partition",
    "window_unpartition",
    "relative_position_table",
]


@dataclass(frozen=True)
class ViTConfig:
    """Hyper-parameters of :class:`ViTImageEncoder`.

    ``global_attn_indexes`` lists the blocks that attend over the whole token grid;
    every other block attends inside ``window_size`` x ``window_size`` windows.
    ``norm_eps`` is the epsilon of the blocks' LayerNorms (the neck's LayerNorm2d always
    uses 1e-6, as the official code does).
    """

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    patch_size: int = 16
    img_size: int = 1024
    in_chans: int = 3
    out_chans: int = 256
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    use_abs_pos: bool = True
    use_rel_pos: bool = True
    norm_eps: float = 1e-6

    @property
    def grid_size(self) -> int:
        """Tokens per side of the patch grid (64 for a 1024 input and 16-pixel patches)."""
        return self.img_size // self.patch_size


VIT_B = ViTConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11))
VIT_L = ViTConfig(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23))
VIT_H = ViTConfig(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31))


# --------------------------------------------------------------------------- helpers


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cut ``(B, H, W, C)`` into ``(B * nH * nW, window, window, C)`` windows.

    The grid is first zero-padded at the bottom and right to a multiple of ``window``;
    the padded size ``(Hp, Wp)`` is returned alongside (pass it to
    :func:`window_unpartition`). Padded tokens are ordinary zeros: they take part in the
    attention of their window as keys, exactly as in the official encoders.
    """
    b, h, w, c = x.shape
    ph, pw = -h % window, -w % window
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nH * nW, window, window, C)`` to
    ``(B, H, W, C)``, dropping the padding."""
    hp, wp = padded_hw
    h, w = hw
    nh, nw = hp // window, wp // window
    b = windows.shape[0] // (nh * nw)
    x = windows.view(b, nh, nw, window, window, -1).transpose(2, 3).reshape(b, hp, wp, -1)
    if hp != h or wp != w:
        x = x[:, :h, :w].contiguous()
    return x


def relative_position_table(q_size: int, k_size: int, table: torch.Tensor) -> torch.Tensor:
    """Gather per-pair embeddings ``(q_size, k_size, C)`` from a learnt ``(L, C)`` table.

    The table indexes relative offsets ``q - k`` (shifted to be non-negative). If it
    was learnt for another size it is linearly resized to ``2 * max(q_size, k_size) - 1``
    rows first; when the query and key axes differ in length, the shorter one's
    coordinates are stretched to the longer one's scale (as in the official code).
    """
    length = 2 * max(q_size, k_size) - 1
    if table.shape[0] != length:
        table = F.interpolate(table.t()[None], size=length, mode="linear")[0].t()
    q_scale = max(k_size / q_size, 1.0)
    k_scale = max(q_size / k_size, 1.0)
    q_pos = torch.arange(q_size, device=table.device)[:, None] * q_scale
    k_pos = torch.arange(k_size, device=table.device)[None, :] * k_scale
    index = ((q_pos - k_pos) + (k_size - 1) * k_scale).long()
    return table.index_select(0, index.flatten()).view(q_size, k_size, -1)


# --------------------------------------------------------------------------- modules


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: ``(B, C_in, H, W)`` to ``(B, H/p, W/p, D)``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Contiguous, so that the residual stream (and every Linear on it) is row-major.
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


class RelPosAttention(nn.Module):
    """Multi-head self-attention over a 2-D token grid, with decomposed relative
    position terms.

    ``(B, H, W, dim)`` to ``(B, H, W, dim)``. For query token ``(h, w)`` and key token
    ``(h', w')`` the logit is ``scale * q.k + q.Rh[h, h'] + q.Rw[w, w']``, with ``q`` the
    unscaled query and ``Rh``, ``Rw`` gathered from the learnt tables ``rel_pos_h``,
    ``rel_pos_w`` (``(2 * grid - 1, head_dim)``; ``grid`` is the window size, or the full
    token grid for global attention). The relative terms are handed to
    :func:`~torch.nn.functional.scaled_dot_product_attention` as an additive mask.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if grid is None:
                raise ValueError("relative positions need the grid size")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid[1] - 1, self.head_dim))

    def rel_pos_bias(self, q: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Additive logits ``(B', h*w, h*w)`` for queries ``q`` of shape ``(B', h*w, head_dim)``."""
        rh = relative_position_table(h, h, self.rel_pos_h).to(q.dtype)  # (h, h, c)
        rw = relative_position_table(w, w, self.rel_pos_w).to(q.dtype)  # (w, w, c)
        q = q.unflatten(1, (h, w))  # (B', h, w, c)
        bias_h = torch.einsum("bhwc,hkc->bhwk", q, rh)  # (B', h, w, kh)
        bias_w = torch.einsum("bhwc,wkc->bhwk", q, rw)  # (B', h, w, kw)
        # The einsum outputs are not row-major and a broadcast add would inherit their layout
        # (then cost a full copy in the reshape); making the small operands contiguous first
        # gives a row-major (B', h, w, kh, kw) result.
        bias = bias_h.contiguous()[..., :, None] + bias_w.contiguous()[..., None, :]
        return bias.view(q.shape[0], h * w, h * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, dim = x.shape
        n = h * w
        # (B, N, 3 * dim) -> 3 x (B, heads, N, head_dim)
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        mask = None
        if self.use_rel_pos:
            bias = self.rel_pos_bias(q.reshape(b * self.num_heads, n, self.head_dim), h, w)
            mask = bias.view(b, self.num_heads, n, n)
        out = attention(q, k, v, mask, self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, dim))


class ViTBlock(nn.Module):
    """Pre-norm transformer block on a ``(B, H, W, dim)`` grid; ``window_size == 0``
    means global attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        use_rel_pos: bool,
        window_size: int,
        grid: tuple[int, int],
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = RelPosAttention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            grid=(window_size, window_size) if window_size > 0 else grid,
        )
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window_size > 0:
            hw = (y.shape[1], y.shape[2])
            y, padded_hw = window_partition(y, self.window_size)
            y = window_unpartition(self.attn(y), self.window_size, padded_hw, hw)
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class ViTImageEncoder(nn.Module):
    """SAM 1's ViT image encoder (ViT-B/L/H).

    ``forward``: normalised images ``(B, in_chans, img_size, img_size)`` (``(B, 3, 1024, 1024)``
    for SAM) to embeddings ``(B, out_chans, img_size / patch_size, img_size / patch_size)``
    (``(B, 256, 64, 64)``).
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.img_size = cfg.img_size
        grid = (cfg.grid_size, cfg.grid_size)
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.pos_embed: nn.Parameter | None = None
        if cfg.use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, *grid, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            ViTBlock(
                cfg.embed_dim,
                cfg.num_heads,
                mlp_ratio=cfg.mlp_ratio,
                qkv_bias=cfg.qkv_bias,
                use_rel_pos=cfg.use_rel_pos,
                window_size=0 if i in cfg.global_attn_indexes else cfg.window_size,
                grid=grid,
                norm_eps=cfg.norm_eps,
            )
            for i in range(cfg.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, cfg.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(cfg.out_chans),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, H', W', D)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2)).contiguous()
