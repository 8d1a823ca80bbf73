"""``anyseg track`` end to end on the fixture frames (two frames, two objects)."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from PIL import Image

from anyseg.cli import main
from anyseg.io.masks import decode_rle


def test_track_writes_masks_rle_and_overlay(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([
        "track", str(fixtures_dir / "video_frames"), "--checkpoint", str(fixtures_dir / "sam2.1_hiera_tiny.random.pt"),
        "--prompt", "0:1:point=480,324", "--prompt", "0:1:point=100,100,0", "--prompt", "0:3:box=48,54,384,378",
        "--max-frames", "1", "--out", str(out),
    ])
    assert code == 0, capsys.readouterr().err
    pngs = sorted((out / "masks").iterdir())
    assert [p.name for p in pngs] == ["00000.png", "00001.png"]
    label_map = Image.open(pngs[0])
    assert label_map.mode == "P" and label_map.size == (960, 540)
    assert set(np.unique(np.asarray(label_map))) <= {0, 1, 3}
    doc = json.loads((out / "annotations.json").read_text())
    assert {(a["frame"], a["obj_id"]) for a in doc["annotations"]} == {(0, 1), (0, 3), (1, 1), (1, 3)}
    a = doc["annotations"][0]
    assert decode_rle(a["segmentation"]).sum() == a["area"]
    with av.open(str(out / "overlay.mp4")) as video:
        assert video.streams.video[0].frames == 2


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("0:1:circle=1,2", "FRAME:OBJ:point"),
        ("0:300:point=1,2", "1..255"),
        ("99:1:point=1,2", "past the end"),
        ("0:1:point=5000,2", "outside"),
    ],
)
def test_bad_prompts(fixtures_dir, tmp_path, capsys, prompt, message):
    argv = ["track", str(fixtures_dir / "video_frames"), "--checkpoint",
            str(fixtures_dir / "sam2.1_hiera_tiny.random.pt"), "--prompt", prompt, "--out", str(tmp_path / "o")]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects malformed prompts
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
