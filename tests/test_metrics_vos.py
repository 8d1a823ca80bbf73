"""J, F and J&F against the official SA-V evaluator's numbers (``fixtures/vos_eval``).

Every prediction set (exact, dilate4, shift, drop) in both layouts (SA-V, DAVIS) and both
modes (first/last frame skipped or not): per-object and global J, F, J&F within 1e-6 of
the official full-precision values, the anyseg per-video means equal to the fixture's
derived ones, frames counted per object equal to the official Evaluator's, and the
1-decimal ``results.csv`` identical to the one the official CLI wrote.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from anyseg.errors import InvalidInputError, MediaError
from anyseg.metrics import vos

LAYOUTS = ("sav_layout", "davis_layout")
KINDS = ("exact", "dilate4", "shift", "drop")
MODES = ("skip_first_last", "no_skip")
TOL = 1e-6


@lru_cache(maxsize=None)
def _official(root: Path) -> tuple[dict, dict]:
    return (
        json.loads((root / "results.json").read_text())["results"],
        json.loads((root / "per_frame.json").read_text()),
    )


@pytest.fixture(scope="module")
def vos_root(fixtures_dir: Path) -> Path:
    return fixtures_dir / "vos_eval"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_official_numbers(vos_root: Path, layout: str, kind: str, mode: str) -> None:
    results, per_frame = _official(vos_root)
    official = results[layout][kind][mode]
    frames = per_frame[layout][kind][mode]
    result = vos.evaluate(vos_root / layout / "gt", vos_root / layout / "pred" / kind, mode == "skip_first_last")

    assert result.layout == ("sav" if layout == "sav_layout" else "davis")
    assert result.unscored == [] and result.videos_without_prediction == []
    assert abs(result.j - official["global"]["J"]) <= TOL
    assert abs(result.f - official["global"]["F"]) <= TOL
    assert abs(result.jf - official["global"]["J&F"]) <= TOL

    ours = result.to_json()
    assert ours["per_object"].keys() == official["per_object"].keys()
    for video, objects in official["per_object"].items():
        assert ours["per_object"][video].keys() == objects.keys()
        for obj, metrics in objects.items():
            mine = ours["per_object"][video][obj]
            for key in ("J", "F", "J&F"):
                assert abs(mine[key] - metrics[key]) <= TOL, (video, obj, key)
            assert mine["frames"] == len(frames[video][obj]["counted_frames"])
    for video, metrics in official["per_video_mean_of_objects_DERIVED"].items():
        for key in ("J", "F", "J&F"):
            assert abs(ours["per_video_mean_of_objects"][video][key] - metrics[key]) <= TOL

    official_csv = (vos_root / "official_output" / layout / kind / mode / "results.csv").read_text()
    assert result.official_csv() == official_csv


def test_boundary_f_equals_disk_dilation_reference() -> None:
    """The sparse nearest-boundary count equals precision/recall from a full binary
    dilation with the disk (what cv2.dilate computes on binary images)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(20, 60, size=2)
        pred = ndimage.binary_opening(rng.random((h, w)) > 0.6, iterations=1)
        gt = ndimage.binary_opening(rng.random((h, w)) > 0.6, iterations=1)
        radius = int(rng.integers(1, 6))
        bp, bg = vos.boundary_map(pred), vos.boundary_map(gt)
        if not bp.any() or not bg.any():
            continue
        structure = vos.disk(radius)
        precision = np.sum(bp & ndimage.binary_dilation(bg, structure)) / bp.sum()
        recall = np.sum(bg & ndimage.binary_dilation(bp, structure)) / bg.sum()
        expected = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        assert vos.boundary_f(pred, gt, radius) == pytest.approx(expected, abs=1e-15)


def test_frame_conventions() -> None:
    empty = np.zeros((20, 30), dtype=bool)
    square = empty.copy()
    square[5:10, 5:10] = True
    assert vos.region_iou(empty, empty) == 1.0 and vos.boundary_f(empty, empty, 3) == 1.0
    assert vos.region_iou(square, empty) == 0.0 and vos.boundary_f(square, empty, 3) == 0.0
    assert vos.boundary_f(empty, square, 3) == 0.0
    assert vos.disk(4).sum() == 49  # skimage.morphology.disk(4)
    assert vos.boundary_radius(848, 480) == 8 and vos.boundary_radius(424, 240) == 4


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _davis_video(root: Path, frames: list[np.ndarray]) -> None:
    for i, frame in enumerate(frames):
        _write(root / f"{i:05d}.png", frame)


def test_counting_starts_at_first_appearance(tmp_path: Path) -> None:
    """Frames before an object appears (in GT or prediction) do not count; a false
    positive before its GT appears does (J = F = 0); both-empty frames after count as 1."""
    blank = np.zeros((16, 16), dtype=np.uint8)
    obj = blank.copy()
    obj[4:9, 4:9] = 1
    gt = [blank, blank, blank, obj, blank]
    _davis_video(tmp_path / "gt" / "v", gt)
    _davis_video(tmp_path / "exact" / "v", gt)
    _davis_video(tmp_path / "early" / "v", [blank, obj, blank, obj, blank])
    exact = vos.evaluate(tmp_path / "gt", tmp_path / "exact", skip_first_last=False)
    assert (exact.j, exact.objects[0].frames) == (100.0, 2)  # frames 3 and 4
    early = vos.evaluate(tmp_path / "gt", tmp_path / "early", skip_first_last=False)
    assert early.objects[0].frames == 4  # from frame 1, where the prediction appears
    assert early.j == pytest.approx(100 * (0 + 1 + 1 + 1) / 4)


def test_missing_and_bad_predictions(tmp_path: Path) -> None:
    frame = np.zeros((8, 8), dtype=np.uint8)
    frame[2:5, 2:5] = 1
    _davis_video(tmp_path / "gt" / "a", [frame] * 3)
    _davis_video(tmp_path / "gt" / "b", [frame] * 3)
    _davis_video(tmp_path / "pred" / "a", [frame] * 3)
    result = vos.evaluate(tmp_path / "gt", tmp_path / "pred")
    assert result.videos_without_prediction == ["b"] and result.jf == 100.0
    with pytest.raises(InvalidInputError, match="no prediction folder"):
        vos.evaluate(tmp_path / "gt", tmp_path / "pred", strict=True)
    with pytest.raises(InvalidInputError, match="does not exist"):
        vos.evaluate(tmp_path / "nothing", tmp_path / "pred")

    (tmp_path / "pred" / "a" / "00001.png").unlink()
    with pytest.raises(InvalidInputError, match="missing prediction"):
        vos.evaluate(tmp_path / "gt", tmp_path / "pred")
    _write(tmp_path / "pred" / "a" / "00001.png", np.zeros((8, 9)))
    with pytest.raises(InvalidInputError, match="size mismatch"):
        vos.evaluate(tmp_path / "gt", tmp_path / "pred")
    (tmp_path / "pred" / "a" / "00001.png").write_bytes(b"not a png")
    with pytest.raises(MediaError):
        vos.evaluate(tmp_path / "gt", tmp_path / "pred")


def test_sav_object_never_visible_is_listed_not_scored(tmp_path: Path) -> None:
    """The official evaluator crashes on an SA-V object whose GT is empty on every scored
    frame; anyseg leaves it out and says so."""
    seen = np.zeros((8, 8), dtype=np.uint8)
    seen[1:4, 1:4] = 1
    never = np.zeros((8, 8), dtype=np.uint8)
    for root in ("gt", "pred"):
        for i in range(4):
            _write(tmp_path / root / "v" / "000" / f"{i:05d}.png", seen)
            _write(tmp_path / root / "v" / "001" / f"{i:05d}.png", never)
    result = vos.evaluate(tmp_path / "gt", tmp_path / "pred")
    assert [o.obj for o in result.objects] == ["000"]
    assert result.unscored == ["v/001: no ground-truth mask on any scored frame"]
