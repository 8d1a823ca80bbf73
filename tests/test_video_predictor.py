"""VideoSession behaviour with a reduced random-weight SAM 2 at a small input size:
sources, prompts, propagation options, bounded memory, and clear errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from anyseg import InvalidInputError, MediaError
from anyseg.models.hiera import HieraConfig
from anyseg.models.sam2 import Sam2Config, Sam2Model
from anyseg.predictors.video import VideoPredictor

H, W = 48, 64


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    trunk = HieraConfig(embed_dim=16, num_heads=1, stages=(1, 1, 1, 1), global_att_blocks=(),
                        window_spec=(8, 4, 4, 2), window_pos_embed_bkg_spatial_size=(4, 4))
    return Sam2Model(Sam2Config(trunk=trunk, image_size=128)).eval().requires_grad_(False)


def random_frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture()
def session(model):
    with VideoPredictor(model).open(random_frames(10)) as s:
        yield s


def test_prompt_returns_all_objects(session):
    r = session.add_prompt(2, 1, points=[[30, 20]], labels=[1])
    assert r.frame == 2 and r.obj_ids == [1] and r.masks.shape == (1, H, W)
    r = session.add_prompt(2, 5, box=[5, 5, 40, 30])
    assert r.obj_ids == [1, 5] and r.masks.shape == (2, H, W) and r.logits.shape == (2, 32, 32)
    r = session.add_prompt(2, 1, points=[[10, 10]], labels=[0], clear=False)
    assert session.objects[1].prompts[2].num_points == 2


def test_propagation_directions_and_limits(session):
    session.add_prompt(4, 1, points=[[30, 20]], labels=[1])
    assert [r.frame for r in session.propagate()] == list(range(4, 10))
    assert [r.frame for r in session.propagate(reverse=True)] == [4, 3, 2, 1, 0]
    assert [r.frame for r in session.propagate(start=6, max_frames=2)] == [6, 7, 8]
    assert [r.frame for r in session.propagate(start=0, reverse=True)] == []
    r = next(session.propagate(start=3))
    assert r.masks.shape == (1, H, W) and r.object_scores.shape == (1,)


def test_new_object_after_propagation_and_refinement(session):
    session.add_prompt(0, 1, points=[[30, 20]], labels=[1])
    list(session.propagate())
    # a refinement click on a tracked frame starts from that frame's previous logits
    session.add_prompt(5, 1, points=[[12, 12]], labels=[0], clear=False)
    session.add_prompt(7, 2, mask=np.pad(np.ones((10, 10), bool), ((10, 28), (20, 34))))
    results = list(session.propagate())
    assert [r.obj_ids for r in results] == [[1, 2]] * 10
    assert results[7].object_scores[1] == pytest.approx(10.0)  # a mask prompt is its own output


def test_refinement_clicks_on_a_tracked_frame_condition_it_once(session, monkeypatch):
    session.add_prompt(0, 1, points=[[30, 20]], labels=[1])
    list(session.propagate(max_frames=4))
    calls = []
    condition = session.model.condition_on_memory
    monkeypatch.setattr(session.model, "condition_on_memory", lambda *a, **k: calls.append(a) or condition(*a, **k))
    session.add_prompt(2, 1, points=[[40, 25]], labels=[1], clear=False)
    session.add_prompt(2, 1, points=[[12, 12]], labels=[0], clear=False)
    assert len(calls) == 1 and calls[0][2]  # one memory attention, with memories
    kept = session._conditioned._value
    session._conditioned.clear()
    with torch.inference_mode():  # as the session computes it
        fresh = session._condition(session.objects[1], 2, session._frame_features(2), False, False)
    torch.testing.assert_close(fresh, kept, rtol=0, atol=0)
    session.add_prompt(4, 1, points=[[20, 20]], labels=[1], clear=False)  # another frame: its own bank
    assert len(calls) == 3


def test_remove_reset_clear(session):
    session.add_prompt(0, 1, points=[[30, 20]], labels=[1])
    session.add_prompt(0, 2, points=[[10, 10]], labels=[1])
    session.remove_object(1)
    assert session.obj_ids == [2]
    r = session.clear_prompts(0, 2)
    assert r.obj_ids == [2]
    with pytest.raises(InvalidInputError, match="has no prompt"):
        list(session.propagate(start=0))
    session.reset()
    assert session.obj_ids == []
    with pytest.raises(InvalidInputError, match="no object has a prompt"):
        session.propagate()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"frame": 10, "obj_id": 1, "points": [[1, 1]], "labels": [1]}, "past the end: the video has 10 frames"),
        ({"frame": -1, "obj_id": 1, "points": [[1, 1]], "labels": [1]}, "non-negative"),
        ({"frame": 0, "obj_id": "a", "points": [[1, 1]], "labels": [1]}, "integers"),
        ({"frame": 0, "obj_id": 1}, "empty prompt"),
        ({"frame": 0, "obj_id": 1, "points": [[1, 1]]}, "together"),
        ({"frame": 0, "obj_id": 1, "points": [[100, 1]], "labels": [1]}, "outside the 64x48 video"),
        ({"frame": 0, "obj_id": 1, "box": [1, 1, 0, 5]}, "x1 >= x0"),
        ({"frame": 0, "obj_id": 1, "box": [1, 1, 5, 5], "clear": False}, "clear=True"),
        ({"frame": 0, "obj_id": 1, "mask": np.ones((10, 10), bool)}, "must be 48x64"),
        ({"frame": 0, "obj_id": 1, "mask": np.ones((H, W), bool), "box": [1, 1, 5, 5]}, "either a mask"),
    ],
)
def test_bad_prompts_leave_the_session_usable(session, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        session.add_prompt(**kwargs)
    session.add_prompt(1, 1, points=[[30, 20]], labels=[1])
    assert [r.frame for r in session.propagate(max_frames=1)] == [1, 2]


def test_unknown_object(session):
    with pytest.raises(InvalidInputError, match="unknown object id 7"):
        session.remove_object(7)


def test_unreadable_and_empty_videos(model, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    with pytest.raises(MediaError):
        VideoPredictor(model).open(bad)
    with pytest.raises(MediaError):
        VideoPredictor(model).open(iter([]))
    empty = tmp_path / "frames"
    empty.mkdir()
    with pytest.raises(MediaError):
        VideoPredictor(model).open(empty)


def test_needs_sam2(model):
    class NotSam2:
        family = "sam"

    with pytest.raises(InvalidInputError, match="SAM 2"):
        VideoPredictor(NotSam2())


def _rss_mib() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_long_live_stream_runs_in_bounded_memory(model):
    """2,000 frames from a live iterator: resident memory after 2,000 frames stays within
    5 % of that after 200 (no frames, features or outputs accumulate)."""
    rng = np.random.default_rng(0)
    stream = (rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(2000))
    session = VideoPredictor(model).open(stream)
    session.add_prompt(0, 1, points=[[30, 20]], labels=[1])
    session.add_prompt(0, 2, box=[5, 5, 40, 30])
    rss = {}
    for r in session.propagate():
        if r.frame in (199, 1999):
            rss[r.frame] = _rss_mib()
    assert session.num_frames == 2000 and set(rss) == {199, 1999}
    assert rss[1999] <= 1.05 * rss[199], rss
    assert all(len(obj.non_cond) <= 17 for obj in session.objects.values())


def test_video_file_source(model, samples_dir):
    """A real mp4 decoded lazily: prompt on the last frame, track backward a little."""
    with VideoPredictor(model).open(samples_dir / "videos" / "bedroom.mp4") as s:
        assert s.num_frames == 200 and s.size == (540, 960)
        s.add_prompt(199, 1, points=[[480, 270]], labels=[1])
        results = list(s.propagate(reverse=True, max_frames=2))
        assert [r.frame for r in results] == [199, 198, 197]
        assert results[-1].masks.shape == (1, 540, 960)


def _track_three_frames(predictor: VideoPredictor, hooks: list) -> None:
    """Prompt frame 0 of three random frames and propagate, then remove ``hooks``."""
    try:
        with predictor.open(random_frames(3)) as s:
            s.add_prompt(0, 1, points=[[30, 20]], labels=[1])
            results = list(s.propagate())
    finally:
        for hook in hooks:
            hook.remove()
    assert [r.frame for r in results] == [0, 1, 2] and results[-1].masks.shape == (1, H, W)


def test_int8_precision_encodes_frames_with_int8_linears(model):
    """``precision="int8"``: each frame's encode runs within ``int8_linears`` (which layers
    it turns to int8 is tested in test_int8.py); the rest of the step does not."""
    from anyseg.models import common

    seen = []
    hooks = [model.image_encoder.register_forward_hook(lambda *_: seen.append(("encoder", common._int8.get()))),
             model.memory_attention.register_forward_hook(lambda *_: seen.append(("memory", common._int8.get())))]
    _track_three_frames(VideoPredictor(model, precision="int8"), hooks)
    assert ("encoder", True) in seen and ("memory", False) in seen and ("encoder", False) not in seen


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_decodes_on_the_decoder_copy(model, precision):
    """In bf16 / int8 every decode (prompted and tracked frames) runs on the predictor's
    copy of the mask decoder, outside autocast; fp32 keeps the model's own."""
    assert VideoPredictor(model).decoder is None
    predictor = VideoPredictor(model, precision=precision)
    copy = predictor.decoder
    assert copy is not model.mask_decoder and copy.output_upscaling[0].weight.dtype == torch.bfloat16
    calls = []
    hooks = [copy.register_forward_hook(lambda *_: calls.append(torch.is_autocast_enabled("cpu"))),
             model.mask_decoder.register_forward_hook(lambda *_: calls.append("model's own"))]
    _track_three_frames(predictor, hooks)
    assert calls == [False] * 3
