"""SAM 2's memory attention: the current frame's features self-attend, then
cross-attend to the memory bank (spatial memories and object pointers), with 2-D
axial rotary encodings on the spatial tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyseg.models.common import Attention, Linear, attention, in_blocks, kept
from anyseg.models.position import apply_rope, axial_rope


class RoPEAttention(Attention):
    """:class:`Attention` with axial RoPE on queries and on the first keys.

    The last ``num_k_exclude_rope`` keys (object pointers) are not rotated. When there
    are more keys than queries, the rotations repeat per stacked memory frame.
    """

    def __init__(self, dim: int, num_heads: int = 1, kv_in_dim: int | None = None, theta: float = 10000.0):
        super().__init__(dim, num_heads, downsample_rate=1, kv_in_dim=kv_in_dim)
        self.theta = theta
        self._freqs: dict[tuple, torch.Tensor] = {}

    def freqs(self, n: int, device) -> torch.Tensor:
        """:func:`~anyseg.models.position.axial_rope` of a square grid of ``n`` tokens, on
        ``device``, kept per size and device (:func:`~anyseg.models.common.kept`)."""
        side = int(round(n**0.5))
        return kept(self._freqs, (side, str(device)),
                    lambda: axial_rope(self.internal_dim // self.num_heads, side, side, self.theta).to(device))

    def forward(self, q, k, v, num_k_exclude_rope: int = 0) -> torch.Tensor:
        """``q`` ``(B, Nq, dim)``, ``k`` ``(B, Nk, kv_in_dim)``, ``v`` ``(B, Nk, kv_in_dim)``:
        ``(B, Nq, dim)``.

        Where the values are narrower than a head (the cross-attention to the 64-wide memory:
        ``kv_in_dim`` < ``internal_dim / heads``) and the attention runs in blocks
        (:func:`~anyseg.models.common.in_blocks`: on the CPU without gradients), the value
        projection runs after the attention, on ``Nq`` rows instead of ``Nk``: each head's
        ``P (v W_v^T + b_v)`` equals ``(P v) W_v^T + b_v`` as the attention's rows sum to one,
        and the product with the memory's ~28k values then has 64 columns instead of 256
        (torch's fused kernel, elsewhere, gains nothing from narrower values).
        """
        h, head_dim = self.num_heads, self.internal_dim // self.num_heads
        fold = False
        if v.shape[-1] < head_dim:
            q, k = self.split_heads(self.q_proj(q)), self.split_heads(self.k_proj(k))
            fold = in_blocks(q, narrow_values=True)
            # (B, h, Nk, kv_in_dim), every head's; or projected as usual
            v = v.unsqueeze(1).expand(-1, h, -1, -1) if fold else self.split_heads(self.v_proj(v))
        else:
            q, k, v = self.project(q, k, v)
        freqs = self.freqs(q.shape[-2], q.device)
        q = apply_rope(q, freqs)
        n_rope = k.shape[-2] - num_k_exclude_rope
        if n_rope > 0:
            k = torch.cat([apply_rope(k[:, :, :n_rope], freqs), k[:, :, n_rope:]], dim=2)
        out = attention(q, k, v)
        if fold:  # (B, h, Nq, kv_in_dim) -> (B, h, Nq, head_dim), each head by its rows of W_v
            weight = self.v_proj.weight.view(h, head_dim, -1).transpose(1, 2)
            out = out @ weight + self.v_proj.bias.view(h, 1, head_dim)
        return self.out_proj(self.merge_heads(out))


class MemoryAttentionLayer(nn.Module):
    """Pre-norm: RoPE self-attention, RoPE cross-attention to memory (keys get the
    memory position encoding), then a ReLU feed-forward."""

    def __init__(self, dim: int = 256, kv_dim: int = 64, ffn_dim: int = 2048):
        super().__init__()
        self.self_attn = RoPEAttention(dim)
        self.cross_attn_image = RoPEAttention(dim, kv_in_dim=kv_dim)
        self.linear1 = Linear(dim, ffn_dim)
        self.linear2 = Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, memory, memory_pos, num_obj_ptr_tokens: int = 0):
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y)
        y = self.norm2(x)
        x = x + self.cross_attn_image(y, memory + memory_pos, memory, num_k_exclude_rope=num_obj_ptr_tokens)
        y = self.norm3(x)
        return x + self.linear2(F.relu(self.linear1(y)))


class MemoryAttention(nn.Module):
    def __init__(self, dim: int = 256, kv_dim: int = 64, num_layers: int = 4):
        super().__init__()
        self.layers = nn.ModuleList(MemoryAttentionLayer(dim, kv_dim) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        x_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int = 0,
    ) -> torch.Tensor:
        """``x``, ``x_pos``: ``(B, HW, dim)`` current-frame tokens; ``memory``,
        ``memory_pos``: ``(B, M, kv_dim)``, the last ``num_obj_ptr_tokens`` being object
        pointers. Returns ``(B, HW, dim)``."""
        x = x + 0.1 * x_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, num_obj_ptr_tokens)
        return self.norm(x)
