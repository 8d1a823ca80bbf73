"""``anyseg everything`` end to end on the MobileSAM fixture checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from anyseg.cli import main
from anyseg.io.masks import decode_rle

# thresholds off and a 3x3 grid: masks survive even with random weights, and it is quick
FAST = ["--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture(scope="module")
def checkpoint(fixtures_dir):
    return str(fixtures_dir / "mobile_sam_vit_t.random.pt")


def _photo(path, hw=(90, 120), seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*hw, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools vs NumPy 2
def test_folder_writes_masks_overlays_and_one_coco_json(checkpoint, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "a.png")
    _photo(folder / "b.jpg", (64, 80), seed=1)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "notes.txt").write_text("not an image, ignored")
    out = tmp_path / "out"
    assert main(["everything", str(folder), "--checkpoint", checkpoint, "--out", str(out), *FAST]) == 1
    err = capsys.readouterr().err
    assert "skipping" in err and "broken.jpg" in err and "1 file(s) skipped" in err

    data = json.loads((out / "annotations.json").read_text())
    assert [im["file_name"].rsplit("/", 1)[-1] for im in data["images"]] == ["a.png", "b.jpg"]
    assert [s["file"].rsplit("/", 1)[-1] for s in data["skipped"]] == ["broken.jpg"]
    assert data["annotations"] and data["categories"] == [{"id": 1, "name": "object"}]
    for im in data["images"]:
        overlay = Image.open(out / im["overlay"])
        assert overlay.size == (im["width"], im["height"]) and overlay.mode == "RGB"
    for ann in data["annotations"]:
        mask = np.asarray(Image.open(out / ann["mask_file"])) > 0
        assert np.array_equal(mask, decode_rle(ann["segmentation"]))
        assert ann["area"] == mask.sum()
        assert {"bbox", "predicted_iou", "stability_score", "point_coords", "crop_box"} <= set(ann)
    areas = [a["area"] for a in data["annotations"] if a["image_id"] == 1]
    assert areas == sorted(areas, reverse=True)
    # a valid COCO file: pycocotools indexes it and decodes every mask
    coco = COCO(str(out / "annotations.json"))
    assert len(coco.getAnnIds()) == len(data["annotations"])
    assert coco.annToMask(coco.loadAnns(coco.getAnnIds())[0]).shape == (90, 120)


def test_single_image_rle_only(checkpoint, tmp_path):
    photo = _photo(tmp_path / "photo.png")
    out = tmp_path / "out"
    assert main(["everything", str(photo), "--checkpoint", checkpoint, "--out", str(out), "--rle", *FAST]) == 0
    data = json.loads((out / "annotations.json").read_text())
    assert len(data["images"]) == 1 and data["skipped"] == []
    assert all("mask_file" not in a for a in data["annotations"])
    assert not (out / "masks").exists() and (out / "overlays" / "photo.png").is_file()
    assert data["info"]["settings"]["points_per_side"] == 3


@pytest.mark.parametrize(
    "make, argv, message",
    [
        (lambda d: d.mkdir(), [], "holds no image files"),
        (lambda d: None, [], "no such file or folder"),
        (lambda d: (d.mkdir(), (d / "x.png").write_bytes(b"junk")), [], "none of the 1 image files"),
        (lambda d: d.write_bytes(b"\xff\xd8 truncated"), [], "not a readable image"),
        (lambda d: _photo(d, (8, 8)), [], "at least 16 per side"),
        (lambda d: _photo(d), ["--points-per-side", "0"], "points_per_side must be in [1, 256]"),
    ],
    ids=["empty-folder", "missing", "no-readable-image", "unreadable-image", "tiny-image", "bad-grid"],
)
def test_bad_input_writes_nothing(checkpoint, tmp_path, capsys, make, argv, message):
    target = tmp_path / "input.png"
    make(target)
    out = tmp_path / "out"
    assert main(["everything", str(target), "--checkpoint", checkpoint, "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_needs_a_model(tmp_path, capsys):
    photo = _photo(tmp_path / "photo.png")
    assert main(["everything", str(photo), "--out", str(tmp_path / "out")]) == 2
    assert "--model NAME or --checkpoint PATH" in capsys.readouterr().err
