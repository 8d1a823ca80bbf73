"""anyseg under ``torch.compile`` (what ``anyseg bench --compile`` times, on a GPU above
all): each image encoder traces into one graph, and a second call reuses it (no state that
the graph checks changes between calls); the video tracker's parts trace with no graph
break. Traced with the eager backend (no code generation), in fp32: on the CPU the bf16
paths take compiled loops of their own, which tracing leaves out as it leaves out the
CPU's other eager-only paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch._dynamo import config as dynamo_config
from torch._dynamo.utils import counters


from anyseg.models.hiera import HieraConfig
from anyseg.models.sam2 import Sam2Config, Sam2Model
from anyseg.models.tiny_vit import TinyViTConfig, TinyViTImageEncoder
from anyseg.predictors.video import VideoPredictor


def small_sam2():
    trunk = HieraConfig(embed_dim=16, num_heads=1, stages=(1, 1, 1, 1), global_att_blocks=(),
                        window_spec=(8, 4, 4, 2), window_pos_embed_bkg_spatial_size=(4, 4))
    return Sam2Model(Sam2Config(trunk=trunk, image_size=128)).eval().requires_grad_(False)


def sam2_encoder():
    model = small_sam2()
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


def test_tracker_parts_compile_without_graph_breaks(tmp_path):
    """What ``bench.compile_parts`` compiles for video, over a track of two objects with a
    click, a box and a mask's refinement: every part traces whole."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i:05d}.jpg")
    model = small_sam2()
    torch._dynamo.reset()
    counters.clear()
    traced = []
    with dynamo_config.patch(suppress_errors=False):
        for name in ("memory_encoder", "memory_attention", "sam_prompt_encoder", "sam_mask_decoder"):
            part = getattr(model, name)
            part.forward = torch.compile(part.forward, backend=lambda gm, inputs, name=name: traced.append(name)
                                         or gm.forward)
        with VideoPredictor(model).open(tmp_path) as session:
            session.add_prompt(0, 1, points=[[30, 20]], labels=[1])
            session.add_prompt(0, 2, box=[5, 5, 40, 30])
            frames = [r.masks for r in session.propagate()]
            session.add_prompt(2, 1, points=[[10, 10]], labels=[0])
    assert len(frames) == 4 and not counters["graph_break"]
    assert set(traced) == {"memory_encoder", "memory_attention", "sam_prompt_encoder", "sam_mask_decoder"}
