"""The compiled token side of the mask decoder's two-way transformer (kernels.token_*) computes
what its torch form computes, step by step and through whole blocks, and follows new weights."""

import pytest
import torch

from anyseg import kernels
from anyseg.models import two_way_transformer as twt
from anyseg.models.two_way_transformer import TwoWayTransformer

B, T, C, HEADS = 2, 7, 32, 4


def transformer() -> TwoWayTransformer:
    torch.manual_seed(0)
    tr = TwoWayTransformer(depth=2, dim=C, num_heads=HEADS, mlp_dim=64, downsample_rate=2).eval()
    for p in tr.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return tr


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@torch.inference_mode()
@pytest.mark.parametrize("skip_pe", [False, True])
def test_self_attention_step(skip_pe):
    block = transformer().layers[0]
    x, pe = torch.randn(B, T, C), torch.randn(B, T, C)
    pack = block.token_packs()[0]
    args = (block.self_attn, block.norm1, x, pe, skip_pe)
    close(twt.self_attention(*args, pack), twt.self_attention(*args, None))


@torch.inference_mode()
@pytest.mark.parametrize("projected", [False, True])
def test_cross_attention_steps(projected):
    block = transformer().layers[1]
    t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
    _, pack_t2i, pack_i2t = block.token_packs()
    x, pe, m = torch.randn(B, T, C), torch.randn(B, T, C), torch.randn(B, T, C)
    close(twt.image_queries(t2i, x, pe, projected, pack_t2i), twt.image_queries(t2i, x, pe, projected, None))

    pv = torch.randn(B, HEADS * T, t2i.internal_dim // HEADS if projected else C)
    args = (t2i, block.norm2, x, pv, projected)
    close(twt.attention_out(*args, pack_t2i), twt.attention_out(*args, None))

    args = (i2t, block.norm3, x, m, pe, projected)
    mine, want = twt.token_keys(*args, pack_i2t), twt.token_keys(*args, None)
    for a, b in zip(mine, want):
        if b is None:
            assert a is None
        else:
            close(a, b)


@torch.inference_mode()
@pytest.mark.parametrize("image_dtype", [torch.float32, torch.bfloat16])
def test_transformer_with_and_without_the_token_loops(image_dtype, monkeypatch):
    tr = transformer()
    n = 48
    keys, key_pe = torch.randn(B, n, C).to(image_dtype), torch.randn(1, n, C).to(image_dtype)
    tokens = torch.randn(B, T, C)
    mine = tr(keys.clone(), key_pe, tokens, rows=[1, 2])
    projected = tr.layers[0].project_image(keys[:1], key_pe)
    mine_projected = tr(keys[:1].clone(), key_pe, tokens[:1], projected)
    monkeypatch.setattr(kernels, "tokens_apply", lambda *tensors: False)
    want = tr(keys.clone(), key_pe, tokens, rows=[1, 2])
    want_projected = tr(keys[:1].clone(), key_pe, tokens[:1], projected)
    # bf16 image tokens: the tokens' last-bit differences can round the image side differently
    tol = 1e-5 if image_dtype == torch.float32 else 2e-2
    for a, b in zip(mine + mine_projected, want + want_projected):
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)


def test_token_packs_follow_the_weights():
    tr = transformer()
    block = tr.layers[0]
    with torch.inference_mode():
        first = block.token_packs()
        assert block.token_packs() is first  # kept
    with torch.no_grad():
        block.norm1.weight.add_(1.0)  # a new version of a parameter: a new pack
        assert block.token_packs() is not first
        assert (block.token_packs()[0] != first[0]).any()
    other = transformer()
    for p in other.parameters():
        torch.nn.init.normal_(p, std=0.3)
    tr.load_state_dict(other.state_dict())
    keys, key_pe, tokens = torch.randn(1, 16, C), torch.randn(1, 16, C), torch.randn(1, T, C)
    with torch.inference_mode():
        close(tr(keys, key_pe, tokens)[0], other(keys, key_pe, tokens)[0])


def test_gradients_take_torchs_form():
    tr = transformer()
    tokens = torch.randn(1, T, C, requires_grad=True)
    out, _ = tr(torch.randn(1, 16, C), torch.randn(1, 16, C), tokens)
    out.sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0


def test_warmup_compiles_every_token_loop(capsys):
    """`anyseg warmup` (compile_loops) leaves the loops a prompt runs compiled: the token loops
    and every team entry."""
    from anyseg import _loops
    from anyseg.cli import main

    state = torch.random.get_rng_state()
    assert main(["warmup"]) == 0
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random numbers untouched
    assert "compiled and cached" in capsys.readouterr().out
    for name in ("token_self_attention", "token_queries", "token_attention_out", "token_keys", "token_mlps"):
        assert getattr(_loops, name).signatures, name
    assert _loops.team_entry.cache_info().currsize == len(_loops.team_loops()) > 0
