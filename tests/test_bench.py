"""The benchmark harness: each measure on a reduced SAM 2 in-process, one real
side-by-side round in subprocesses (anyseg against itself standing in for the official
side), the report, and the CLI's argument checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from anyseg import bench
from anyseg.cli import main
from anyseg.models.hiera import HieraConfig
from anyseg.models.sam2 import Sam2Config, Sam2Model

H, W = 48, 64


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    trunk = HieraConfig(embed_dim=16, num_heads=1, stages=(1, 1, 1, 1), global_att_blocks=(),
                        window_spec=(8, 4, 4, 2), window_pos_embed_bkg_spatial_size=(4, 4))
    return Sam2Model(Sam2Config(trunk=trunk, image_size=128)).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A small image and a folder of four JPEG frames ``00000.jpg`` ..."""
    root = tmp_path_factory.mktemp("bench_inputs")
    rng = np.random.default_rng(0)
    frames = root / "frames"
    frames.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(frames / f"{i:05d}.jpg")
    image = root / "image.png"
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(image)
    return image, frames


def task(measure: str, inputs, **kw) -> bench.Task:
    image, frames = inputs
    prompts = [{"obj_id": 1, "points": [[30, 20]], "labels": [1]}, {"obj_id": 7, "box": [5, 5, 40, 30]}]
    fields = dict(model="sam2.1_hiera_t", measure=measure, weights="", result="", threads=1, image=str(image),
                  everything_image=str(image), frames_dir=str(frames), frames=3, iters=2, warmup=1, prompts=prompts)
    return bench.Task(**(fields | kw))


def test_image_measures(small_model, inputs):
    encode = bench.measure(task("encode", inputs), small_model)
    assert len(encode["samples"]) == 2 and all(t > 0 for t in encode["samples"])
    click = bench.measure(task("click", inputs, clicks=bench.click_points((H, W))), small_model)
    assert len(click["samples"]) == 2 and len(click["check"]["scores"]) == 3
    memory = bench.measure(task("memory", inputs), small_model)
    assert memory["samples"][0] == pytest.approx(bench.peak_rss_mib(), rel=0.05)


def test_video_measure(small_model, inputs):
    r = bench.measure(task("video", inputs, objects=2, frames=2), small_model)
    assert r["samples"][0] > 0 and len(r["check"]["areas"]) == 2


def test_everything_measure(small_model, inputs):
    if bench.unavailable("sam2.1_hiera_t", "everything"):
        pytest.skip("segment-everything is not in this checkout")
    r = bench.measure(task("everything", inputs, iters=1), small_model)
    assert len(r["samples"]) == 1 and r["check"]["masks"] >= 0


def test_what_cannot_be_measured():
    assert "SAM 2 only" in bench.unavailable("mobile_sam_vit_t", "video")
    assert "not a preset" in bench.unavailable("sam9_huge", "encode")
    assert bench.unavailable("sam2.1_hiera_t", "video") is None
    assert [bench.official_tree_key(m) for m in ("sam2.1_hiera_s", "mobile_sam_vit_t", "sam_vit_b")] == [
        "sam2", "mobilesam", "sam1"]


def test_side_by_side_round(samples_dir, tmp_path, monkeypatch):
    """A full interleaved run in subprocesses with anyseg's own child standing in for the
    official driver: same weights give the same scores, the ratio is near 1."""
    monkeypatch.setattr(bench, "official_side", lambda python, source: bench.Side(
        "official", python, ["-m", "anyseg.bench"], source))
    cfg = bench.Config(models=["sam2.1_hiera_t", "sam9_huge"], measures=["click"], repeat=2, click_iters=2,
                       threads=1, image=str(samples_dir / "images" / "truck.jpg"),
                       official={"sam2": str(tmp_path)}, official_python=bench.OURS.python)
    lines: list[str] = []
    report = bench.run(cfg, log=lines.append)
    click, skipped = report["results"]
    assert len(click["anyseg"]["samples"]) == len(click["official"]["samples"]) == 4
    assert click["check"] == "scores max diff 0.0e+00" and 0.2 < click["ratio"] < 5
    assert skipped["anyseg"] is None and "not a preset" in skipped["note"]
    assert lines[0].startswith("skip sam9_huge click")
    assert [line.split(": ")[0] for line in lines[1:]] == [
        "[1/2] sam2.1_hiera_t click anyseg", "[1/2] sam2.1_hiera_t click official",
        "[2/2] sam2.1_hiera_t click official", "[2/2] sam2.1_hiera_t click anyseg"]
    json_path, md_path = bench.write_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text())["machine"]["torch_threads"] == 1
    table = md_path.read_text()
    assert "cores; torch" in table and "| sam2.1_hiera_t | click |" in table


def test_cli_argument_errors(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--measures", "encode,speed"])
    assert "subset of" in capsys.readouterr().err
    assert main(["bench", "--official-sam2", ".", "--measures", "encode"]) == 2
    assert "--official-python" in capsys.readouterr().err
