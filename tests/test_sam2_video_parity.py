"""SAM 2.1 video tracking against the official video predictor's outputs.

Replays every action of ``fixtures.json`` -> ``sam2.1_hiera_tiny`` -> ``video`` with hole
filling off, as the official run did.
"""

from __future__ import annotations

import numpy as np
import pytest

from anyseg.models.sam2 import build_sam2
from anyseg.predictors.video import VideoPredictor

from parity import fixture_index, load_fixture_state_dict, mask_iou, unpack_masks

KEY = "sam2.1_hiera_tiny"


@pytest.fixture(scope="module")
def replay(fixtures_dir):
    """Run every action once; collect (tag, frame, result) and the prompt results."""
    index = fixture_index(fixtures_dir)[KEY]
    video = index["video"]
    model = build_sam2("sam2.1_hiera_t")
    model.load_state_dict(load_fixture_state_dict(fixtures_dir / index["checkpoint"]))
    model.eval().requires_grad_(False)
    session = VideoPredictor(model, fill_hole_area=0).open(fixtures_dir / video["frames_dir"])
    h, w = video["video_hw"]
    prompts, passes = {}, {}
    for action in video["actions"]:
        op = action["op"]
        if op == "points":
            r = session.add_prompt(action["frame"], action["obj_id"], points=action["points"],
                                   labels=action["labels"], clear=action.get("clear_old_points", True))
        elif op == "box":
            r = session.add_prompt(action["frame"], action["obj_id"], box=action["box"])
        elif op == "mask":
            mask = np.zeros((h, w), bool)
            if action["mask_box"] is not None:
                x0, y0, x1, y1 = (int(v) for v in action["mask_box"])
                mask[y0:y1, x0:x1] = True
            r = session.add_prompt(action["frame"], action["obj_id"], mask=mask)
        else:
            passes[action["tag"]] = list(session.propagate(start=action.get("start_frame"), reverse=action["reverse"]))
            continue
        prompts[action["recorded_as"]] = r
    return video, prompts, passes, np.load(fixtures_dir / video["outputs"])


def test_prompt_results(replay):
    _, prompts, _, ref = replay
    for tag, r in prompts.items():
        assert list(r.obj_ids) == list(ref[f"{tag}/obj_ids"]), tag
        masks = unpack_masks(ref, tag)
        for ours, theirs in zip(r.masks, masks):
            assert mask_iou(ours, theirs) >= 0.95, tag


def test_propagation(replay):
    video, _, passes, ref = replay
    ious = []
    for action in video["actions"]:
        if action["op"] != "propagate":
            continue
        tag = action["tag"]
        results = passes[tag]
        assert [r.frame for r in results] == action["frames"], tag
        for r in results:
            prefix = f"video/{tag}/{r.frame}"
            assert list(r.obj_ids) == list(ref[f"{prefix}/obj_ids"]), prefix
            masks = unpack_masks(ref, prefix)
            frame_ious = [mask_iou(a, b) for a, b in zip(r.masks, masks)]
            assert min(frame_ious) >= 0.95, (prefix, frame_ious)
            ious.extend(frame_ious)
            ref_scores = ref[f"{prefix}/object_score_logits"]
            assert np.array_equal(r.object_scores > 0, ref_scores > 0), (prefix, r.object_scores, ref_scores)
            if f"{prefix}/low_res_logits" in ref:
                diff = np.abs(r.logits - ref[f"{prefix}/low_res_logits"].astype(np.float32)).max()
                assert diff <= 5e-2, (prefix, diff)
    assert np.mean(ious) >= 0.99
