"""Small building blocks shared by every SAM-family architecture."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

from anyseg import kernels
from anyseg.kernels import loops_apply


SCORES_BYTES = 16 << 20
"""Size of the scores :func:`attention` computes at a time on its CPU paths in blocks:
within the last-level cache, so the scores are still cached when the softmax and the
product with the values read them (a whole batch of small windows at once; a global
attention of 4096 tokens 512 query rows at a time)."""


def softmax_(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``softmax(x, dim)``, written over ``x`` (a product's fresh output, contiguous) where
    no gradients are recorded: its lines are in the caches already, a new buffer's are not
    (a click after idle time finds them cold)."""
    if torch.is_grad_enabled():
        return torch.softmax(x, dim)
    return torch.softmax(x, dim, out=x)


def in_blocks(q: torch.Tensor, narrow_values: bool = False) -> bool:
    """Whether :func:`attention` computes queries ``q`` in blocks of rows rather than with
    torch's fused kernel: in bf16 / fp16 on the CPU without gradients; and in fp32 there too
    where the values are narrower than the queries, with no mask (``narrow_values``: SAM 2's
    cross-attention to its 64-wide memory, see :func:`attention`)."""
    if q.device.type != "cpu" or torch.is_grad_enabled():
        return False
    return q.dtype in (torch.bfloat16, torch.float16) or (
        narrow_values and q.dtype == torch.float32 and _onednn_linear is not None)


def _repeating_rows(mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``mask`` broadcast to ``shape`` ``(..., n)`` as the ``(P, n)`` rows that repeat along
    the rows of ``shape`` flattened: what is left after the leading broadcast axes (copied
    where it is not contiguous, as a block of query rows of a mask is not)."""
    m = mask.expand(shape)
    lead = 0
    while lead < m.dim() - 2 and m.stride(lead) == 0:
        lead += 1
    return m[(0,) * lead].contiguous().view(-1, shape[-1])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              scale: float | None = None) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)`` for ``q``
    ``(..., Nq, d)``, ``k`` ``(..., Nk, d)``, ``v`` ``(..., Nk, dv)`` and an additive ``mask``
    broadcast to ``(..., Nq, Nk)``: ``(..., Nq, dv)``.

    In bf16 / fp16 on the CPU (no gradients), as plain products and a softmax written over
    the scores, a block of query rows at a time (:data:`SCORES_BYTES`): on CPUs without AMX,
    torch's fused kernel computes its small blocks' products at a fraction of the speed of
    one product over many rows (1.4-2x slower in all on an AMD EPYC: a global attention of
    SAM 2's encoder, SAM 2's batches of windows, TinyViT's). The scores are rounded to the reduced type
    before the softmax (the fused kernel keeps them in fp32): the bf16 accuracy figures
    (``benchmarks/precision_accuracy.py``) include it. In bf16 where the compiled loops apply,
    the softmax is :func:`anyseg.kernels.softmax_`, which adds a mask in float32 (TinyViT's
    offset biases) and is faster than torch's on rows of every length.

    In fp32 on the CPU (no gradients), where the values are narrower than the queries and
    there is no mask, the blocks' products are oneDNN's (:func:`_fp32_blocks`): there torch's
    fused kernel leaves its fast path, whereas these products gain from the narrow values.
    """
    if not in_blocks(q, narrow_values=mask is None and v.shape[-1] < q.shape[-1]):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    nq, nk = q.shape[-2], k.shape[-2]
    q = q * (q.shape[-1] ** -0.5 if scale is None else scale)
    if q.dtype == torch.float32:
        return _fp32_blocks(q, k, v, max(1, SCORES_BYTES // (nk * q.element_size())))
    groups = q[..., 0, 0].numel()
    rows = max(1, SCORES_BYTES // (groups * nk * q.element_size()))
    kt = k.transpose(-2, -1)
    if rows < nq:  # laid out once for the blocks' products (each would copy it again)
        kt = kt.contiguous()
    if mask is not None:
        mask = mask.to(q.dtype)
    compiled = loops_apply(q)  # bf16: the compiled softmax, the mask added in it

    def block(start: int, stop: int) -> torch.Tensor:
        scores = q[..., start:stop, :] @ kt
        part = mask  # the block's rows of the mask (all of it where its rows broadcast)
        if mask is not None and mask.shape[-2] == nq:
            part = mask[..., start:stop, :]
        if compiled:
            return kernels.softmax_(scores, None if part is None else _repeating_rows(part, scores.shape)) @ v
        if part is not None:
            scores += part
        return softmax_(scores, -1) @ v

    if rows >= nq:
        return block(0, nq)
    out = q.new_empty(q.shape[:-1] + v.shape[-1:])
    for start in range(0, nq, rows):
        out[..., start : start + rows, :] = block(start, start + rows)
    return out


def _fp32_blocks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: int) -> torch.Tensor:
    """``softmax(q k^T) v`` for fp32 ``q`` ``(..., Nq, d)`` (scaled already), ``k`` and ``v``
    broadcast to its leading axes, one head (group) and ``rows`` query rows at a time, both
    products oneDNN's linear kernel (MKL's fp32 products run well below the peak on AMD CPUs,
    see :func:`linear`; the kernel reads ``k`` and ``v^T`` as weights). On the AMD EPYC (2
    threads), SAM 2's cross-attention to 7 memory frames (4096 queries, 28,736 keys, 64-wide
    values): 0.44 s against 0.75 s for torch's fused kernel on the values projected to 256."""
    lead, (nq, _), dv = q.shape[:-2], q.shape[-2:], v.shape[-1]
    k, v = k.expand(*lead, *k.shape[-2:]), v.expand(*lead, *v.shape[-2:])
    out = q.new_empty(*lead, nq, dv)
    for group in itertools.product(*map(range, lead)):
        keys, values = k[group].contiguous(), v[group].t().contiguous()
        for start in range(0, nq, rows):
            scores = _onednn_linear(q[group][start : start + rows], keys, None, "none", [], "")
            out[group][start : start + rows] = _onednn_linear(softmax_(scores, -1), values, None, "none", [], "")
    return out


class MLP(nn.Module):
    """``num_layers`` linear layers with an activation between them.

    Maps ``(..., input_dim)`` to ``(..., output_dim)``; optionally ends with a sigmoid.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(Linear(a, b) for a, b in zip(dims_in, dims_out))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class MLPBlock(nn.Module):
    """Two linear layers named ``lin1``, ``lin2`` (SAM 1's checkpoint names) with an
    activation between: ``(..., dim)`` -> ``(..., dim)``."""

    def __init__(self, dim: int, hidden_dim: int, activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = Linear(dim, hidden_dim)
        self.lin2 = Linear(hidden_dim, dim)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a ``(B, C, H, W)`` tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def parameters_of(module: nn.Module) -> list[torch.Tensor]:
    """``list(module.parameters())`` for a module without shared parameters, read from the
    modules' own tables: a click keys its kept results on its small layers' parameters,
    which ``parameters()`` takes several times as long to list (the hypernetworks' 26 us ->
    4 us on the AMD host)."""
    found = [p for p in module._parameters.values() if p is not None]
    for child in module._modules.values():
        if child is not None:
            found += parameters_of(child)
    return found


def kept(cache: dict, key, make):
    """``cache[key]``, made by ``make()`` the first time. While torch's compiler traces it is
    made afresh, in the graph, and not kept: a kept one would be state that the graph checks
    and is recompiled for once it is filled."""
    if torch.compiler.is_compiling():
        return make()
    if key not in cache:
        cache[key] = make()
    return cache[key]


class LastResult:
    """The result of a function of some tensors, kept for the next call on the same tensors
    (the same memory, shape, strides and version: references to them are held, so that
    memory is not reused, and an in-place change makes a new version; inference tensors
    have none, so an owner whose weights may be such clears its results when it loads new
    ones). Several prompts on one image reuse the image-side work this way, layers their
    stacked weights, and a video session a frame's conditioning. Nothing is kept while
    gradients are recorded, nor while torch's compiler traces (the result is then computed
    in the graph: kept, it would be state that the graph checks)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._key, self._inputs, self._value = None, None, None
        self.reused = False  # whether the last get() returned the kept result

    def get(self, inputs: tuple[torch.Tensor, ...], compute, extra=()):
        """``compute()``, or the kept result if it is of the same ``inputs`` and the same
        other arguments ``extra`` (compared by value)."""
        if torch.compiler.is_compiling():
            self.reused = False
            return compute()
        key = [(t.data_ptr(), t.shape, t.stride(), None if t.is_inference() else t._version) for t in inputs]
        key.append(extra)
        self.reused = self._key == key
        if self.reused:
            return self._value
        value = compute()
        if not torch.is_grad_enabled():
            self._key, self._inputs, self._value = key, inputs, value
        return value


ONEDNN_ROWS = 1024
"""Rows from which :func:`linear` takes oneDNN's kernel on the CPU: below, the kernel's
per-call cost outweighs its gain (a click's few tokens keep torch's product)."""

_onednn_linear = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
if not torch.backends.mkldnn.is_available():
    _onednn_linear = None


def _onednn_rows(x: torch.Tensor) -> bool:
    """Whether oneDNN's linear kernel may take a product of ``x`` ``(..., K)`` at all: at least
    :data:`ONEDNN_ROWS` fp32 / bf16 rows on the CPU, no gradients, not while torch's compiler
    traces (it lowers the kernel for constant weights only). The cheap, most often false
    tests first: a click's products have few rows."""
    return (
        _onednn_linear is not None
        and x.numel() >= ONEDNN_ROWS * x.shape[-1]
        and x.dtype in (torch.float32, torch.bfloat16)
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
    )


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether :func:`linear` takes oneDNN's kernel: :func:`_onednn_rows`, weights of
    ``x``'s type, outside autocast (see :func:`_autocast_onednn_applies`)."""
    return (
        _onednn_rows(x)
        and weight.dtype == x.dtype
        and (bias is None or bias.dtype == x.dtype)
        and not torch.is_autocast_enabled("cpu")
    )


def _autocast_onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :class:`Linear` computes ``x`` times its float32 ``weight`` through oneDNN's
    linear kernel in bf16 under the CPU's bf16 autocast (the bf16 and int8 precisions'
    encodes, the video tracker's memory layers): :func:`_onednn_rows`."""
    return (
        _onednn_rows(x)
        and weight.dtype == torch.float32
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; on the CPU without gradients or autocast, for fp32 /
    bf16 products of at least :data:`ONEDNN_ROWS` rows, through oneDNN's linear kernel
    (torch's own ``mkldnn._linear_pointwise``, which its compiler emits) rather than MKL,
    whose fp32 products run well below the peak on AMD CPUs. Measured on an AMD EPYC (2
    threads): fp32 products 10-30% faster (results differ by summation order), fp32 encodes
    6-19%."""
    if _onednn_applies(x, weight, bias):
        return _onednn_linear(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


_reorder_linear_weight = getattr(getattr(torch.ops, "mkldnn", None), "_reorder_linear_weight", None)


def relu_mlp(x: torch.Tensor, first: nn.Linear, second: nn.Linear, packed: LastResult) -> torch.Tensor:
    """``second(relu(first(x)))`` for ``x`` ``(..., C)`` of a few rows (a click's tokens).

    On the CPU without gradients, in fp32 / bf16, through oneDNN's linear kernel with both
    weights laid out for it once (kept in ``packed``, a :class:`LastResult` of the caller's)
    and the ReLU applied inside the first product: each call of torch's product lays the
    weight out again, which on a few rows is most of its time. Measured on an AMD EPYC (2
    threads) for SAM's token MLP (8 x 256 -> 2048 -> 256): bf16 188 -> 108 us (the same
    values), fp32 353 -> 160 us (summed in another order)."""
    params = (first.weight, first.bias, second.weight, second.bias)
    if (_onednn_linear is None or _reorder_linear_weight is None or torch.is_grad_enabled()
            or torch.compiler.is_compiling() or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16)
            or any(p is None or p.dtype != x.dtype for p in params)):
        return second(F.relu(first(x)))
    weights = packed.get((first.weight, second.weight),
                         lambda: (_reorder_linear_weight(first.weight, None), _reorder_linear_weight(second.weight, None)))
    rows = x.reshape(-1, x.shape[-1])
    hidden = _onednn_linear(rows, weights[0], first.bias, "relu", [], "")
    return _onednn_linear(hidden, weights[1], second.bias, "none", [], "").reshape(*x.shape[:-1], -1)


INT8_DEPTH = 384
"""Input and output widths from which :class:`Linear` runs in int8 under
:func:`int8_linears`. On an AMD EPYC (2 threads, AVX-512 VNNI) a whole int8 layer
(quantizing, product, scaling back) takes 0.6x the time of the bf16 one from there on
(4096 x 384 x 1536: 6.9 vs 11.5 ms, 2026-12-07). Since its products run in parts of
:data:`INT8_CHUNK_ROWS` rows and its passes are compiled, int8 is faster from about 96 x 256
weights too (16384 x 192 x 768: 8.0 vs 12.0 ms; 65536 x 96 x 384: 9.0 vs 12.0; 4096 x 320 x
1280: 5.2 vs 8.3; even at 96 x 96), but narrower layers cost accuracy more than they save
time: with every TinyViT linear of 96 x 256 weights or more in int8, MobileSAM's int8 encode
is 9-13% faster and its mean mask IoU against the official fp32 outputs 0.958 (min 0.865)
instead of 0.978 (min 0.943); SAM 2.1-tiny's 3.5% faster at 0.983 instead of 0.984."""

_int8 = ContextVar("anyseg_int8_linears", default=False)
int8_mm = getattr(torch, "_int_mm", None)
"""torch's int8 x int8 -> int32 product ``(M, K) @ (K, N)`` (None where this torch has none)."""
INT8_AVAILABLE = int8_mm is not None
"""Whether this torch has the int8 product the int8 paths use (``torch._int_mm``)."""


@contextmanager
def int8_linears():
    """Within this context (in this thread or task), :class:`Linear` layers compute products
    of at least :data:`ONEDNN_ROWS` rows and :data:`INT8_DEPTH` input and output features on
    the CPU in int8, without gradients: weights quantized per output feature (once, and
    kept), inputs per row at each call, both symmetric (``torch._int_mm`` multiplies them);
    the int32 products scaled back, plus the float32 bias, to bf16 (the type autocast gives
    a product). The ``"int8"`` precision's image encode (:mod:`anyseg.predictors.precision`)."""
    token = _int8.set(True)
    try:
        yield
    finally:
        _int8.reset(token)


def _int8_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :class:`Linear` computes ``x`` times ``weight`` in int8 (under :func:`int8_linears`)."""
    n, k = weight.shape
    return (
        INT8_AVAILABLE
        and k >= INT8_DEPTH
        and n >= INT8_DEPTH
        and x.numel() >= ONEDNN_ROWS * k
        and x.dtype in (torch.float32, torch.bfloat16)
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and _int8.get()  # last: torch's compiler does not trace context variables
    )


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(N, K)`` weight as symmetric int8 per output feature: ``(q^T, scale)``, ``q^T``
    ``(K, N)`` int8 (a transposed view, as the product reads it) and ``scale`` ``(N,)``
    float32 = each row's largest magnitude / 127."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / 127
    return torch.round(w / scale[:, None]).to(torch.int8).t(), scale


INT8_CHUNK_ROWS = 8192
"""Rows :func:`int8_product` quantizes and multiplies at a time: its int8 rows and int32
products stay a few MB (a click's 4096 pixels in one go) however many rows there are."""


def int8_product(x: torch.Tensor, q_t: torch.Tensor, col_scale: torch.Tensor, bias: torch.Tensor,
                 addend: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ w^T + bias (+ addend)`` in int8 on the CPU, for ``x`` ``(..., K)`` (bf16 or float32)
    and a weight quantized by :func:`quantize_weight` (``q_t`` ``(K, N)``, ``col_scale`` ``(N,)``):
    ``x``'s rows quantized symmetrically, the int32 products scaled back, plus the float32
    ``bias`` ``(N,)`` and the bf16 ``addend`` rows (repeating along x's rows, see
    :func:`anyseg.kernels.dequantize_rows`), to bf16 ``(..., N)``; in parts of about
    :data:`INT8_CHUNK_ROWS` rows (more than 16 each, as the int8 product needs)."""
    rows = x.reshape(-1, x.shape[-1])
    out = torch.empty(rows.shape[0], q_t.shape[1], dtype=torch.bfloat16)
    parts = -(-rows.shape[0] // INT8_CHUNK_ROWS)
    for i in range(parts):
        start, stop = rows.shape[0] * i // parts, rows.shape[0] * (i + 1) // parts
        q, row_scale = kernels.quantize_rows(rows[start:stop])
        kernels.dequantize_rows(int8_mm(q, q_t), row_scale, col_scale, bias, addend, start, out[start:stop])
    return out.reshape(*x.shape[:-1], -1)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state-dict names) computed by :func:`linear`,
    in int8 within :func:`int8_linears`, or under the CPU's bf16 autocast through oneDNN's
    linear kernel with bf16 copies of the weight and bias, made once and kept. Autocast
    would cast them again in each autocast region and run its own bf16 product, which first
    copies the bias over the whole output: on an AMD EPYC the wide first-stage products of
    SAM 2's encoder take 20-35% longer that way, bf16 encodes of SAM 2.1-tiny and MobileSAM
    3-7%. The kept copies hold half the float32 weights' memory, as much as autocast's cast
    cache holds during an encode (peak memory unchanged)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._quantized_of = LastResult()  # the int8 weight and float32 bias, see forward
        self._bf16_of = LastResult()  # the bf16 weight and bias, see forward

    def _load_from_state_dict(self, *args, **kwargs):
        self._quantized_of.clear()  # the kept weights are copies of the old parameters
        self._bf16_of.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def _bf16(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias (None without one) as bf16."""
        bias = None if self.bias is None else self.bias.detach().to(torch.bfloat16)
        return self.weight.detach().to(torch.bfloat16), bias

    def _quantized(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:func:`quantize_weight` of the weight, and the bias as float32 (zeros without one)."""
        bias = torch.zeros(self.out_features) if self.bias is None else self.bias.detach().float()
        return (*quantize_weight(self.weight), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = (self.weight,) if self.bias is None else (self.weight, self.bias)
        if _int8_applies(x, self.weight):
            q_t, col_scale, bias = self._quantized_of.get(params, self._quantized)
            return int8_product(x, q_t, col_scale, bias)
        if _autocast_onednn_applies(x, self.weight):
            weight, bias = self._bf16_of.get(params, self._bf16)
            return _onednn_linear(x.to(torch.bfloat16), weight, bias, "none", [], "")
        return linear(x, self.weight, self.bias)


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections and an optional
    down-projection of the internal width (``embedding_dim // downsample_rate``).

    ``q``: ``(B, Nq, embedding_dim)``; ``k``, ``v``: ``(B, Nk, kv_in_dim)``;
    returns ``(B, Nq, embedding_dim)``.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        kv_in_dim: int | None = None,
    ) -> None:
        super().__init__()
        kv_in_dim = embedding_dim if kv_in_dim is None else kv_in_dim
        self.internal_dim = embedding_dim // downsample_rate
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.num_heads = num_heads
        self.q_proj = Linear(embedding_dim, self.internal_dim)
        self.k_proj = Linear(kv_in_dim, self.internal_dim)
        self.v_proj = Linear(kv_in_dim, self.internal_dim)
        self.out_proj = Linear(self.internal_dim, embedding_dim)
        self._stacked_of = LastResult()  # see project

    def _load_from_state_dict(self, *args, **kwargs):
        self._stacked_of.clear()  # the kept stack is of the old weights
        super()._load_from_state_dict(*args, **kwargs)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)`` -> ``(B, heads, N, C // heads)``."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, heads, N, c)`` -> ``(B, N, heads * c)``."""
        b, h, n, c = x.shape
        return x.transpose(1, 2).reshape(b, n, h * c)

    def project(self, q, k, v):
        """Each input's projection, split in heads ``(B, heads, N, c)``. Without gradients,
        inputs that are one tensor (``q`` and ``k``, or all three) share one product with
        the projections' weights stacked (once, and kept: :class:`LastResult`)."""
        if q is not k or torch.is_grad_enabled():
            return self.split_heads(self.q_proj(q)), self.split_heads(self.k_proj(k)), self.split_heads(self.v_proj(v))
        layers = [self.q_proj, self.k_proj] + ([self.v_proj] if v is q else [])
        weight, bias = self._stacked_of.get(
            tuple(p for layer in layers for p in (layer.weight, layer.bias)),
            lambda: (torch.cat([layer.weight for layer in layers]), torch.cat([layer.bias for layer in layers])),
        )
        parts = [self.split_heads(x) for x in linear(q, weight, bias).split(self.internal_dim, dim=-1)]
        return parts[0], parts[1], parts[2] if v is q else self.split_heads(self.v_proj(v))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self.project(q, k, v)
        return self.out_proj(self.merge_heads(attention(q, k, v)))
