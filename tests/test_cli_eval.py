"""``anyseg eval`` end to end on the shared fixtures and samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anyseg.cli import main


def test_vos_writes_official_csv_and_json(fixtures_dir: Path, tmp_path: Path, capsys) -> None:
    root = fixtures_dir / "vos_eval"
    out = tmp_path / "out"
    code = main(
        ["eval", "vos", "--gt", str(root / "davis_layout/gt"), "--pred", str(root / "davis_layout/pred/shift"),
         "--no-skip-first-last", "--out", str(out)]
    )
    assert code == 0
    expected = (root / "official_output/davis_layout/shift/no_skip/results.csv").read_text()
    assert (out / "results.csv").read_text() == expected
    official = json.loads((root / "results.json").read_text())["results"]["davis_layout"]["shift"]["no_skip"]
    written = json.loads((out / "results.json").read_text())
    assert abs(written["global"]["J&F"] - official["global"]["J&F"]) <= 1e-6
    assert written["skip_first_last"] is False
    printed = capsys.readouterr().out
    assert "| video" in printed and "**global** (mean over objects)" in printed and "82.55" in printed


def test_vos_missing_folder_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["eval", "vos", "--gt", str(tmp_path / "nope"), "--pred", str(tmp_path)]) == 2
    assert "ground-truth folder" in capsys.readouterr().err


def test_saco_video(samples_dir: Path, tmp_path: Path, capsys) -> None:
    root = samples_dir / "saco_veval_toy"
    code = main(
        ["eval", "saco-video", "--gt", str(root / "toy_saco_veval_sav_test_gt.json"),
         "--pred", str(root / "toy_saco_veval_sav_test_pred.json"), "--out", str(tmp_path)]
    )
    assert code == 0
    official = json.loads((root / "toy_saco_veval_sav_test_eval_res.json").read_text())["dataset_results"]
    written = json.loads((tmp_path / "results.json").read_text())
    for key, value in written["dataset_results"].items():
        assert value == pytest.approx(official[key], abs=1e-12)
    assert len(written["video_np_results"]) == 8
    assert (tmp_path / "results.csv").read_text().startswith("video_id,category_id,")
    printed = capsys.readouterr().out
    assert "pHOTA" in printed and "0.4656" in printed


def test_saco_image(tmp_path: Path, capsys) -> None:
    rle = {"size": [4, 4], "counts": "02>"}  # rows 0-1 of column 0
    gt = {
        "images": [{"id": 1, "height": 4, "width": 4}, {"id": 2, "height": 4, "width": 4}],
        "annotations": [{"id": 1, "image_id": 1, "segmentation": rle, "bbox": [0, 0, 1, 2], "iscrowd": 0}],
    }
    preds = [{"image_id": 1, "segmentation": rle, "bbox": [0, 0, 1, 2], "score": 0.9}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    code = main(["eval", "saco-image", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"),
                 "--out", str(tmp_path / "out")])
    assert code == 0
    result = json.loads((tmp_path / "out/results.json").read_text())
    assert result["cgF1_eval_segm_IL_MCC"] == pytest.approx(1.0, abs=1e-5)
    assert result["cgF1_eval_bbox_positive_micro_F1"] == pytest.approx(1.0, abs=1e-3)
    assert "| IL_MCC" in capsys.readouterr().out
    assert main(["eval", "saco-image", "--gt", str(tmp_path / "nope.json"), "--pred", str(tmp_path / "pred.json")]) == 2
