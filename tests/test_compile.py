"""The image encoders under ``torch.compile`` (what ``anyseg bench --compile`` times, on a
GPU above all): each traces into one graph, and a second call reuses it (no state that the
graph checks changes between calls). Traced with the eager backend: no code generation."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo import config as dynamo_config

from anyseg.models.hiera import HieraConfig
from anyseg.models.sam2 import Sam2Config, Sam2Model
from anyseg.models.tiny_vit import TinyViTConfig, TinyViTImageEncoder


def sam2_encoder():
    trunk = HieraConfig(embed_dim=16, num_heads=1, stages=(1, 1, 1, 1), global_att_blocks=(),
                        window_spec=(8, 4, 4, 2), window_pos_embed_bkg_spatial_size=(4, 4))
    model = Sam2Model(Sam2Config(trunk=trunk, image_size=128)).eval()
    decoder = model.sam_mask_decoder
    return model.image_encoder, (torch.randn(1, 3, 128, 128), decoder.conv_s0, decoder.conv_s1)


def tiny_vit_encoder():
    cfg = TinyViTConfig(embed_dims=(16, 32, 32, 32), depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                        window_sizes=(7, 7, 14, 7), img_size=256, out_chans=32)
    return TinyViTImageEncoder(cfg).eval(), (torch.randn(1, 3, 256, 256),)


@pytest.mark.parametrize("build", [sam2_encoder, tiny_vit_encoder])
def test_encoder_compiles_to_one_graph_once(build):
    torch.manual_seed(0)
    encoder, args = build()
    torch._dynamo.reset()
    compiled = torch.compile(encoder, backend="eager", fullgraph=True, dynamic=False)
    with torch.no_grad(), dynamo_config.patch(error_on_recompile=True):
        first = compiled(*args)
        second = compiled(*args)
        eager = encoder(*args)
    for a, b, c in zip(*(x if isinstance(x, tuple) else (x,) for x in (first, second, eager))):
        torch.testing.assert_close(a, c)
        torch.testing.assert_close(b, c)
