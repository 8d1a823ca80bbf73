"""The two-way transformer of SAM's mask decoder: prompt tokens and image tokens
attend to each other in turn.

There are a handful of tokens (T ~ 7) and thousands of image positions (N = 4096), so
the attentions between them are computed with the projections re-associated onto the
token side: instead of projecting every image position to keys/values (or queries and
outputs), each head's projection is folded into the T token vectors. The result is the
same attention (up to float rounding) at about 2.3x fewer multiply-adds, which is most
of the cost of a click. The first block's image-side projections do not depend on the
prompt (with no mask prompt); the mask decoder computes them once per image
(:class:`ImageProjections`), and that block then attends directly.

The image tokens may be in a reduced type (bf16 / fp16) while the tokens stay fp32, and so
do the weights of most token-side products: they are of a few vectors, and cost more in a
reduced type (per-call weight packing) than they save. The token MLPs are the exception:
their 2 x 256 x 2048 weights are most of what a click reads, in a reduced type half as
many bytes, which pays (a decoder's reduced copy keeps them so, ``MaskDecoder.copy_in``).
Token-side results are cast to the image type where they meet the image, and back.

Each attention is written as its token-side steps (:func:`self_attention`,
:func:`image_queries`, :func:`attention_out`, :func:`token_keys`) and its image-side ones
(:func:`attend_image`, :func:`attend_projected`, :func:`update_image`). On the CPU without
gradients each token-side step is one compiled loop (``kernels.token_*``): in torch it is a
dozen or more operations on a few vectors each, whose per-call costs were most of a click's
transformer time after its five large products.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from anyseg import kernels
from anyseg.kernels import layer_norm_plus, loops_apply
from anyseg.models.common import (INT8_AVAILABLE, MLP, Attention, LastResult, MLPBlock, int8_mm, linear,
                                  parameters_of, relu_mlp, softmax_)


def per_head(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``einsum("bthd,hdc->bhtc", x, w)``: each head's ``(B, T, d)`` slice of ``x`` times that
    head's ``(d, c)`` matrix of ``w``, as one batched product over the heads (the einsum
    takes twice as long on a click's few tokens)."""
    b, t, h, d = x.shape
    y = torch.bmm(x.permute(2, 0, 1, 3).reshape(h, b * t, d), w)  # (h, B T, c)
    return y.reshape(h, b, t, -1).transpose(0, 1)


@dataclass
class Int8Keys:
    """One image's ``keys + key_pe`` ``(N, C)`` (the keys of the token -> image attentions and
    the queries of the image -> token one) as symmetric int8 rows, one scale per position:
    ``values`` ``(N, C)`` int8, ``scale`` ``(N,)`` float32. Made once per block from its bf16
    input (:meth:`of`) and read by both attentions' int8 scores (:func:`int8_softmax`)."""

    values: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def of(cls, keys_pe: torch.Tensor) -> "Int8Keys":
        """Of bf16 ``keys_pe`` ``(1, N, C)``."""
        return cls(*kernels.quantize_rows(keys_pe[0]))


def int8_softmax(rows: torch.Tensor, keys: Int8Keys, bias: torch.Tensor | None = None, group: int = 1) -> torch.Tensor:
    """Attention probabilities from int8 scores: ``rows`` ``(R, C)`` float32 (quantized per row
    here) times ``keys`` (:class:`Int8Keys`, ``N`` positions) in int8, scaled back, plus
    ``bias`` ``(R,)``, through a softmax along the positions (``group`` 1) or across each
    group of ``group`` consecutive rows (:func:`~anyseg.kernels.product_softmax`, which
    scales back in the same pass): ``(R, N)`` bf16."""
    q, scale = kernels.quantize_rows(rows.contiguous())
    bias = torch.zeros(len(rows)) if bias is None else bias.float()
    return kernels.product_softmax(int8_mm(q, keys.values.t()), scale, keys.scale, bias, group)


def self_attention(attn: Attention, norm: nn.LayerNorm, x: torch.Tensor, pe: torch.Tensor, skip_pe: bool,
                   pack: np.ndarray | None) -> torch.Tensor:
    """``norm(x + attn(x + pe, x + pe, x))`` for tokens ``x`` and their encoding ``pe`` ``(B,
    T, C)`` (``skip_pe``: ``norm(attn(x, x, x))``), by the token loop where ``pack`` is given
    (:func:`~anyseg.kernels.attention_pack` of ``attn`` and ``norm``)."""
    if pack is not None:
        return kernels.token_self_attention(x, pe, skip_pe, attn, pack, norm.eps)
    if skip_pe:
        return norm(attn(x, x, x))
    q = x + pe
    return norm(x + attn(q, q, x))


def image_queries(attn: Attention, x: torch.Tensor, pe: torch.Tensor, projected: bool,
                  pack: np.ndarray | None) -> torch.Tensor:
    """The queries of a token -> image attention ``attn`` for tokens ``x + pe`` ``(B, T, C)``,
    ``(x + pe) W_q + b_q`` per head scaled by ``d^-0.5``, float32, row ``h T + t``:
    ``projected`` (the image side is: see :func:`attend_projected`), ``(B, h T, d)``; else
    ``(B, h T, C)``, folded into the key projection (see :func:`attend_image`). By the token
    loop where ``pack`` is given."""
    if pack is not None:
        return kernels.token_queries(x, pe, attn, pack, projected)
    b, t, c = x.shape
    h = attn.num_heads
    d = attn.internal_dim // h
    q = attn.q_proj(x + pe)
    if projected:
        return attn.split_heads(q * d**-0.5).reshape(b, h * t, d)
    qk = per_head(q.reshape(b, t, h, d), attn.k_proj.weight.reshape(h, d, c)) * d**-0.5
    return qk.reshape(b, h * t, c)


def attend_image(qk: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_int8: Int8Keys | None = None) -> torch.Tensor:
    """The image side of a token -> image attention with many keys/values ``k``, ``v`` ``(B,
    N, C)``: per head h, ``softmax(q_h (k W_k,h + b_k,h)^T) (v W_v,h + b_v,h)`` equals
    ``softmax(q_h W_k,h^T k^T) v W_v,h + b_v,h`` (the ``b_k`` term is constant along the
    softmax axis, and attention rows sum to one), so the image side is never projected: from
    the queries folded into the key projection ``qk`` ``(B, h T, C)`` (:func:`image_queries`)
    this computes ``softmax(qk k^T) v`` ``(B, h T, C)`` (in the image's type), which
    :func:`attention_out` projects. ``k_int8``: ``k`` (one image's) as :class:`Int8Keys`,
    for the scores in int8."""
    if k_int8 is not None:
        probs = int8_softmax(qk[0], k_int8)[None]
    elif k.dtype == torch.float32:
        probs = softmax_(qk @ k.transpose(1, 2), dim=-1)  # (B, hT, N)
    else:  # bf16/fp16 product kernels want the N rows first (3x faster on AMX CPUs)
        probs = softmax_(torch.bmm(k, qk.to(k.dtype).transpose(1, 2)).transpose(1, 2).contiguous(), dim=-1)
    return probs @ v


def attend_projected(qh: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The image side of a token -> image attention whose image side is already projected per
    head: ``keys`` = ``k W_k + b_k`` as ``(h, d, N)``, ``values`` = ``v W_v + b_v`` as ``(h, N,
    d)`` (the layouts the two products read), the queries ``qh`` ``(B, h T, d)``
    (:func:`image_queries`): the heads' results ``(B, h T, d)`` (in the image's type)."""
    h, d, _ = keys.shape
    b = qh.shape[0]
    qh = qh.reshape(b, h, -1, d).to(keys.dtype)
    return (softmax_(qh @ keys, dim=-1) @ values).reshape(b, -1, d)


def attention_out(attn: Attention, norm: nn.LayerNorm, x: torch.Tensor, pv: torch.Tensor, projected: bool,
                  pack: np.ndarray | None) -> torch.Tensor:
    """``norm(x + attn(...))`` for tokens ``x`` ``(B, T, C)``, a token -> image attention's
    output from the result of :func:`attend_projected` (``projected``) or of
    :func:`attend_image`: the values' projection then ``out_proj``. By the token loop where
    ``pack`` is given."""
    pv = pv.to(x.dtype)
    if pack is not None:
        return kernels.token_attention_out(x, pv, attn, pack, projected, norm.eps)
    b, t, c = x.shape
    h = attn.num_heads
    d = attn.internal_dim // h
    if projected:
        out = attn.merge_heads(pv.reshape(b, h, t, d))
    else:
        pv = pv.reshape(b, h, t, c)
        out = per_head(pv.transpose(1, 2), attn.v_proj.weight.reshape(h, d, c).transpose(1, 2)).transpose(1, 2)
        out = (out + attn.v_proj.bias.reshape(h, d)).reshape(b, t, h * d)
    return norm(x + attn.out_proj(out))


def token_keys(attn: Attention, norm: nn.LayerNorm, x: torch.Tensor, m: torch.Tensor, pe: torch.Tensor, projected: bool,
               pack: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The token side of an image -> token attention ``attn`` whose keys are ``y + pe`` and
    values ``y = norm(x + m)`` (tokens ``(B, T, C)``), for :func:`update_image`: ``(y, keys,
    bias, values)``, per head, row ``h T + t``:

    - ``keys``: the key projections ``k_h = (y + pe) W_k,h + b_k,h`` scaled by ``d^-0.5``,
      ``(B, h T, d)`` where the image side is ``projected``; else folded into the query
      projection, ``k_h W_q,h`` ``(B, h T, C)``, with ``bias`` ``(B, h T)`` = ``k_h . b_q,h``
      (None where projected);
    - ``values``: the value projections folded into the output projection, ``v_h W_o,h^T``
      ``(B, h T, C)``, with the output bias shared out among the heads (``b_o / h``: each
      head's attention rows sum to one).

    By the token loop where ``pack`` is given."""
    if pack is not None:
        y, keys, bias, values = kernels.token_keys(x, m, pe, attn, pack, projected, norm.eps)
        return y, keys, None if projected else bias, values
    b, t, c = x.shape
    h = attn.num_heads
    d = attn.internal_dim // h
    y = norm(x + m)
    kh = attn.k_proj(y + pe).reshape(b, t, h, d)
    if projected:
        keys, bias = (kh.permute(0, 2, 1, 3) * d**-0.5).reshape(b, h * t, d), None
    else:
        keys = (per_head(kh, attn.q_proj.weight.reshape(h, d, c)) * d**-0.5).reshape(b, h * t, c)
        bias = (per_head(kh, attn.q_proj.bias.reshape(h, d, 1)) * d**-0.5).reshape(b, h * t)
    vh = attn.v_proj(y).reshape(b, t, h, d)
    values = per_head(vh, attn.out_proj.weight.reshape(c, h, d).permute(1, 2, 0)) + attn.out_proj.bias / h
    return y, keys, bias, values.reshape(b, h * t, c)


def update_image(heads: int, keys: torch.Tensor, bias: torch.Tensor | None, values: torch.Tensor,
                 q: torch.Tensor | None, residual: torch.Tensor, q_projected: torch.Tensor | None = None,
                 in_place: bool = False, q_int8: Int8Keys | None = None) -> torch.Tensor:
    """``residual + attn(q, k, v)`` for many image queries ``q`` ``(B, N, C)`` and a few
    tokens' keys/values, from their token side (:func:`token_keys`, ``heads`` heads);
    ``residual`` ``(B, N, C)``.

    The query projection is folded into the keys (``W_q^T k_h`` per head and token) and the
    output projection into the values (``v_h W_o^T``), so the N image positions meet only
    ``h T`` vectors on each side, and the product accumulates straight into the residual
    (``in_place``: into ``residual`` itself, which is returned). ``q_projected``: the
    queries ``q W_q + b_q`` per head, ``(h, d, N)``, when already known (then ``q`` is not
    read, and ``keys`` are the key projections). ``q_int8``: ``q`` (one image's) as
    :class:`Int8Keys`, for the scores in int8. The scores are laid out ``(B, h, T, N)``: the
    softmax over the few keys then runs along a long contiguous axis (on a short last axis
    it is several times slower).
    """
    b, ht, _ = keys.shape
    t = ht // heads
    dtype = residual.dtype  # the image side's
    if q_projected is not None:  # (B, h, T, d) @ (h, d, N)
        scores = keys.reshape(b, heads, t, -1).to(dtype) @ q_projected
        probs = softmax_(scores, dim=2).reshape(b, ht, -1)
    elif q_int8 is not None:
        probs = int8_softmax(keys[0], q_int8, bias[0], group=t)[None]
    else:
        scores = torch.baddbmm(bias[..., None].to(dtype), keys.to(dtype), q.transpose(1, 2))
        probs = softmax_(scores.reshape(b, heads, t, -1), dim=2).reshape(b, ht, -1)  # (B, hT, N)
    values = values.to(dtype)
    if in_place:
        return residual.baddbmm_(probs.transpose(1, 2), values)
    return torch.baddbmm(residual, probs.transpose(1, 2), values)


def norm_plus(norm: nn.LayerNorm, x: torch.Tensor, addend: torch.Tensor,
              int8: bool = False) -> tuple[torch.Tensor, torch.Tensor, Int8Keys | None]:
    """``(norm(x), norm(x) + addend, None)``; in one pass for bf16 image tokens on the CPU
    (:func:`~anyseg.kernels.layer_norm_plus`: each is a pass over a few MB), the norm
    written over ``x`` (a result of :func:`image_to_tokens`, the caller's own). ``int8``
    (one image's ``x`` ``(1, N, C)``): the last is ``norm(x) + addend`` as :class:`Int8Keys`,
    made in the same pass."""
    if loops_apply(x, addend) and addend.shape[0] == 1 and x.is_contiguous():
        if not int8:
            return (*layer_norm_plus(x, norm, addend, in_place=True), None)
        made = Int8Keys(torch.empty(x.shape[1:], dtype=torch.int8), torch.empty(x.shape[1]))
        return (*layer_norm_plus(x, norm, addend, in_place=True, int8=(made.values, made.scale)), made)
    y = norm(x)
    y_plus = y + addend
    return y, y_plus, Int8Keys.of(y_plus) if int8 else None


@dataclass
class ImageProjections:
    """What the first block computes from the image side alone: with no mask prompt it is
    the same for every prompt on an image, so it is computed once."""

    keys: torch.Tensor  # token -> image keys, (image + pe) W_k + b_k, per head (h, d, N)
    values: torch.Tensor  # token -> image values, image W_v + b_v, per head (h, N, d)
    queries: torch.Tensor  # image -> token queries, (image + pe) W_q + b_q, per head (h, d, N)


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
        self._packed_of = LastResult()  # the token MLP's weights laid out for oneDNN, see _mlp
        self._packs_of = LastResult()  # the token steps' parameters for the token loops, see token_packs

    def _load_from_state_dict(self, *args, **kwargs):
        self._packed_of.clear()  # the kept weights are the old ones
        self._packs_of.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def project_image(self, keys: torch.Tensor, key_pe: torch.Tensor) -> ImageProjections:
        """The image-side projections for image tokens ``keys`` ``(1, HW, C)``, in their type."""

        def project(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
            return linear(x, layer.weight.to(x.dtype), layer.bias.to(x.dtype))

        def heads(x: torch.Tensor, attn: Attention) -> torch.Tensor:  # (1, N, D) -> (h, N, d)
            return x[0].reshape(x.shape[1], attn.num_heads, -1).transpose(0, 1)

        k = keys + key_pe
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        return ImageProjections(
            heads(project(t2i.k_proj, k), t2i).transpose(1, 2).contiguous(),
            heads(project(t2i.v_proj, keys), t2i).contiguous(),
            heads(project(i2t.q_proj, k), i2t).transpose(1, 2).contiguous(),
        )

    def shift_projections(self, projected: ImageProjections, x: torch.Tensor, weight: torch.Tensor) -> ImageProjections:
        """:meth:`project_image` of image tokens shifted by ``x @ weight^T`` from ``projected``,
        that of the tokens unshifted: ``x`` ``(N, c)`` in the projections' type, ``weight``
        ``(C, c)`` float32 (a mask prompt's
        :meth:`~anyseg.models.prompt_encoder.MaskEmbedding.shift_factors`, c = 17 against C =
        256). Each projection ``W`` is linear, so its shift is ``x @ (W weight)^T``: a product
        over the c channels instead of the C, added to a copy of the projection."""
        dtype = projected.keys.dtype

        def folded(layer: nn.Linear) -> torch.Tensor:  # (h d, c)
            return (layer.weight.float() @ weight).to(dtype)

        def shifted(layer: nn.Linear, to: torch.Tensor) -> torch.Tensor:  # to (h, d, N), as (h d, N)
            return torch.addmm(to.reshape(-1, to.shape[-1]), folded(layer), x.t()).reshape(to.shape)

        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        values = projected.values  # (h, N, d)
        per_head = folded(t2i.v_proj).reshape(len(values), -1, x.shape[1]).transpose(1, 2)  # (h, c, d)
        values = torch.baddbmm(values, x.expand(len(values), -1, -1), per_head)
        return ImageProjections(shifted(t2i.k_proj, projected.keys), values, shifted(i2t.q_proj, projected.queries))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        """The token MLP (:func:`~anyseg.models.common.relu_mlp`) in its weights' type (a
        decoder's reduced copy keeps them in bf16 / fp16: see the module's docstring), the
        result in ``x``'s."""
        first, second = (self.mlp.lin1, self.mlp.lin2) if isinstance(self.mlp, MLPBlock) else self.mlp.layers
        return relu_mlp(x.to(first.weight.dtype), first, second, self._packed_of).to(x.dtype)

    def token_packs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The parameters of the block's three token steps for the token loops
        (:func:`~anyseg.kernels.attention_pack`: self-attention and ``norm1``, token -> image
        attention and ``norm2``, ``norm3`` and image -> token attention), made once and kept."""
        steps = ((self.self_attn, self.norm1), (self.cross_attn_token_to_image, self.norm2),
                 (self.cross_attn_image_to_token, self.norm3))
        params = [p for step in steps for module in step for p in parameters_of(module)]
        return self._packs_of.get(params, lambda: tuple(kernels.attention_pack(*step) for step in steps))

    def forward(self, queries, keys, query_pe, key_pe, projected: ImageProjections | None = None,
                own_keys: bool = False, keys_pe: torch.Tensor | None = None, keys_int8: Int8Keys | None = None,
                int8: bool = False):
        """``queries`` ``(B, Nq, C)`` tokens, ``keys`` ``(B, HW, C)`` image; returns both updated,
        the updated ``keys + key_pe``, and (``int8``: one image's) that as :class:`Int8Keys`
        (else None). ``projected``: :meth:`project_image` of ``keys``, when known.
        ``own_keys``: ``keys`` may be overwritten (an earlier block's output, no gradients
        recorded). ``keys_pe``: ``keys + key_pe``, when known; ``keys_int8``: it as
        :class:`Int8Keys`, for the attention scores in int8. The token side runs in the
        token loops where they apply (float32 tokens on the CPU, no gradients)."""
        packs = self.token_packs() if kernels.tokens_apply(queries, query_pe) else (None, None, None)
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        queries = self_attention(self.self_attn, self.norm1, queries, query_pe, self.skip_first_layer_pe, packs[0])

        qk = image_queries(t2i, queries, query_pe, projected is not None, packs[1])
        if projected is None:
            k = keys + key_pe if keys_pe is None else keys_pe
            pv = attend_image(qk, k, keys, keys_int8)
        else:
            k = None
            pv = attend_projected(qk, projected.keys, projected.values)
        queries = attention_out(t2i, self.norm2, queries, pv, projected is not None, packs[1])

        m = self._mlp(queries)
        queries, tk, bias, values = token_keys(i2t, self.norm3, queries, m, query_pe, projected is not None, packs[2])
        q_projected = None if projected is None else projected.queries
        attn = update_image(i2t.num_heads, tk, bias, values, k, keys, q_projected, in_place=own_keys, q_int8=keys_int8)
        return (queries, *norm_plus(self.norm4, attn, key_pe, int8))


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
        # the attention scores against the image after the first block in int8 (a decoder's
        # int8 copy, MaskDecoder.copy_in): for one image's bf16 tokens on the CPU
        self.int8_scores = False
        self._pack_of = LastResult()  # the final attention's parameters for the token loops

    def _load_from_state_dict(self, *args, **kwargs):
        self._pack_of.clear()  # the kept parameters are the old ones
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, keys: torch.Tensor, key_pe: torch.Tensor, tokens: torch.Tensor,
                projected: ImageProjections | None = None, rows: list[int] | None = None):
        """``keys`` ``(B, h*w, C)`` image tokens, ``key_pe`` ``(1, h*w, C)``, ``tokens``
        ``(B, N, C)``; ``projected``: the first layer's :meth:`~TwoWayAttentionBlock.project_image`
        of ``keys`` when it is known; ``rows``: the tokens whose outputs are wanted (all by
        default). The last attention, from each token to the image alone, runs for those only.

        Returns the tokens ``(B, len(rows), C)`` and image tokens ``(B, h*w, C)``.
        """
        int8 = self.int8_scores and INT8_AVAILABLE and len(keys) == 1 and loops_apply(keys)
        queries, keys_pe, keys_int8 = tokens, None, None
        for i, layer in enumerate(self.layers):
            queries, keys, keys_pe, keys_int8 = layer(
                queries, keys, tokens, key_pe, projected if i == 0 else None,
                own_keys=i > 0 and not torch.is_grad_enabled(), keys_pe=keys_pe, keys_int8=keys_int8, int8=int8)
        if rows is not None and len(rows) < tokens.shape[1]:
            queries, tokens = queries[:, rows], tokens[:, rows]
        final, norm = self.final_attn_token_to_image, self.norm_final_attn
        pack = None
        if kernels.tokens_apply(queries, tokens):
            params = parameters_of(final) + parameters_of(norm)
            pack = self._pack_of.get(params, lambda: kernels.attention_pack(final, norm))
        pv = attend_image(image_queries(final, queries, tokens, False, pack), keys_pe, keys, keys_int8)
        return attention_out(final, norm, queries, pv, False, pack), keys
