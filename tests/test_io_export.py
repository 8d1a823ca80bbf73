"""Exports (anyseg.io.export): palette, overlays, cut-outs, atomic PNG/JSON/YOLO/video files."""

from __future__ import annotations

import json
import os

import av
import numpy as np
import pytest
from PIL import Image

from anyseg.errors import InvalidInputError
from anyseg.io.export import (
    DAVIS_PALETTE,
    atomic_path,
    coco_rle_json,
    cutout,
    object_color,
    overlay,
    save_indexed_png,
    save_mask_png,
    save_rgb_png,
    save_rgba_png,
    write_gif,
    write_json_atomic,
    write_video,
    yolo_polygons,
)
from anyseg.io.images import load_label_map
from anyseg.io.masks import decode_rle


@pytest.fixture
def image() -> np.ndarray:
    return np.full((40, 60, 3), 100, dtype=np.uint8)


@pytest.fixture
def masks() -> np.ndarray:
    masks = np.zeros((2, 40, 60), bool)
    masks[0, 5:25, 5:30] = True
    masks[1, 20:35, 35:55] = True
    return masks


def _no_temp_files(folder) -> bool:
    return not [name for name in os.listdir(folder) if name.endswith(".tmp")]


# --- palette ---------------------------------------------------------------------------------


def test_object_colors_follow_the_davis_palette():
    assert object_color(0) == (0, 0, 0)
    assert object_color(1) == (128, 0, 0)
    assert object_color(2) == (0, 128, 0)
    assert object_color(3) == (128, 128, 0)
    assert object_color(4) == (0, 0, 128)
    assert object_color(8) == (64, 0, 0)
    assert len({object_color(i) for i in range(4096)}) == 4096
    assert len(DAVIS_PALETTE) == 768 and DAVIS_PALETTE[3:6] == [128, 0, 0]
    with pytest.raises(InvalidInputError):
        object_color(-1)


def test_palette_matches_davis_pngs(fixtures_dir):
    png = next((fixtures_dir / "vos_eval" / "davis_layout" / "gt").rglob("*.png"))
    assert Image.open(png).getpalette()[:768] == DAVIS_PALETTE


# --- overlay and cutout ----------------------------------------------------------------------


def test_overlay_blends_inside_and_outlines(image, masks):
    out = overlay(image, masks, obj_ids=[1, 2], alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    outside = ~masks.any(axis=0)
    np.testing.assert_array_equal(out[outside], image[outside])
    np.testing.assert_array_equal(out[15, 15], [114, 50, 50])  # interior of object 1: 50/50 blend
    edge, interior = out[5, 15], out[15, 15]
    assert not np.array_equal(edge, interior)
    np.testing.assert_array_equal(out[6, 15], edge)  # 2-pixel outline
    np.testing.assert_array_equal(out[7, 15], interior)
    assert np.array_equal(image, np.full((40, 60, 3), 100, np.uint8))  # input untouched


def test_overlay_options(image, masks):
    plain = overlay(image, masks, alpha=0.0, outline=False)
    np.testing.assert_array_equal(plain, image)
    labelled = overlay(image, masks, labels=True)
    assert (labelled != overlay(image, masks)).any()
    one = overlay(image, masks[0], obj_ids=[7])
    assert one.shape == image.shape
    with pytest.raises(InvalidInputError, match="object ids"):
        overlay(image, masks, obj_ids=[1])
    with pytest.raises(InvalidInputError, match="image's size"):
        overlay(image, masks[:, :20])


def test_cutout(image, masks):
    image = image.copy()
    image[5, 5] = (1, 2, 3)
    cut = cutout(image, masks[0])
    assert cut.shape == (20, 25, 4) and cut.dtype == np.uint8
    np.testing.assert_array_equal(cut[0, 0], [1, 2, 3, 255])
    full = cutout(image, masks[0], crop=False)
    assert full.shape == (40, 60, 4)
    assert full[0, 0, 3] == 0 and full[10, 10, 3] == 255
    with pytest.raises(InvalidInputError, match="empty"):
        cutout(image, np.zeros((40, 60), bool))


# --- PNG files -------------------------------------------------------------------------------


def test_png_writers_round_trip(tmp_path, image, masks):
    save_mask_png(tmp_path / "mask.png", masks[0])
    read = Image.open(tmp_path / "mask.png")
    assert read.mode == "L"
    np.testing.assert_array_equal(np.asarray(read), np.where(masks[0], 255, 0))

    labels = masks[0] * 1 + masks[1] * 2
    save_indexed_png(tmp_path / "labels.png", labels)
    read = Image.open(tmp_path / "labels.png")
    assert read.mode == "P" and read.getpalette()[:768] == DAVIS_PALETTE
    np.testing.assert_array_equal(load_label_map(tmp_path / "labels.png"), labels)

    rgba = cutout(image, masks[1], crop=False)
    save_rgba_png(tmp_path / "cut.png", rgba)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "cut.png")), rgba)
    drawn = overlay(image, masks, [1, 2])
    save_rgb_png(tmp_path / "overlay.png", drawn)
    read = Image.open(tmp_path / "overlay.png")
    assert read.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(read), drawn)
    assert _no_temp_files(tmp_path)


def test_png_writers_validate(tmp_path):
    with pytest.raises(InvalidInputError, match="0..255"):
        save_indexed_png(tmp_path / "x.png", np.full((2, 2), 256))
    with pytest.raises(InvalidInputError):
        save_indexed_png(tmp_path / "x.png", np.zeros((2, 2), np.float32))
    with pytest.raises(InvalidInputError):
        save_rgba_png(tmp_path / "x.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(InvalidInputError, match="H×W×3 uint8"):
        save_rgb_png(tmp_path / "x.png", np.zeros((2, 2, 4), np.uint8))
    assert not (tmp_path / "x.png").exists()


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"a": 1}
    assert _no_temp_files(tmp_path)
    write_json_atomic(tmp_path / "new" / "deep.json", [1])  # folders are created
    assert json.loads((tmp_path / "new" / "deep.json").read_text()) == [1]


# --- JSON and YOLO ---------------------------------------------------------------------------


def test_coco_rle_json(tmp_path, masks):
    records = [
        {
            "segmentation": masks[i],
            "area": np.int64(masks[i].sum()),
            "bbox": np.array([1, 2, 3, 4]),
            "predicted_iou": np.float32(0.5),
            "point_coords": [np.array([1.5, 2.5])],
        }
        for i in range(2)
    ]
    out = coco_rle_json(records)
    text = json.dumps(out)
    assert isinstance(out[0]["segmentation"]["counts"], str)
    np.testing.assert_array_equal(decode_rle(out[1]["segmentation"]), masks[1])
    assert out[0]["area"] == masks[0].sum() and out[0]["bbox"] == [1, 2, 3, 4]
    assert out[0]["point_coords"] == [[1.5, 2.5]]
    write_json_atomic(tmp_path / "records.json", records)
    assert json.loads((tmp_path / "records.json").read_text()) == json.loads(text)


def test_yolo_polygons():
    masks = np.zeros((3, 10, 20), bool)
    masks[0, 2:5, 4:10] = True
    masks[1, 0:2, 0:2] = True
    masks[1, 8:10, 18:20] = True  # second part of the same mask: second line
    text = yolo_polygons(masks, [3, 0, 5])
    lines = text.splitlines()
    assert len(lines) == 3 and text.endswith("\n")
    assert lines[0] == "3 0.200000 0.200000 0.500000 0.200000 0.500000 0.500000 0.200000 0.500000"
    assert lines[1].startswith("0 ") and lines[2].startswith("0 ")
    values = np.array([float(v) for line in lines for v in line.split()[1:]])
    assert values.min() >= 0 and values.max() <= 1
    halved = yolo_polygons(masks[:1], [3], hw=(20, 40)).split()
    assert halved[1:3] == ["0.100000", "0.100000"]
    with pytest.raises(InvalidInputError):
        yolo_polygons(masks, [1])


# --- videos ----------------------------------------------------------------------------------


def _frames(count: int, height: int, width: int):
    for i in range(count):
        yield np.full((height, width, 3), 20 * i, dtype=np.uint8)


def test_write_video_pads_odd_sizes_and_decodes(tmp_path):
    path = tmp_path / "clip.mp4"
    assert write_video(path, _frames(8, 33, 45), fps=12) == 8
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name in ("h264", "mpeg4")
        assert (stream.width, stream.height) == (46, 34)
        assert float(stream.average_rate) == 12
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 8
    assert abs(float(decoded[5].mean()) - 100) < 4
    assert _no_temp_files(tmp_path)


def test_write_video_failures_leave_nothing(tmp_path):
    with pytest.raises(InvalidInputError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [], fps=10)

    def mixed():
        yield from _frames(2, 16, 16)
        yield np.zeros((8, 8, 3), np.uint8)

    with pytest.raises(InvalidInputError, match="frame 2"):
        write_video(tmp_path / "mixed.mp4", mixed(), fps=10)
    assert os.listdir(tmp_path) == []


def test_write_gif(tmp_path):
    path = tmp_path / "clip.gif"
    assert write_gif(path, _frames(4, 10, 12), fps=5) == 4
    gif = Image.open(path)
    assert gif.n_frames == 4 and gif.size == (12, 10) and gif.info["duration"] == 200
    with pytest.raises(InvalidInputError):
        write_gif(path, [], fps=5)
