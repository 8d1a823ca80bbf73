"""The shared attention: torch's fused kernel where gradients, fp32 or another device ask
for it; in bf16 / fp16 on the CPU, blocks of query rows whose result is the fused kernel's
to the reduced type's rounding; in fp32 on the CPU with values narrower than the queries and
no mask (SAM 2's memory cross-attention), blocks through oneDNN's products, the fused
kernel's result to float32 rounding."""

import pytest
import torch
import torch.nn.functional as F

from anyseg import kernels
from anyseg.models import common
from anyseg.models.common import attention


def inputs(lead, nq, nk, d, dv, dtype=torch.float32):
    torch.manual_seed(0)
    q, k = torch.randn(*lead, nq, d), torch.randn(*lead, nk, d)
    v = torch.randn(*lead, nk, dv)
    return [t.to(dtype) for t in (q, k, v)]


@pytest.mark.parametrize("mask_rows", [None, "full", "broadcast"])
@pytest.mark.parametrize("budget", [None, 3000])  # None: one block; 3000 bytes: blocks of a few rows
def test_reduced_type_blocks_match_the_fused_kernel(mask_rows, budget, monkeypatch):
    if budget:
        monkeypatch.setattr(common, "SCORES_BYTES", budget)
    q, k, v = inputs((2, 3), 37, 29, 16, 8, torch.bfloat16)
    mask = None
    if mask_rows:
        mask = torch.randn(1, 3, 37 if mask_rows == "full" else 1, 29).expand(2, -1, -1, -1).bfloat16()
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=None if mask is None
                                              else mask.float(), scale=0.3)
    with torch.no_grad():
        out = attention(q, k, v, mask, scale=0.3)
    assert out.shape == (2, 3, 37, 8) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("mask_rows", ["full", "broadcast"])
def test_bf16_blocks_add_the_mask_as_one_block_does(mask_rows, monkeypatch):
    """A masked bf16 attention in blocks of query rows (a batch of images) gives the bits of
    one block (an image alone): both add the mask in the compiled softmax."""
    q, k, v = inputs((2, 3), 37, 29, 16, 8, torch.bfloat16)
    mask = torch.randn(3, 37 if mask_rows == "full" else 1, 29).bfloat16()
    with torch.no_grad():
        whole = attention(q, k, v, mask, scale=0.3)
        monkeypatch.setattr(common, "SCORES_BYTES", 3000)
        blocks = attention(q, k, v, mask, scale=0.3)
    assert torch.equal(whole, blocks)


def test_strided_inputs_and_default_scale():
    """Heads split from one projection (strided views), as the encoders pass them."""
    torch.manual_seed(0)
    qkv = torch.randn(2, 50, 3, 4, 8).bfloat16()
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # (2, 4, 50, 8), not contiguous
    with torch.no_grad():
        out = attention(q, k, v)
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("dtype, grad", [(torch.float32, False), (torch.bfloat16, True)])
def test_fused_kernel_where_exactness_or_gradients_matter(dtype, grad):
    q, k, v = inputs((2,), 12, 10, 8, 8, dtype)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(attention(q, k, v), F.scaled_dot_product_attention(q, k, v), atol=0, rtol=0)


fp32_blocks = common._fp32_blocks


@pytest.mark.parametrize("budget", [None, 3000])  # None: one block; 3000 bytes: blocks of a few rows
def test_fp32_narrow_values_in_blocks_match_the_fused_kernel(budget, monkeypatch):
    """Values narrower than the queries, keys and values broadcast over the heads (as the
    memory attention passes them): oneDNN's products in blocks, the fused kernel's result."""
    if budget:
        monkeypatch.setattr(common, "SCORES_BYTES", budget)
    q, k, v = inputs((2, 3), 37, 29, 16, 8)
    k, v = k[:, :1], v[:, :1]
    blocks = []
    monkeypatch.setattr(common, "_fp32_blocks", lambda *a: blocks.append(a[-1]) or fp32_blocks(*a))
    with torch.no_grad():
        out = attention(q, k, v, scale=0.3)
    assert blocks == [(budget or common.SCORES_BYTES) // (29 * 4)]  # rows of one head's float32 scores
    expected = F.scaled_dot_product_attention(q, k.expand(2, 3, 29, 16), v.expand(2, 3, 29, 8), scale=0.3)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_fp32_narrow_values_with_a_mask_or_gradients_take_the_fused_kernel():
    q, k, v = inputs((2,), 12, 10, 8, 4)
    mask = torch.randn(12, 10)
    with torch.no_grad():
        torch.testing.assert_close(attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                                   atol=0, rtol=0)
    torch.testing.assert_close(attention(q, k, v), F.scaled_dot_product_attention(q, k, v), atol=0, rtol=0)


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 0.03), (torch.float32, 1e-5)])
def test_memory_values_projected_after_the_attention(heads, dtype, tolerance, monkeypatch):
    """The cross-attention to the narrow memory, on the CPU without gradients, projects its
    values after the attention: the same result as projecting the memory first (the
    gradient path), to the type's rounding."""
    from anyseg.models import memory_attention
    from anyseg.models.memory_attention import RoPEAttention

    torch.manual_seed(0)
    attn = RoPEAttention(32, num_heads=heads, kv_in_dim=8).eval().to(dtype)
    # 3 frames of 4x4, 4 pointers
    q, memory = torch.randn(2, 16, 32).to(dtype), torch.randn(2, 3 * 16 + 4, 8).to(dtype)
    expected = attn(q, memory, memory, num_k_exclude_rope=4).detach()  # gradients recorded: projected first
    widths = []
    monkeypatch.setattr(memory_attention, "attention", lambda q, k, v: widths.append(v.shape[-1]) or attention(q, k, v))
    with torch.no_grad():
        out = attn(q, memory, memory, num_k_exclude_rope=4)
    assert widths == [8]  # the memory's own width
    torch.testing.assert_close(out.float(), expected.float(), atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("n", [49, 196, 4096])
@pytest.mark.parametrize("addend_rows", [0, 6])
def test_compiled_softmax_rounds_the_float32_softmax(addend_rows, n):
    """``kernels.softmax_`` (bf16 rows of any length, in place): ``softmax(x + addend)``
    from float32 with one rounding, ``addend``'s rows repeating along ``x``'s: torch's
    float32 softmax rounded to bf16, within a last bit."""
    torch.manual_seed(0)
    x = (torch.randn(4, 6, n) * 4).bfloat16()
    addend = torch.randn(addend_rows, n).bfloat16() if addend_rows else None
    expected = torch.softmax(x.float() + (0 if addend is None else addend.float()), -1).bfloat16()
    out = kernels.softmax_(x, addend)
    assert out is x
    # one bf16 step is 2^-8 to 2^-7 of the value
    torch.testing.assert_close(out.float(), expected.float(), atol=0, rtol=2**-7)


def test_compiled_softmax_finds_the_row_maximum_among_special_values():
    """The compiled softmax's row maximum (an integer maximum over order keys of the bits)
    on rows whose largest value is negative, a signed zero, a subnormal, or sits among
    infinities: torch's float32 softmax rounded to bf16, within a last bit; a NaN makes its
    row NaN, as torch's does."""
    inf, nan = float("inf"), float("nan")
    rows = [[-5.0, -7.0, -inf, -5.5], [-0.0, -1.0, -2.0, -inf], [0.0, -0.0, -1e-40, 1e-40],
            [-inf, 3.0, -inf, 2.5], [1e-38, -1e-38, -3.0, -80.0], [1.0, nan, 0.0, -1.0]]
    x = torch.tensor(rows).repeat(1, 8).bfloat16()  # rows of 32
    expected = torch.softmax(x.float(), -1).bfloat16()
    out = kernels.softmax_(x.clone())
    torch.testing.assert_close(out[:-1].float(), expected[:-1].float(), atol=0, rtol=2**-7)
    assert out[-1].isnan().all()
