"""The opt-in int8 products (``precision="int8"``): the quantizing and dequantizing loops
against torch, which layers run in int8, the image predictor's int8 encode, and the mask
decoder's int8 upscaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anyseg import ImagePredictor, kernels
from anyseg.models.common import INT8_DEPTH, Linear, int8_linears, linear, quantize_weight
from anyseg.models.mask_decoder import MaskDecoder, MaskDecoderConfig
from anyseg.models.sam2 import build_sam2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_rows_is_symmetric_per_row(dtype):
    torch.manual_seed(0)
    x = (torch.randn(67, 40) * torch.logspace(-3, 3, 67)[:, None]).to(dtype)
    x[5] = 0  # a row of zeros: scale 1, all zero
    q, scale = kernels.quantize_rows(x)
    xf = x.float()
    top = xf.abs().amax(dim=1)
    expected_scale = torch.where(top > 0, top / 127, torch.ones_like(top))
    torch.testing.assert_close(scale, expected_scale, rtol=0, atol=0)
    scaled = xf * torch.where(top > 0, 127 / top, 0)[:, None]
    off = q.int() != torch.round(scaled).int()
    # the same but where the scaled value lies within float rounding of a tie (x.5)
    assert q.dtype == torch.int8 and off.float().mean() < 1e-2
    assert (((q.int() - scaled).abs()[off] - 0.5).abs() < 1e-5).all()
    assert (q.abs().amax(dim=1)[top > 0] == 127).all() and not q[5].any()


def test_dequantize_rows_scales_and_adds_the_bias():
    torch.manual_seed(0)
    acc = torch.randint(-(2**20), 2**20, (33, 24), dtype=torch.int32)
    row, col, bias = torch.rand(33) / 100, torch.rand(24) / 100, torch.randn(24)
    out = kernels.dequantize_rows(acc, row, col, bias)
    expected = acc.double() * row.double()[:, None] * col.double() + bias.double()
    assert out.dtype == torch.bfloat16
    # one rounding to bf16 (from float32 arithmetic): within a bf16 step
    torch.testing.assert_close(out.double(), expected, rtol=2**-8, atol=1e-6)


def test_dequantize_rows_adds_repeating_addend_rows():
    torch.manual_seed(0)
    acc = torch.randint(-(2**20), 2**20, (30, 16), dtype=torch.int32)
    row, col, bias = torch.rand(30) / 100, torch.rand(16) / 100, torch.randn(16)
    addend = torch.randn(10, 16).bfloat16()  # rows repeating: row i adds addend[i % 10]
    out = kernels.dequantize_rows(acc, row, col, bias, addend)
    expected = (acc.double() * row.double()[:, None] * col.double() + bias.double()
                + addend.double().repeat(3, 1))
    torch.testing.assert_close(out.double(), expected, rtol=2**-8, atol=1e-6)


def test_int8_product_in_parts_with_repeating_addend(monkeypatch):
    """Parts of rows (here 50, so that they cut the addend's 37-row repeats anywhere) give
    the same result as one product."""
    from anyseg.models import common

    torch.manual_seed(0)
    x, weight = torch.randn(3 * 37, 64).bfloat16(), torch.randn(48, 64)
    bias, addend = torch.randn(48), torch.randn(37, 48).bfloat16()
    q_t, col = quantize_weight(weight)
    whole = common.int8_product(x, q_t, col, bias, addend)
    monkeypatch.setattr(common, "INT8_CHUNK_ROWS", 50)
    parts = common.int8_product(x, q_t, col, bias, addend)
    assert torch.equal(parts, whole)
    rows, row = kernels.quantize_rows(x)
    expected = (rows.double() @ q_t.double()) * row.double()[:, None] * col.double() + bias.double()
    torch.testing.assert_close(whole.double(), expected + addend.double().repeat(3, 1), rtol=2**-8, atol=1e-5)


def test_int8_linear_matches_its_quantized_product():
    torch.manual_seed(0)
    layer = Linear(INT8_DEPTH, 2 * INT8_DEPTH).eval().requires_grad_(False)
    x = torch.randn(2, 700, INT8_DEPTH)  # 1400 rows
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        full = layer(x)
        with int8_linears():
            y = layer(x)
    # the same product from the quantized operands, in float64
    q_t, col = quantize_weight(layer.weight)
    rows, row = kernels.quantize_rows(x.reshape(-1, INT8_DEPTH))
    expected = (rows.double() @ q_t.double()) * row.double()[:, None] * col.double() + layer.bias.double()
    assert y.shape == full.shape and y.dtype == torch.bfloat16
    torch.testing.assert_close(y.reshape(-1, y.shape[-1]).double(), expected, rtol=2**-8, atol=1e-5)
    # and close to the bf16 product: int8 rounding of both operands
    assert (y.float() - full.float()).norm() / full.float().norm() < 0.02


def test_int8_only_where_it_applies():
    """Narrow layers, few rows, gradients and code outside the context keep the float path."""
    torch.manual_seed(0)
    wide = Linear(INT8_DEPTH, INT8_DEPTH).eval()
    narrow = Linear(INT8_DEPTH, 96).eval()
    x = torch.randn(1024, INT8_DEPTH)
    with torch.no_grad():
        outside = wide(x)
        with int8_linears():
            assert torch.equal(narrow(x), linear(x, narrow.weight, narrow.bias))
            assert torch.equal(wide(x[:100]), linear(x[:100], wide.weight, wide.bias))
            inside = wide(x)
    assert inside.dtype == torch.bfloat16 and outside.dtype == torch.float32
    with int8_linears():
        assert wide(x).dtype == torch.float32  # gradients recorded: never int8


def test_int8_weight_follows_loaded_weights():
    layer = Linear(INT8_DEPTH, INT8_DEPTH).eval()
    x = torch.randn(1024, INT8_DEPTH)
    with torch.inference_mode(), int8_linears():
        before = layer(x)
        layer.load_state_dict({"weight": -layer.weight, "bias": layer.bias})
        after = layer(x)
    assert not torch.allclose(before.float(), after.float())


def test_image_predictor_int8():
    """SAM 2.1-tiny's stage-3 and stage-4 layers run in int8; the rest is the bf16 mode."""
    torch.manual_seed(0)
    model = build_sam2("sam2.1_hiera_t").eval().requires_grad_(False)
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    preds = {p: ImagePredictor(model, precision=p) for p in ("bf16", "int8")}
    out = {}
    for name, pred in preds.items():
        pred.set_image(image)
        out[name] = pred.predict(points=[[100, 120]], labels=[1])
    quantized = [m for m in model.image_encoder.modules() if isinstance(m, Linear) and m._quantized_of._value is not None]
    assert quantized and all(min(m.weight.shape) >= INT8_DEPTH for m in quantized)
    assert preds["int8"].features().embed.dtype == torch.bfloat16
    assert np.abs(out["int8"].scores - out["bf16"].scores).max() < 0.05


@pytest.mark.parametrize("high_res", [True, False], ids=["sam2-skips", "sam1-bias"])
def test_int8_decoder_copy_upscales_like_bf16(high_res):
    """The int8 copy's first transposed convolution (skips or bias added in the rescaling
    pass) against the bf16 copy's: int8 rounding of both operands only."""
    torch.manual_seed(0)
    decoder = MaskDecoder(MaskDecoderConfig(use_high_res_features=high_res)).eval()
    for p in decoder.parameters():
        p.data.normal_(0, 0.05)
    x = torch.randn(2, 64 * 64, 256).bfloat16()
    skips = [torch.randn(1, 32, 256, 256).bfloat16(), torch.randn(1, 64, 128, 128).bfloat16()] if high_res else None
    with torch.no_grad():
        full = decoder.copy_in(torch.bfloat16)._upscale(x, skips)
        twin = decoder.copy_in(torch.bfloat16, int8=True)
        y = twin._upscale(x, skips)
    assert twin._quantized_of._value is not None
    assert y.shape == full.shape and y.dtype == torch.bfloat16
    assert (y.float() - full.float()).norm() / full.float().norm() < 0.01


@pytest.mark.parametrize("group", [1, 4])
def test_product_softmax_of_scaled_int8_scores(group, loop_threads):
    """Along each row (group 1) or across groups of rows, column by column (over more
    columns than one of the loop's passes holds)."""
    torch.manual_seed(0)
    acc = torch.randint(-(2**20), 2**20, (12, 1100), dtype=torch.int32)
    row, col, bias = torch.rand(12) / 2**16, torch.rand(1100), torch.randn(12)
    out = kernels.product_softmax(acc, row, col, bias, group)
    scores = acc.double() * row.double()[:, None] * col.double() + bias.double()[:, None]
    expected = scores.reshape(-1, group, 1100).softmax(dim=1 if group > 1 else -1).reshape(12, 1100)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), expected, rtol=2**-8, atol=1e-6)


def test_layer_norm_plus_quantizes_the_sum_in_its_pass(loop_threads):
    torch.manual_seed(0)
    x, addend = torch.randn(1, 300, 64).bfloat16(), torch.randn(1, 300, 64).bfloat16()
    norm = torch.nn.LayerNorm(64)
    q, scale = torch.empty(300, 64, dtype=torch.int8), torch.empty(300)
    y, y_plus = kernels.layer_norm_plus(x, norm, addend, int8=(q, scale))
    assert torch.equal(torch.stack([y, y_plus]), torch.stack(kernels.layer_norm_plus(x, norm, addend)))
    want_q, want_scale = kernels.quantize_rows(y_plus[0])
    assert torch.equal(q, want_q) and torch.equal(scale, want_scale)


def test_int8_decoder_copy_scores_in_int8_like_bf16(monkeypatch):
    """The int8 copy's transformer makes the scores against the image after its first block
    in int8 (the second block's two attentions and the last one), close to the bf16 copy's;
    a batch of prompts keeps the bf16 scores."""
    from anyseg.models import two_way_transformer

    torch.manual_seed(0)
    decoder = MaskDecoder(MaskDecoderConfig()).eval()
    for p in decoder.parameters():
        p.data.normal_(0, 0.05)
    image, pe = torch.randn(1, 256, 64, 64), torch.randn(1, 256, 64, 64)
    sparse, dense = torch.randn(1, 3, 256), torch.randn(1, 256, 1, 1).expand(1, 256, 64, 64)
    calls = []
    int8_softmax = two_way_transformer.int8_softmax
    monkeypatch.setattr(two_way_transformer, "int8_softmax", lambda *a, **k: calls.append(k) or int8_softmax(*a, **k))
    with torch.no_grad():
        full = decoder.copy_in(torch.bfloat16)(image, pe, sparse, dense, multimask=True)
        assert not calls
        twin = decoder.copy_in(torch.bfloat16, int8=True)
        out = twin(image, pe, sparse, dense, multimask=True)
        assert [k.get("group", 1) for k in calls] == [1, 3 + 1 + 4, 1]  # the second block's image -> token: T groups
        twin(image, pe, sparse.expand(2, -1, -1), dense.expand(2, -1, -1, -1), multimask=True)
        assert len(calls) == 3
    assert (out.masks - full.masks).norm() / full.masks.norm() < 0.02
    assert (out.iou - full.iou).abs().max() < 0.02
