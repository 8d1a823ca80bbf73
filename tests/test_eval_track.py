"""Semi-supervised VOS (``anyseg eval track``): prompts from first-appearance masks,
prediction layouts, bad input, and an end-to-end run with the SAM 2 fixture checkpoint."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from anyseg.cli import main
from anyseg.io.export import save_indexed_png
from anyseg.io.images import load_label_map
from anyseg.metrics import track, vos

H, W = 540, 960  # the fixture video's frame size


def _rect(rows: tuple[int, int], cols: tuple[int, int], value: int = 1) -> np.ndarray:
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[rows[0] : rows[1], cols[0] : cols[1]] = value
    return labels


def _frames(fixtures_dir: Path, root: Path, count: int = 3) -> Path:
    """A copy of the first ``count`` fixture frames as ``root/clip/0000N.jpg``."""
    clip = root / "clip"
    clip.mkdir(parents=True)
    for i in range(count):
        shutil.copy(fixtures_dir / "video_frames" / f"{i:05d}.jpg", clip / f"{i:05d}.jpg")
    return root


def _davis_gt(root: Path, count: int = 3) -> Path:
    """Object 2 on every frame, object 1 from frame 1 on (it appears later), apart from each
    other. Where tracked masks overlap the smaller id wins, so each prompt frame shows its
    prompt mask whole."""
    for i in range(count):
        labels = _rect((100, 260), (100, 340), value=2)
        if i >= 1:
            labels |= _rect((300, 460), (560, 860), value=1)
        save_indexed_png(root / "clip" / f"{i:05d}.png", labels)
    return root


class _CopySession:
    """A stand-in tracker: every object keeps its prompt mask; records the calls."""

    def __init__(self, num_frames: int, calls: list) -> None:
        self.num_frames = num_frames
        self.calls = calls
        self.masks: dict[int, np.ndarray] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def add_prompt(self, frame, obj_id, mask):
        self.calls.append(("prompt", frame, obj_id))
        self.masks[obj_id] = mask

    def propagate(self, start, max_frames):
        self.calls.append(("propagate", start, max_frames))
        for frame in range(start, start + max_frames + 1):
            ids = list(self.masks)
            yield SimpleNamespace(frame=frame, obj_ids=ids, masks=np.stack([self.masks[i] for i in ids]))


class _CopyPredictor:
    def __init__(self) -> None:
        self.calls: list = []

    def open(self, video):
        return _CopySession(video.num_frames, self.calls)


def test_late_objects_are_added_when_they_appear(fixtures_dir: Path, tmp_path: Path) -> None:
    videos = _frames(fixtures_dir, tmp_path / "videos")
    gt = _davis_gt(tmp_path / "gt")
    (plan,) = track.plan_videos(videos, gt)
    assert plan.layout == vos.DAVIS_LAYOUT
    assert [(o.obj_id, o.frame) for o in plan.objects] == [(1, 1), (2, 0)]
    predictor = _CopyPredictor()
    track.track_video(predictor, plan, tmp_path / "pred" / "clip")
    assert predictor.calls == [("prompt", 0, 2), ("propagate", 0, 0), ("prompt", 1, 1), ("propagate", 1, 1)]
    for i in range(3):
        np.testing.assert_array_equal(load_label_map(tmp_path / "pred/clip" / f"{i:05d}.png"),
                                      load_label_map(gt / "clip" / f"{i:05d}.png"))
    result = vos.evaluate(gt, tmp_path / "pred", skip_first_last=False, strict=True)
    assert result.jf == pytest.approx(100.0)


def test_overlaps_go_to_the_smaller_id_and_sav_layout_writes_every_object(fixtures_dir, tmp_path) -> None:
    videos = _frames(fixtures_dir, tmp_path / "videos")
    gt = tmp_path / "gt"
    for i in range(3):
        save_indexed_png(gt / "clip/000" / f"{i:05d}.png", _rect((100, 300), (100, 400)))
        save_indexed_png(gt / "clip/001" / f"{i:05d}.png", _rect((200, 400), (200, 500)) if i else _rect((0, 0), (0, 0)))
        save_indexed_png(gt / "clip/002" / f"{i:05d}.png", _rect((0, 0), (0, 0)))  # never visible
    (plan,) = track.plan_videos(videos, gt)
    assert plan.layout == vos.SAV_LAYOUT
    assert [(o.name, o.frame) for o in plan.objects] == [("000", 0), ("001", 1), ("002", None)]
    track.track_video(_CopyPredictor(), plan, tmp_path / "pred" / "clip")
    for name in ("000", "001", "002"):
        for i in range(3):
            np.testing.assert_array_equal(load_label_map(tmp_path / "pred/clip" / name / f"{i:05d}.png"),
                                          load_label_map(gt / "clip" / name / f"{i:05d}.png"))
    result = vos.evaluate(gt, tmp_path / "pred", skip_first_last=False, strict=True)
    assert [o.obj for o in result.objects] == ["000", "001"] and result.jf == pytest.approx(100.0)

    davis = dataclasses.replace(plan, layout=vos.DAVIS_LAYOUT)
    masks = {1: _rect((100, 300), (100, 400)) > 0, 2: _rect((200, 400), (200, 500)) > 0}
    track._write_frame(davis, tmp_path / "davis", "00000", masks)
    labels = load_label_map(tmp_path / "davis/00000.png")
    assert labels[250, 250] == 1 and labels[350, 450] == 2  # the overlap is object 1's


def _run(tmp_path: Path, videos: Path, gt: Path, *extra: str) -> int:
    return main(["eval", "track", "--video-dir", str(videos), "--gt", str(gt), "--model", "sam2.1-tiny",
                 "--out", str(tmp_path / "out"), *extra])


def test_bad_input_is_a_clear_error(fixtures_dir: Path, tmp_path: Path, capsys) -> None:
    videos = _frames(fixtures_dir, tmp_path / "videos")
    gt = _davis_gt(tmp_path / "gt")
    assert _run(tmp_path, tmp_path / "nope", gt) == 2
    assert "video folder" in capsys.readouterr().err
    assert _run(tmp_path, videos, tmp_path / "nope") == 2
    assert "ground-truth folder" in capsys.readouterr().err

    (gt / "other").mkdir()
    assert _run(tmp_path, videos, gt) == 2
    assert "no frame folder" in capsys.readouterr().err
    (gt / "other").rmdir()

    Image.fromarray(np.zeros((480, 854), np.uint8)).save(gt / "clip/00001.png")
    assert _run(tmp_path, videos, gt) == 2
    err = capsys.readouterr().err
    assert "size mismatch" in err and "00001.png is 854x480" in err

    _davis_gt(gt.parent / "gt")
    save_indexed_png(gt / "clip/00007.png", _rect((0, 10), (0, 10)))
    assert _run(tmp_path, videos, gt) == 2
    assert "no video frame named 00007" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_end_to_end(fixtures_dir: Path, tmp_path: Path, capsys) -> None:
    videos = _frames(fixtures_dir, tmp_path / "videos", count=2)  # 2 frames: each costs an image encode
    gt = _davis_gt(tmp_path / "gt", count=2)
    out = tmp_path / "out"
    code = main(["eval", "track", "--video-dir", str(videos), "--gt", str(gt),
                 "--checkpoint", str(fixtures_dir / "sam2.1_hiera_tiny.random.pt"),
                 "--out", str(out), "--no-skip-first-last"])
    assert code == 0
    preds = [Image.open(out / "pred/clip" / f"{i:05d}.png") for i in range(2)]
    assert all(p.mode == "P" and p.size == (W, H) for p in preds)
    labels = [np.array(p) for p in preds]
    assert 1 not in labels[0]  # object 1 appears on frame 1
    truth = [load_label_map(gt / "clip" / f"{i:05d}.png") for i in range(2)]
    for frame, obj in ((0, 2), (1, 1)):  # prompt frames reproduce the prompt mask
        iou = ((labels[frame] == obj) & (truth[frame] == obj)).sum() / ((labels[frame] == obj) | (truth[frame] == obj)).sum()
        assert iou > 0.95
    result = json.loads((out / "results.json").read_text())
    assert set(result["per_object"]["clip"]) == {"001", "002"}
    assert result["skip_first_last"] is False and 0 <= result["global"]["J&F"] <= 100
    assert (out / "results.csv").read_text().startswith("sequence")
    printed = capsys.readouterr().out
    assert "wrote predictions of 1 video(s)" in printed and "**global** (mean over objects)" in printed
