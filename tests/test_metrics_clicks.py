"""Click simulation (RITM protocol), NoC / mIoU bookkeeping, COCO input and ``anyseg eval clicks``."""

from __future__ import annotations

import csv
import re
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from anyseg.cli import main
from anyseg.errors import InvalidInputError
from anyseg.io.masks import encode_rle
from anyseg.metrics import clicks
from anyseg.metrics.clicks import Click, next_click, number_of_clicks, region_depth


def _rect(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Bool mask with rows ``rows[0]..rows[1]-1`` and columns ``cols[0]..cols[1]-1`` set."""
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


# --------------------------------------------------------------------------- click placement


def test_region_depth_counts_the_image_border_as_boundary() -> None:
    full = np.ones((3, 5), dtype=bool)
    assert region_depth(full).tolist() == [[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]]


def test_region_depth_crop_equals_the_whole_image_transform() -> None:
    rng = np.random.default_rng(0)
    mask = ndimage.binary_opening(rng.random((60, 80)) > 0.4)
    mask[:, :3] = True  # touches the border
    expected = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    np.testing.assert_array_equal(region_depth(mask), expected)
    assert not region_depth(np.zeros((4, 4), bool)).any()


def test_first_click_is_the_object_pixel_farthest_from_its_boundary() -> None:
    gt = _rect((50, 60), (10, 30), (5, 45))  # 20 x 40: depth 10 on rows 19-20, columns 14-35
    empty = np.zeros_like(gt)
    assert next_click(gt, empty, empty) == Click(x=14, y=19, positive=True)  # first in row-major order


def test_next_click_goes_to_the_deeper_error_region() -> None:
    gt = _rect((40, 40), (5, 25), (5, 25))
    thin_miss_big_spill = (gt & ~_rect((40, 40), (5, 25), (5, 7))) | _rect((40, 40), (26, 36), (10, 20))
    click = next_click(gt, thin_miss_big_spill, np.zeros_like(gt))
    assert click == Click(x=14, y=30, positive=False)  # centre of the 10 x 10 false positive
    big_miss = gt & ~_rect((40, 40), (5, 25), (15, 25))  # right half missed: 20 x 10, depth 5
    assert next_click(gt, big_miss, np.zeros_like(gt)) == Click(x=19, y=9, positive=True)


def test_equally_deep_errors_give_a_negative_click() -> None:
    gt = _rect((20, 20), (2, 5), (2, 5))  # 3 x 3 object, entirely missed: depth 2
    pred = _rect((20, 20), (10, 13), (10, 13))  # 3 x 3 false positive: depth 2
    assert next_click(gt, pred, np.zeros_like(gt)) == Click(x=11, y=11, positive=False)


def test_clicked_pixels_are_not_clicked_again_and_a_perfect_mask_stops() -> None:
    gt = _rect((9, 9), (3, 6), (3, 6))
    empty, clicked = np.zeros_like(gt), np.zeros_like(gt)
    clicked[4, 4] = True
    assert next_click(gt, empty, clicked) == Click(x=3, y=3, positive=True)
    assert next_click(gt, gt, np.zeros_like(gt)) is None


def test_number_of_clicks_and_cap() -> None:
    ious = [0.5, 0.86, 0.91, 0.95]
    assert number_of_clicks(ious, 0.85, 4) == 2
    assert number_of_clicks(ious, 0.90, 4) == 3
    assert number_of_clicks(ious, 0.96, 4) == 4  # never reached: the cap
    assert number_of_clicks([0.5, 0.9], 0.9, 2) == 2  # reached at the last click: the same count


# --------------------------------------------------------------------------- the simulation loop


@dataclass
class _Out:
    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray

    @property
    def best(self) -> int:
        return int(np.argmax(self.scores))


class _ScriptedPredictor:
    """Returns scripted masks and records every call."""

    def __init__(self, outputs: list[_Out]) -> None:
        self.outputs = outputs
        self.calls: list[dict] = []

    def predict(self, points, labels, mask_input=None, multimask=True):
        self.calls.append({"points": points.tolist(), "labels": labels.tolist(), "mask_input": mask_input,
                           "multimask": multimask})
        return self.outputs[len(self.calls) - 1]


def _logits(values: list[float]) -> np.ndarray:
    return np.stack([np.full((256, 256), v, np.float32) for v in values])


def test_simulate_feeds_clicks_and_best_logits_back_and_pads_after_a_perfect_mask() -> None:
    gt = _rect((20, 20), (4, 14), (4, 14))
    first = np.stack([np.zeros_like(gt), gt & ~_rect((20, 20), (4, 14), (9, 14)), gt])
    predictor = _ScriptedPredictor([
        _Out(first, np.array([0.1, 0.9, 0.5]), _logits([0, 1, 2])),  # best: the half mask
        _Out(gt[None], np.array([0.7]), _logits([3])),
    ])
    ious, made = clicks.simulate(predictor, gt, max_clicks=5)
    assert ious == [0.5, 1.0, 1.0, 1.0, 1.0]
    assert made == [Click(8, 8, True), Click(11, 6, True)]  # then the first depth-3 pixel of the miss
    first_call, second_call = predictor.calls
    assert first_call["multimask"] and first_call["mask_input"] is None
    assert first_call["points"] == [[8, 8]] and first_call["labels"] == [1]
    assert not second_call["multimask"] and second_call["points"] == [[8, 8], [11, 6]]
    assert second_call["mask_input"].shape == (1, 256, 256) and second_call["mask_input"].max() == 1


def test_result_summaries() -> None:
    objs = [
        clicks.ObjectClicks("a.jpg", 1, 10, 3, [0.5, 0.86, 0.91, 0.92, 0.93], []),
        clicks.ObjectClicks("a.jpg", 1, 11, 3, [0.2, 0.3, 0.4, 0.5, 0.88], []),
        clicks.ObjectClicks("b.jpg", 2, 12, 3, [0.95] * 5, []),
    ]
    result = clicks.ClickResult(5, objs, [])
    overall = result.overall()
    assert overall["mIoU@1"] == pytest.approx((0.5 + 0.2 + 0.95) / 3)
    assert overall["mIoU@3"] == pytest.approx((0.91 + 0.4 + 0.95) / 3)
    assert overall["NoC@85"] == pytest.approx((2 + 5 + 1) / 3)
    assert overall["NoC@90"] == pytest.approx((3 + 5 + 1) / 3)
    assert (overall["NoF@85"], overall["NoF@90"]) == (0, 1)
    assert result.per_image()["a.jpg"]["objects"] == 2
    headers, rows = result.csv_rows()
    assert headers[:6] == ["file_name", "image_id", "annotation_id", "category_id", "NoC@85", "NoC@90"]
    assert rows[1][4:6] == [5, 5] and len(headers) == 6 + 5
    with pytest.raises(InvalidInputError, match="at least 5"):
        clicks.evaluate(None, [], max_clicks=4)


# --------------------------------------------------------------------------- COCO input


def test_annotation_mask_from_polygon_and_rle() -> None:
    square = _rect((10, 12), (2, 6), (3, 8))
    rle = clicks.annotation_mask({"segmentation": encode_rle(square)}, 10, 12)
    np.testing.assert_array_equal(rle, square)
    polygon = clicks.annotation_mask({"segmentation": [[3, 2, 8, 2, 8, 6, 3, 6]]}, 10, 12)
    assert polygon[3:5, 4:7].all() and not polygon[7:, :].any()
    with pytest.raises(InvalidInputError, match=r"RLE is \[10, 12\].*image is \[10, 10\]"):
        clicks.annotation_mask({"id": 5, "segmentation": encode_rle(square)}, 10, 10)


def _coco(tmp_path: Path, images: list[dict], annotations: list[dict]) -> Path:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": []}))
    return path


GROCERIES = {"id": 1, "file_name": "groceries.jpg", "height": 534, "width": 800}


def _objects() -> list[dict]:
    """Two objects of groceries.jpg (800 x 534): a polygon rectangle and an RLE disc."""
    yy, xx = np.mgrid[:534, :800]
    disc = (yy - 300) ** 2 + (xx - 550) ** 2 <= 90**2
    return [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
         "segmentation": [[100, 120, 300, 120, 300, 260, 100, 260]]},
        {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0, "segmentation": encode_rle(disc)},
        {"id": 3, "image_id": 1, "category_id": 2, "iscrowd": 1, "segmentation": encode_rle(disc)},
    ]


def test_load_targets_skips_crowds(samples_dir: Path, tmp_path: Path) -> None:
    gt = _coco(tmp_path, [GROCERIES, {**GROCERIES, "id": 2, "file_name": "unannotated.jpg"}], _objects())
    targets, skipped = clicks.load_targets(samples_dir / "images", gt)
    assert [t.file_name for t in targets] == ["groceries.jpg"]
    assert [a["id"] for a in targets[0].annotations] == [1, 2]
    assert skipped == ["annotation 3 (image 1): crowd region"]


@pytest.mark.parametrize(
    ("images", "annotation", "message"),
    [
        ([GROCERIES], {"id": 9, "image_id": 7}, "refers to image_id 7"),
        ([{**GROCERIES, "file_name": "missing.jpg"}], {"id": 9, "image_id": 1}, "are not in"),
        ([{**GROCERIES, "height": 480}], {"id": 9, "image_id": 1}, "800x534 .* says 800x480"),
    ],
)
def test_cli_bad_coco_input(samples_dir, tmp_path, capsys, images, annotation, message) -> None:
    gt = _coco(tmp_path, images, [{**annotation, "segmentation": [[0, 0, 5, 0, 5, 5]]}])
    code = main(["eval", "clicks", "--images", str(samples_dir / "images"), "--gt", str(gt), "--model", "sam2.1-tiny"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("anyseg: error:")
    assert re.search(message, err)


def test_cli_missing_inputs(tmp_path: Path, capsys) -> None:
    args = ["eval", "clicks", "--model", "sam2.1-tiny"]
    assert main([*args, "--images", str(tmp_path / "nope"), "--gt", str(tmp_path / "gt.json")]) == 2
    assert "image folder" in capsys.readouterr().err
    assert main([*args, "--images", str(tmp_path), "--gt", str(tmp_path / "gt.json")]) == 2
    assert "COCO file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--images", str(tmp_path), "--gt", str(tmp_path / "gt.json"), "--max-clicks", "3"])
    assert "at least 5" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_end_to_end(samples_dir: Path, fixtures_dir: Path, tmp_path: Path, capsys) -> None:
    gt = _coco(tmp_path, [GROCERIES], _objects())
    out = tmp_path / "out"
    code = main(["eval", "clicks", "--images", str(samples_dir / "images"), "--gt", str(gt),
                 "--checkpoint", str(fixtures_dir / "sam2.1_hiera_tiny.random.pt"),
                 "--max-clicks", "5", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    first, second = result["per_object"]
    assert [o["annotation_id"] for o in result["per_object"]] == [1, 2]
    assert len(first["ious"]) == 5 and all(0 <= v <= 1 for v in first["ious"])
    assert first["clicks"][0] == [169, 189, 1]  # first pixel at depth 70 of the 200 x 140 rectangle
    assert second["clicks"][0] == [550, 300, 1]  # the disc's centre
    assert 1 <= first["NoC@85"] <= 5 and result["overall"]["objects"] == 2
    assert result["skipped"] == ["annotation 3 (image 1): crowd region"]
    with open(out / "results.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][-1] == "IoU@5" and len(rows) == 3
    printed = capsys.readouterr().out
    assert "| groceries.jpg" in printed and "**overall** (mean over objects)" in printed and "NoC@90" in printed
