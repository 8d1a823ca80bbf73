"""SAM 1 image encoders: ViT-B/L/H and MobileSAM's TinyViT-5M.

* state-dict keys and shapes equal the official checkpoints' (``manifests.json``);
* outputs equal the official encoders' on the random-weight fixtures;
* small self-contained checks of the building blocks.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anyseg.models.tiny_vit import TINY_VIT_5M, TinyViTConfig, TinyViTImageEncoder, offset_bias_index
from anyseg.models.vit import (
    VIT_B,
    VIT_H,
    VIT_L,
    RelPosAttention,
    ViTImageEncoder,
    relative_position_table,
    window_partition,
    window_unpartition,
)

PREFIX = "image_encoder."
# The reduced ViT of the `sam_vit_small` fixture (fixtures.json: embed 192, depth 4, heads 3,
# global attention in blocks 1 and 3, otherwise ViT-B).
VIT_SMALL = dataclasses.replace(VIT_B, embed_dim=192, depth=4, num_heads=3, global_attn_indexes=(1, 3))
TOL = 5e-3


def _encoder_manifest(fixtures_dir, model: str) -> dict[str, tuple[tuple[int, ...], str]]:
    manifest = json.loads((fixtures_dir / "manifests.json").read_text())[model]
    return {
        k[len(PREFIX) :]: (tuple(shape), dtype)
        for k, (shape, dtype) in manifest.items()
        if k.startswith(PREFIX)
    }


@pytest.mark.parametrize(
    ("model", "build"),
    [
        ("sam_vit_b", lambda: ViTImageEncoder(VIT_B)),
        ("sam_vit_l", lambda: ViTImageEncoder(VIT_L)),
        ("sam_vit_h", lambda: ViTImageEncoder(VIT_H)),
        ("mobile_sam_vit_t", lambda: TinyViTImageEncoder(TINY_VIT_5M)),
    ],
)
def test_state_dict_matches_official_manifest(fixtures_dir, model, build):
    expected = _encoder_manifest(fixtures_dir, model)
    with torch.device("meta"):
        encoder = build()
    got = {
        k: (tuple(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in encoder.state_dict().items()
    }
    assert sorted(got) == sorted(expected)
    assert got == expected
    # And a strict load of (meta) tensors of those shapes goes through.
    fake = {
        k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
        for k, (shape, dtype) in expected.items()
    }
    encoder.load_state_dict(fake, strict=True, assign=True)


def _load_case(fixtures_dir, stem: str):
    state = torch.load(fixtures_dir / f"{stem}.random.pt", map_location="cpu", weights_only=True)
    weights = {
        k[len(PREFIX) :]: (v.float() if v.is_floating_point() else v)
        for k, v in state.items()
        if k.startswith(PREFIX)
    }
    outputs = np.load(fixtures_dir / f"{stem}.image.npz")
    image = torch.from_numpy(outputs["truck/features/input_image"]).float()
    embed = torch.from_numpy(outputs["truck/features/image_embed"]).float()
    return weights, image, embed


@pytest.mark.parametrize(
    ("stem", "build"),
    [
        ("sam_vit_small", lambda: ViTImageEncoder(VIT_SMALL)),
        ("mobile_sam_vit_t", lambda: TinyViTImageEncoder(TINY_VIT_5M)),
    ],
)
def test_encoder_matches_official_output(fixtures_dir, stem, build):
    weights, image, expected = _load_case(fixtures_dir, stem)
    assert image.shape == (1, 3, 1024, 1024) and expected.shape == (1, 256, 64, 64)
    # eval() before loading on purpose: the official MobileSAM builder does this, which leaves its
    # cached attention biases stale; ours must pick up the loaded values regardless.
    encoder = build().eval()
    encoder.load_state_dict(weights, strict=True)
    with torch.inference_mode():
        got = encoder(image)
    assert got.shape == expected.shape and got.is_contiguous()
    diff = (got - expected).abs().max().item()
    # The stored input is fp16-rounded and the official output fp16: the bulk of this diff
    # (about 2e-3 for the ViT, 1e-3 for TinyViT) is that rounding; against the official code
    # run on the same fp32 input we agree to about 1e-5.
    assert diff <= TOL, f"max abs diff {diff:.3g}"


# ----------------------------------------------------------------------------- building blocks


@pytest.mark.parametrize("hw", [(14, 14), (64, 64), (9, 20)])
def test_window_partition_round_trip(hw):
    x = torch.randn(2, *hw, 5)
    windows, padded = window_partition(x, 14)
    assert windows.shape[1:] == (14, 14, 5)
    assert padded == (-(-hw[0] // 14) * 14, -(-hw[1] // 14) * 14)
    assert torch.equal(window_unpartition(windows, 14, padded, hw), x)


def test_relative_position_table_indexes_offsets():
    table = torch.randn(2 * 5 - 1, 3)
    got = relative_position_table(5, 5, table)
    for i in range(5):
        for j in range(5):
            assert torch.equal(got[i, j], table[i - j + 4])
    # A table learnt for another size is linearly resized first.
    assert relative_position_table(7, 7, table).shape == (7, 7, 3)


@pytest.mark.parametrize("window", [1, 2, 7, 14])
def test_offset_bias_index_is_the_official_numbering(window):
    """TinyViT numbers each (|dy|, |dx|) offset class in order of first appearance, scanning
    query then key tokens row-major; the learnt bias table is indexed by that number."""
    points = [(y, x) for y in range(window) for x in range(window)]
    classes: dict = {}
    expected = [[classes.setdefault((abs(qy - ky), abs(qx - kx)), len(classes)) for ky, kx in points]
                for qy, qx in points]
    assert len(classes) == window**2
    assert torch.equal(offset_bias_index(window), torch.tensor(expected))


def test_rel_pos_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attn = RelPosAttention(32, num_heads=2, grid=(6, 6))
    with torch.no_grad():
        attn.rel_pos_h.normal_()
        attn.rel_pos_w.normal_()
    x = torch.randn(3, 6, 6, 32)
    b, h, w, c = x.shape
    q, k, v = attn.qkv(x).reshape(b, h * w, 3, 2, 16).permute(2, 0, 3, 1, 4)
    logits = (q * attn.scale) @ k.transpose(-1, -2)
    rh = relative_position_table(h, h, attn.rel_pos_h)
    rw = relative_position_table(w, w, attn.rel_pos_w)
    qg = q.reshape(b, 2, h, w, 16)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", qg, rh)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", qg, rw)
    rel = rel_h[..., :, None] + rel_w[..., None, :]
    logits = logits + rel.reshape(b, 2, h * w, h * w)
    expected = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, h, w, c))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_vit_forward_shape_small_input():
    cfg = dataclasses.replace(VIT_SMALL, img_size=256, depth=2, global_attn_indexes=(1,))
    encoder = ViTImageEncoder(cfg).eval()
    with torch.inference_mode():
        assert encoder(torch.randn(2, 3, 256, 256)).shape == (2, 256, 16, 16)


def test_tiny_vit_stage_grids():
    assert TINY_VIT_5M.stage_grids() == [256, 128, 64, 64]
    assert TinyViTConfig(img_size=512).stage_grids() == [128, 64, 32, 32]


def test_tiny_vit_folded_batchnorm_matches_conv_then_bn():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY_VIT_5M, img_size=256)
    encoder = TinyViTImageEncoder(cfg)
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    encoder.eval()
    block = encoder.layers[0].blocks[0].conv2
    x = torch.randn(1, block.c.in_channels, 16, 16)
    bn = block.bn
    expected = F.batch_norm(
        block.c(x), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
    )
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        assert encoder(torch.randn(1, 3, 256, 256)).shape == (1, 256, 16, 16)
