"""The two-way transformer of SAM's mask decoder: prompt tokens and image tokens
attend to each other in turn.

There are a handful of tokens (T ~ 7) and thousands of image positions (N = 4096), so
the attentions between them are computed with the projections re-associated onto the
token side: instead of projecting every image position to keys/values (or queries and
outputs), each head's projection is folded into the T token vectors. The result is the
same attention (up to float rounding) at about 2.3x fewer multiply-adds, which is most
of the cost of a click.
"""

from __future__ import annotations

import torch
from torch import nn

from anyseg.models.common import MLP, Attention, MLPBlock


def tokens_to_image(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q, k, v)`` for few queries ``(B, T, C)`` and many keys/values ``(B, N, C)``.

    Per head h: ``softmax((q W_q + b_q) (k W_k + b_k)^T / sqrt(d)) (v W_v + b_v)`` equals
    ``softmax(((q W_q + b_q) W_k^T) k^T / sqrt(d)) v W_v + b_v`` (the ``b_k`` term is constant
    along the softmax axis, and attention rows sum to one), so the image side is never
    projected.
    """
    b, t, c = q.shape
    h = attn.num_heads
    d = attn.internal_dim // h
    qh = attn.q_proj(q).reshape(b, t, h, d)
    qk = torch.einsum("bthd,hdc->bhtc", qh, attn.k_proj.weight.reshape(h, d, c)) * d**-0.5
    qk = qk.reshape(b, h * t, c)
    if k.dtype == torch.float32:
        scores = qk @ k.transpose(1, 2)  # (B, hT, N)
    else:  # bf16/fp16 product kernels want the N rows first (3x faster on AMX CPUs)
        scores = torch.bmm(k, qk.transpose(1, 2)).transpose(1, 2)
    probs = torch.softmax(scores, dim=-1)
    pv = (probs @ v).reshape(b, h, t, c)
    out = torch.einsum("bhtc,hdc->bthd", pv, attn.v_proj.weight.reshape(h, d, c)) + attn.v_proj.bias.reshape(h, d)
    return attn.out_proj(out.reshape(b, t, h * d))


def image_to_tokens(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q, k, v)`` for many queries ``(B, N, C)`` and few keys/values ``(B, T, C)``.

    The query projection is folded into the keys (``W_q^T k_h`` per head and token) and the
    output projection into the values (``v_h W_o^T``), so the N image positions meet only
    ``h * T`` vectors on each side.
    """
    b, t, c = k.shape
    h = attn.num_heads
    d = attn.internal_dim // h
    scale = d**-0.5
    kh = attn.k_proj(k).reshape(b, t, h, d)
    fold_q = torch.einsum("bthd,hdc->bcht", kh, attn.q_proj.weight.reshape(h, d, c)) * scale  # (B, C, h, T)
    bias = torch.einsum("bthd,hd->bht", kh, attn.q_proj.bias.reshape(h, d)) * scale  # (B, h, T)
    scores = (q @ fold_q.reshape(b, c, h * t)).reshape(b, -1, h, t) + bias.unsqueeze(1)
    # softmax over the T keys; written out because torch.softmax is slow on so short a last axis
    e = (scores - scores.amax(dim=-1, keepdim=True)).exp_()
    probs = (e / e.sum(dim=-1, keepdim=True)).reshape(b, -1, h * t)  # (B, N, hT)
    vh = attn.v_proj(v).reshape(b, t, h, d)
    fold_o = torch.einsum("bthd,chd->bhtc", vh, attn.out_proj.weight.reshape(c, h, d))  # (B, h, T, C)
    return torch.baddbmm(attn.out_proj.bias, probs, fold_o.reshape(b, h * t, c))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image cross-attention, token MLP, then
    image->token cross-attention; post-norm after each."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int, skip_first_layer_pe: bool,
                 lin_mlp: bool = False):
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        # the same function; SAM 1 checkpoints name its layers lin1/lin2, SAM 2's layers.0/1
        self.mlp = MLPBlock(dim, mlp_dim, nn.ReLU) if lin_mlp else MLP(dim, mlp_dim, dim, num_layers=2, activation=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        """``queries`` ``(B, Nq, C)`` tokens, ``keys`` ``(B, HW, C)`` image; returns both updated."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        k = keys + key_pe
        queries = self.norm2(queries + tokens_to_image(self.cross_attn_token_to_image, queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        keys = self.norm4(keys + image_to_tokens(self.cross_attn_image_to_token, k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int = 2, dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048, downsample_rate: int = 2,
                 lin_mlp: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, downsample_rate, skip_first_layer_pe=(i == 0), lin_mlp=lin_mlp)
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor):
        """``image``, ``image_pe``: ``(B, C, h, w)``; ``tokens``: ``(B, N, C)``.

        Returns the tokens ``(B, N, C)`` and image tokens ``(B, h*w, C)``.
        """
        keys = image.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        attn = tokens_to_image(self.final_attn_token_to_image, queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys
