"""The mask decoder's blocked upscaling equals the plain layer stack; the image-side work
it keeps between prompts changes no result and never outlives the weights."""

import copy

import numpy as np
import pytest
import torch

from anyseg.kernels import gelu_words, layer_norm, layer_norm_plus, mask_downscale, mask_product, mlp_pack, token_mlps
from anyseg.models.common import MLP, LastResult, parameters_of, relu_mlp
from anyseg.models.mask_decoder import MaskDecoder, MaskDecoderConfig, _from_blocks, stability_score
from anyseg.models.prompt_encoder import MaskEmbedding, PromptEncoder
from anyseg.models.two_way_transformer import softmax_


def reference_upscale(dec: MaskDecoder, x: torch.Tensor, feat_s0, feat_s1) -> torch.Tensor:
    """The official order of operations on a raster ``(B, C, h, w)`` map."""
    dc1, ln1, act1, dc2, act2 = dec.output_upscaling
    y = act1(ln1(dc1(x) + feat_s1))
    return act2(dc2(y) + feat_s0)


def decoder() -> MaskDecoder:
    torch.manual_seed(0)
    dec = MaskDecoder(MaskDecoderConfig(dim=32, use_high_res_features=True)).eval()
    for p in dec.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return dec


@torch.inference_mode()
def test_blocked_upscale_matches_the_layer_stack():
    dec = decoder()
    b, h, w = 2, 4, 6
    x = torch.randn(b, 32, h, w)
    feat_s0, feat_s1 = torch.randn(1, 4, 4 * h, 4 * w), torch.randn(1, 8, 2 * h, 2 * w)
    up = dec.output_upscaling[4](dec._upscale(x.flatten(2).transpose(1, 2), [feat_s0, feat_s1]))  # (B, 16 h w, C/8)
    hyper = torch.randn(b, 3, 4)
    masks = torch.einsum("bnc,bkc->bnk", up, hyper)
    expected = torch.einsum("bchw,bkc->bkhw", reference_upscale(dec, x, feat_s0, feat_s1), hyper)
    torch.testing.assert_close(_from_blocks(masks, h, w, levels=2), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_mask_product_matches_product_then_reorder(dtype, loop_threads):
    g = torch.Generator().manual_seed(0)
    b, h, w, c = 2, 5, 3, 8
    feats = torch.randn(b, 16 * h * w, c, generator=g).to(dtype)
    hyper = torch.randn(b, 4, c, generator=g)
    expected = _from_blocks(feats.float() @ hyper.transpose(1, 2), h, w, levels=2)
    got = mask_product(feats, hyper, h, w)
    assert got.dtype == torch.float32 and got.shape == (b, 4, 4 * h, 4 * w)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_gelu_table_is_torchs_bf16_gelu():
    special = [0.0, -0.0, 1e-40, -1e-40, 3e38, -3e38, float("inf"), -float("inf"), float("nan")]
    x = torch.cat([torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 4, torch.tensor(special)])
    words = x.bfloat16().view(torch.int16)
    looked_up = gelu_words()[words.numpy().view(np.uint16)].view(np.int16)
    assert np.array_equal(looked_up, torch.nn.functional.gelu(words.view(torch.bfloat16)).view(torch.int16).numpy())


@torch.inference_mode()
def test_compiled_norm_then_gelu_and_gelu_then_product(loop_threads):
    # the GELUs of the bf16 upscaling are lookups of torch's own: as torch after the norm,
    # and inside the mask product
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(103, 64, generator=g) * 3).bfloat16()
    norm = torch.nn.LayerNorm(64, eps=1e-6)
    assert torch.equal(layer_norm(x, norm, gelu=True), torch.nn.functional.gelu(layer_norm(x, norm)))
    b, h, w, c = 2, 5, 3, 8
    feats = torch.randn(b, 16 * h * w, c, generator=g).bfloat16()
    hyper = torch.randn(b, 4, c, generator=g)
    torch.testing.assert_close(mask_product(feats, hyper, h, w, gelu=True),
                               mask_product(torch.nn.functional.gelu(feats), hyper, h, w), rtol=0, atol=0)


@torch.inference_mode()
def test_compiled_layer_norm_plus_rounds_as_torch(loop_threads):
    # bf16 image tokens (a batch of 2 sharing the addend, as the decoder's position
    # encoding): the results are rounded as torch rounds them; the statistics may differ in
    # float32 rounding, which moves a value by one bf16 step where it lies next to a tie (a
    # step of the norm's value, which the sum with the addend carries: seen on an AMD EPYC,
    # where torch's statistics round otherwise than on an Intel Xeon)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 300, 64, generator=g) * 3 + 1).bfloat16()
    addend = torch.randn(1, 300, 64, generator=g).bfloat16()
    norm = torch.nn.LayerNorm(64, eps=1e-6)
    torch.nn.init.normal_(norm.weight, generator=g)
    torch.nn.init.normal_(norm.bias, generator=g)
    y, y_plus = layer_norm_plus(x, norm, addend)
    expected = norm(x)
    step = expected.float().abs() * 2**-7 + 1e-6  # at most one bf16 step of the norm's value
    for got, want in ((y, expected), (y_plus, expected + addend)):
        assert got.dtype == torch.bfloat16 and got.shape == x.shape
        differ = got != want
        assert differ.sum() <= 10
        assert ((got.float() - want.float()).abs() <= step + want.float().abs() * 2**-8)[differ].all()
    assert torch.equal(y_plus, (y.float() + addend.float()).bfloat16())


@torch.inference_mode()
def test_compiled_layer_norm_in_place(loop_threads):
    # over x's own memory, the same values as into a new buffer (with the GELU, with the sum)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 301, 64, generator=g) * 3).bfloat16()
    addend = torch.randn(1, 301, 64, generator=g).bfloat16()
    norm = torch.nn.LayerNorm(64, eps=1e-6)
    torch.nn.init.normal_(norm.weight, generator=g)
    for gelu in (False, True):
        mine = x.clone()
        out = layer_norm(mine, norm, gelu=gelu, in_place=True)
        assert out.data_ptr() == mine.data_ptr() and torch.equal(out, layer_norm(x, norm, gelu=gelu))
    mine = x.clone()
    y, y_plus = layer_norm_plus(mine, norm, addend, in_place=True)
    want, want_plus = layer_norm_plus(x, norm, addend)
    assert y.data_ptr() == mine.data_ptr() and torch.equal(y, want) and torch.equal(y_plus, want_plus)
    with pytest.raises(AssertionError, match="contiguous"):
        layer_norm(x.transpose(0, 1), norm, in_place=True)


@pytest.mark.parametrize("c", [32, 64, 256])
@torch.inference_mode()
def test_compiled_layer_norm_rounds_as_torch(c, loop_threads):
    # rows in groups of four: 301 rows leave a group of one
    g = torch.Generator().manual_seed(c)
    x = (torch.randn(301, c, generator=g) * 3 + 1).bfloat16()
    norm = torch.nn.LayerNorm(c, eps=1e-6)
    torch.nn.init.normal_(norm.weight, generator=g)
    torch.nn.init.normal_(norm.bias, generator=g)
    for weights in (norm, copy.deepcopy(norm).bfloat16()):  # the upscaling's norm is bf16 in bf16 mode
        got, want = layer_norm(x, weights), weights(x)
        assert got.dtype == torch.bfloat16 and got.shape == x.shape
        differ = got != want
        assert differ.sum() <= 10
        assert ((got.float() - want.float()).abs() <= want.float().abs() * 2**-7 + 1e-6)[differ].all()


@torch.inference_mode()
def test_skip_cache_is_dropped_with_new_weights():
    dec = decoder()
    feats = [torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8)]
    first = dec._skips(feats)
    assert dec._skips(feats) is first  # the same image: reordered once
    state = {k: v + 1 for k, v in dec.state_dict().items()}
    dec.load_state_dict(state)
    again = dec._skips(feats)
    assert again is not first and torch.allclose(again[0] - first[0], torch.ones(()))


def prompt_inputs(dec: MaskDecoder, b: int = 2, h: int = 4, w: int = 6):
    g = torch.Generator().manual_seed(1)
    embed, pe = torch.randn(1, 32, h, w, generator=g), torch.randn(1, 32, h, w, generator=g)
    sparse = torch.randn(b, 3, 32, generator=g)
    high_res = [torch.randn(1, 4, 4 * h, 4 * w, generator=g), torch.randn(1, 8, 2 * h, 2 * w, generator=g)]
    no_mask = torch.randn(1, 32, 1, 1, generator=g).expand(b, -1, h, w)  # as the prompt encoder's
    return embed, pe, sparse, no_mask, high_res


@torch.inference_mode()
def test_kept_first_layer_projections_change_nothing():
    dec = decoder()
    embed, pe, sparse, no_mask, high_res = prompt_inputs(dec)
    offset = torch.randn(32)
    plain = dec.predict_all(embed, pe, sparse, no_mask.contiguous(), high_res, offset)  # a mask prompt's path
    for _ in range(3):  # computes the image side, then reuses it (and projects it once)
        kept = dec.predict_all(embed, pe, sparse, no_mask, high_res, offset)
        torch.testing.assert_close(kept.masks, plain.masks, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(kept.iou, plain.iou, rtol=1e-4, atol=1e-4)
    assert dec._image_of.reused


@torch.inference_mode()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mask_prompt_shifts_the_kept_projections(dtype):
    """A mask prompt on an image whose no-mask side is kept decodes with that side's
    projections shifted by the mask's factored embedding, as with its dense embedding."""
    dec = decoder()
    dec = dec if dtype == torch.float32 else dec.copy_in(dtype)
    embed, pe, sparse, _, high_res = prompt_inputs(dec, b=1)
    torch.manual_seed(2)
    enc = PromptEncoder(embed_dim=32, embedding_size=(4, 6), input_size=(64, 96))
    for p in enc.parameters():
        torch.nn.init.normal_(p, std=0.5)
    masks = enc(None, None, 3 * torch.randn(1, 1, 16, 24))[1]
    assert isinstance(masks, MaskEmbedding)
    offset = torch.randn(32)
    full = dec.predict_all(embed, pe, sparse, masks.dense(), high_res, offset)  # nothing kept
    tol = 1e-4 if dtype == torch.float32 else 0.1
    for _ in range(3):  # keeps the no-mask side, then projects it, then reuses the projections
        shifted = dec.predict_all(embed, pe, sparse, masks, high_res, offset)
        torch.testing.assert_close(shifted.masks, full.masks, rtol=tol, atol=tol)
        torch.testing.assert_close(shifted.iou, full.iou, rtol=tol, atol=tol)
    assert dec._image_of.reused and dec._image_of._value.projected is not None
    no_mask = enc(None, None, None)[1]  # a click without the mask: the same kept side
    dec.predict_all(embed, pe, sparse, no_mask, high_res, offset)
    assert dec._image_of.reused


def test_mask_embedding_is_the_mask_downscaling():
    torch.manual_seed(3)
    enc = PromptEncoder(embed_dim=32, embedding_size=(4, 6), input_size=(64, 96))
    masks = 3 * torch.randn(2, 1, 16, 24)
    embedding = enc.embed_masks(masks)
    assert embedding.features.shape == (2, 24, 16) and embedding.size == (4, 6)
    torch.testing.assert_close(embedding.dense(), enc.mask_downscaling(masks), rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_compiled_mask_downscale_is_the_modules(loop_threads):
    torch.manual_seed(5)
    enc = PromptEncoder(embed_dim=32, embedding_size=(5, 3), input_size=(80, 48))
    for p in enc.parameters():
        torch.nn.init.normal_(p, std=0.5)
    masks = 8 * torch.randn(2, 1, 20, 12)
    masks[0, 0, :4, :4] = 0  # a patch whose first-stage channels are all the bias: a norm of ~zero variance
    masks[1, 0, -4:] = torch.tensor([-1e4, 1e4, float("inf"), -float("inf")])[:, None]
    expected = enc.mask_downscaling[:-1](masks).flatten(2).transpose(1, 2)
    got = mask_downscale(masks, enc.mask_downscaling)
    assert got.shape == (2, 15, 16) and got.dtype == torch.float32
    assert expected.isnan().any()  # infinite logits: NaN as the modules make them
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, equal_nan=True)
    # the prompt encoder takes it without gradients, on the CPU, in float32
    torch.testing.assert_close(enc.embed_masks(masks).features, expected, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_mask_shift_factors_are_the_embedding_less_the_no_mask_one():
    torch.manual_seed(4)
    enc = PromptEncoder(embed_dim=32, embedding_size=(4, 6), input_size=(64, 96))
    for p in enc.parameters():
        torch.nn.init.normal_(p, std=0.5)
    embedding = enc.embed_masks(3 * torch.randn(1, 1, 16, 24))
    x, weight = embedding.shift_factors(torch.float32)
    assert x.shape == (24, 17) and weight.shape == (32, 17)
    expected = (embedding.dense() - embedding.no_mask).flatten(2).transpose(1, 2)[0]
    torch.testing.assert_close(x @ weight.t(), expected, rtol=1e-5, atol=1e-5)
    x16, _ = embedding.shift_factors(torch.bfloat16)
    assert x16.dtype == torch.bfloat16 and torch.equal(x16.float(), x.to(torch.bfloat16).float())


@pytest.mark.parametrize("wanted", [slice(None), slice(1, None), slice(0, 1)])
def test_batched_hypernetworks_equal_each_mlp_and_follow_weight_changes(wanted):
    dec = decoder()
    tokens = torch.randn(2, len(range(4)[wanted]), 32)  # the wanted mask tokens' outputs

    def each():
        mlps = dec.output_hypernetworks_mlps
        return torch.stack([mlps[i](tokens[:, j]) for j, i in enumerate(range(4)[wanted])], dim=1)

    with torch.no_grad():
        torch.testing.assert_close(dec._hypernetworks(tokens, wanted), each())
        dec.output_hypernetworks_mlps[2].layers[1].weight.mul_(-2)  # in place: a new version
        torch.testing.assert_close(dec._hypernetworks(tokens, wanted), each())
    with torch.enable_grad():  # training: the MLPs themselves, gradients flow to them
        dec._hypernetworks(tokens, wanted).sum().backward()
    assert dec.output_hypernetworks_mlps[range(4)[wanted][-1]].layers[0].weight.grad is not None


@torch.inference_mode()
@pytest.mark.parametrize("masks_of", [slice(None), slice(1, None), slice(0, 1)])
def test_outputs_not_asked_for_change_nothing(masks_of):
    dec = MaskDecoder(MaskDecoderConfig(dim=32, use_high_res_features=True, pred_obj_scores=True)).eval()
    for p in dec.parameters():
        torch.nn.init.normal_(p, std=0.2)
    inputs = prompt_inputs(dec)
    full = dec.predict_all(*inputs, masks_of=masks_of)
    lean = dec.predict_all(*inputs, masks_of=masks_of, object_score=False, tokens=False)
    assert lean.tokens is None and lean.object_score is None
    torch.testing.assert_close(lean.masks, full.masks, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lean.iou, full.iou, rtol=1e-6, atol=1e-6)
    scored = dec.predict_all(*inputs, masks_of=masks_of, tokens=False)
    torch.testing.assert_close(scored.object_score, full.object_score, rtol=1e-6, atol=1e-6)
    chosen = dec(*inputs[:4], multimask=masks_of == slice(1, None), high_res_features=inputs[4], tokens=False)
    assert chosen.tokens is None


@torch.inference_mode()
def test_kept_image_side_is_dropped_with_new_weights():
    dec = decoder()
    inputs = prompt_inputs(dec)
    dec.predict_all(*inputs)
    state = {k: v * 1.5 for k, v in dec.state_dict().items()}
    dec.load_state_dict(state)
    fresh = MaskDecoder(dec.cfg).eval()
    fresh.load_state_dict(state)
    torch.testing.assert_close(dec.predict_all(*inputs).masks, fresh.predict_all(*inputs).masks)


@torch.inference_mode()
def test_reduced_precision_copy():
    dec = decoder()
    inputs = prompt_inputs(dec)
    half = dec.copy_in(torch.bfloat16)
    assert half.image_dtype == torch.bfloat16 and dec.image_dtype == torch.float32
    assert half.iou_token.weight.dtype == torch.float32  # the token side stays fp32,
    for layer in half.transformer.layers:  # but for its MLPs (the largest weights a click reads)
        assert {p.dtype for p in layer.mlp.parameters()} == {torch.bfloat16}
        assert layer.self_attn.q_proj.weight.dtype == torch.float32
    assert {p.dtype for p in dec.parameters()} == {torch.float32}
    out, ref = half.predict_all(*inputs), dec.predict_all(*inputs)
    assert out.masks.dtype == torch.float32 and out.iou.dtype == torch.float32  # masks: see mask_product
    torch.testing.assert_close(out.iou, ref.iou, atol=0.02, rtol=0)
    assert ((out.masks.float() > 0) == (ref.masks > 0)).float().mean() > 0.9


def official_single_mask(masks, iou, cfg):
    """SAM 2's dynamic choice of one mask from all four, as the official decoder makes it."""
    rows = torch.arange(len(masks))
    best = iou[:, 1:].argmax(-1)
    stable = stability_score(masks[:, :1], 0.0, cfg.dynamic_multimask_stability_delta)
    stable = stable >= cfg.dynamic_multimask_stability_thresh
    return (torch.where(stable[..., None, None], masks[:, :1], masks[:, 1:][rows, best][:, None]),
            torch.where(stable, iou[:, :1], iou[:, 1:][rows, best][:, None]))


# the dynamic choice with token 0 always stable, stable for one prompt of two, and never
@pytest.mark.parametrize("dynamic,threshold", [(False, 0.98), (True, 0.0), (True, 0.689), (True, 1.01)])
@torch.inference_mode()
def test_forward_makes_only_the_masks_it_keeps(dynamic, threshold):
    torch.manual_seed(0)
    cfg = MaskDecoderConfig(dim=32, use_high_res_features=True, dynamic_multimask_via_stability=dynamic,
                            dynamic_multimask_stability_thresh=threshold)
    dec = MaskDecoder(cfg).eval()
    dec.load_state_dict(decoder().state_dict())
    embed, pe, sparse, no_mask, high_res = prompt_inputs(dec)
    sparse = 5 * sparse  # prompts apart: token 0's stability 0.687 and 0.691
    every = dec.predict_all(embed, pe, sparse, no_mask, high_res)
    assert every.masks.shape[1] == 4
    multi = dec(embed, pe, sparse, no_mask, True, high_res)
    torch.testing.assert_close(multi.masks, every.masks[:, 1:])
    torch.testing.assert_close(multi.iou, every.iou[:, 1:])
    single = dec(embed, pe, sparse, no_mask, False, high_res)
    if dynamic:
        expected, expected_iou = official_single_mask(every.masks, every.iou, cfg)
    else:
        expected, expected_iou = every.masks[:, :1], every.iou[:, :1]
    torch.testing.assert_close(single.masks, expected)
    torch.testing.assert_close(single.iou, expected_iou)
    torch.testing.assert_close(single.tokens, every.tokens[:, :1])  # the object pointer's: token 0's


def test_softmax_over_its_input():
    # without gradients the attention's softmax writes over the scores, to the same values
    x = torch.randn(2, 8, 8, 300, generator=torch.Generator().manual_seed(0)).bfloat16()
    for dim in (2, -1):
        want, mine = torch.softmax(x, dim), x.clone()
        with torch.inference_mode():
            out = softmax_(mine, dim)
        assert out.data_ptr() == mine.data_ptr() and torch.equal(out, want)
    scores = x.float().requires_grad_()
    probs = softmax_(scores * 1, -1)  # recorded: a new tensor, differentiable
    probs.sum().backward()
    assert scores.grad is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_mlp_on_laid_out_weights_is_the_layers(dtype):
    # oneDNN's product on weights laid out once (kept), the ReLU inside it: the two layers'
    # values, summed in another order (bf16: the same values on an AMD EPYC; the kernels
    # may differ on other CPUs), of a batch of token sets; with gradients recorded, the
    # layers themselves
    g = torch.Generator().manual_seed(3)
    first, second = torch.nn.Linear(256, 2048).to(dtype), torch.nn.Linear(2048, 256).to(dtype)
    x = torch.randn(2, 7, 256, generator=g).to(dtype)
    kept = LastResult()
    with torch.no_grad():
        expected = second(torch.relu(first(x)))
        for _ in range(2):  # laid out, then reused
            got = relu_mlp(x, first, second, kept)
            assert got.shape == x.shape and got.dtype == dtype
            tol = 2**-7 if dtype == torch.bfloat16 else 1e-5
            torch.testing.assert_close(got, expected, rtol=tol, atol=tol)
        assert kept.reused
    trained = relu_mlp(x, first, second, kept)
    assert trained.requires_grad


def test_compiled_small_mlps_are_torchs():
    torch.manual_seed(6)
    mlps = [MLP(40, 24, 8, num_layers=3, activation=torch.nn.ReLU) for _ in range(3)]
    x = torch.randn(2, 5, 40)
    x[1, 0, 7] = float("nan")  # a NaN stays a NaN through the ReLUs, as torch's
    dims, pack = mlp_pack(mlps)
    assert dims.tolist() == [40, 24, 24, 8]
    with torch.no_grad():
        got = token_mlps(x, dims, pack, first=1)  # the last two MLPs
        want = torch.stack([mlps[1](x[0]), mlps[2](x[1])])
    assert got.shape == (2, 5, 8) and got[1, 0].isnan().all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_parameters_read_from_the_tables_are_parameters():
    dec = decoder()
    assert [id(p) for p in parameters_of(dec)] == [id(p) for p in dec.parameters()]


def test_decoder_small_mlps_compiled_and_not_agree(monkeypatch):
    """The hypernetworks and the IoU head (sigmoid or not) through the compiled loop, through
    torch's batched products (as off the CPU), and through torch's layers with gradients
    recorded."""
    from anyseg.models import mask_decoder

    torch.manual_seed(7)
    for sigmoid in (False, True):
        dec = MaskDecoder(MaskDecoderConfig(dim=32, iou_head_hidden_dim=32, iou_prediction_use_sigmoid=sigmoid)).eval()
        tokens, token = torch.randn(2, 3, 32), torch.randn(2, 32)  # the three multimask tokens' outputs
        with torch.no_grad():
            hyper, iou = dec._hypernetworks(tokens, slice(1, None)), dec._iou(token)
            with monkeypatch.context() as patch:
                patch.setattr(mask_decoder, "tokens_apply", lambda *tensors: False)
                batched = dec._hypernetworks(tokens, slice(1, None)), dec._iou(token)
        for got in ((hyper, iou), batched):
            torch.testing.assert_close(got[0], dec._hypernetworks(tokens, slice(1, None)), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(got[1], dec._iou(token), rtol=1e-5, atol=1e-6)
        assert hyper.shape == (2, 3, 4) and iou.shape == (2, 4)
