"""``anyseg segment`` and ``anyseg models`` end to end."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from anyseg.cli import main


@pytest.fixture(scope="module")
def checkpoint(fixtures_dir):
    return str(fixtures_dir / "sam2.1_hiera_tiny.random.pt")


@pytest.fixture()
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path)
    return path


def test_segment_writes_every_file(checkpoint, photo, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(photo), "--checkpoint", checkpoint, "--point", "80,60", "--point", "5,5,0",
                 "--box", "10,10,150,110", "--out", str(out)]) == 0
    summary = json.loads((out / "segment.json").read_text())
    assert summary["prompts"]["labels"] == [1, 0] and summary["prompts"]["multimask"] is False
    assert len(summary["masks"]) == 1
    for rec in summary["masks"]:
        for name in rec["files"].values():
            assert (out / name).is_file()
        mask = np.asarray(Image.open(out / rec["files"]["mask"]))
        assert mask.shape == (120, 160) and mask.sum() // 255 == rec["area"]
        assert Image.open(out / rec["files"]["cutout"]).mode == "RGBA"
        assert Image.open(out / rec["files"]["overlay"]).size == (160, 120)
    assert "score" in capsys.readouterr().out


def test_precision_option(checkpoint, photo, tmp_path, capsys):
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert main(["segment", str(photo), "--checkpoint", checkpoint, "--point", "80,60", "--out", str(out),
                     "--precision", precision]) == 0
        runs[precision] = json.loads((out / "segment.json").read_text())
        assert runs[precision]["precision"] == precision
    fp32, bf16 = ([m["score"] for m in runs[p]["masks"]] for p in ("fp32", "bf16"))
    assert fp32 != bf16 and np.allclose(fp32, bf16, atol=0.05)  # computed in bf16, close to fp32
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["segment", str(photo), "--checkpoint", checkpoint, "--point", "80,60", "--out", str(tmp_path / "x"),
              "--precision", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err


def test_every_command_that_runs_a_model_takes_a_precision():
    from anyseg.cli import build_parser
    from anyseg.cli.common import PRECISIONS as CHOICES
    from anyseg.predictors.precision import PRECISIONS

    assert CHOICES == tuple(PRECISIONS)
    parser = build_parser()
    for argv in (["segment", "i.png", "--out", "o"], ["everything", "i.png", "--out", "o"],
                 ["track", "v.mp4", "--prompt", "0:1:point=1,2", "--out", "o"],
                 ["eval", "clicks", "--images", "d", "--gt", "g.json"],
                 ["eval", "track", "--video-dir", "d", "--gt", "g", "--out", "o"], ["serve"]):
        assert parser.parse_args(argv).precision == "fp32"
        assert parser.parse_args(argv + ["--precision", "int8"]).precision == "int8"


def test_int8_off_the_cpu_is_refused_before_weights_are_read(photo, tmp_path, capsys):
    # no weights in the test's ANYSEG_HOME: the precision is refused before any is looked for
    code = main(["segment", str(photo), "--model", "sam2.1-tiny", "--device", "meta", "--precision", "int8",
                 "--point", "10,10", "--out", str(tmp_path / "out")])
    assert code == 2 and "int8 is a CPU mode" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_single_click_gives_three_candidates(checkpoint, photo, tmp_path):
    out = tmp_path / "out"
    assert main(["segment", str(photo), "--checkpoint", checkpoint, "--point", "80,60", "--out", str(out)]) == 0
    scores = [m["score"] for m in json.loads((out / "segment.json").read_text())["masks"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)


def test_offline_names_the_file_to_download(photo, tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)  # offline even where a network exists
    out = tmp_path / "out"
    # no weights cached in the test's ANYSEG_HOME: one clear line, exit 2
    code = main(["segment", str(photo), "--model", "sam2.1-tiny", "--point", "10,10", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt" in err
    assert "checkpoints/sam2.1_hiera_tiny.pt" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--point", "10,10"], "--model NAME or --checkpoint PATH"),
        (["--model", "sam2.1-tinyy", "--point", "10,10"], "Did you mean 'sam2.1-tiny'"),
        (["--model", "sam2.1-tiny"], "at least one --point"),
    ],
)
def test_bad_arguments(photo, tmp_path, capsys, argv, message):
    assert main(["segment", str(photo), *argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["segment", "{photo}", "--point", "1,1"],
    ["everything", "{photo}"],
    ["track", "{photo}", "--prompt", "0:1:point=1,1"],
    ["eval", "clicks", "--images", "{tmp}", "--gt", "{photo}"],
    ["eval", "saco-image", "--gt", "{photo}", "--pred", "{photo}"],
])
def test_an_output_folder_that_cannot_be_written_is_refused_first(command, photo, tmp_path, capsys):
    """Before any model is loaded (the checkpoint named does not even exist) or any work
    done: here a file stands where the folder would be."""
    (tmp_path / "taken").write_text("a file")
    argv = [a.format(photo=photo, tmp=tmp_path) for a in command]
    if command[0] != "eval" or command[1] == "clicks":
        argv += ["--checkpoint", str(tmp_path / "missing.pt")]
    assert main([*argv, "--out", str(tmp_path / "taken" / "out")]) == 2
    assert f"cannot write in the output folder {tmp_path / 'taken' / 'out'}" in capsys.readouterr().err


def test_a_full_disk_is_one_line(photo, tmp_path, capsys, monkeypatch):
    """A file-system error in the middle of the work (here: no space left) is one line, not a
    traceback."""
    import anyseg.cli.segment as segment

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "o" / "mask_0.png"))

    monkeypatch.setattr(segment, "load_model_from_args", full)
    assert main(["segment", str(photo), "--model", "sam2.1-tiny", "--point", "1,1", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("anyseg: error: [Errno 28] No space left on device") and "Traceback" not in err


def test_unreadable_image(checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    assert main(["segment", str(bad), "--checkpoint", checkpoint, "--point", "1,1", "--out", str(tmp_path / "o")]) == 2
    assert "bad.jpg" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_foreign_checkpoint(photo, tmp_path, capsys):
    bad = tmp_path / "foreign.pt"
    import torch

    torch.save({"model": {"w": torch.zeros(3)}}, bad)
    assert main(["segment", str(photo), "--checkpoint", str(bad), "--point", "1,1", "--out", str(tmp_path / "o")]) == 2
    assert "does not match any known architecture" in capsys.readouterr().err


def test_models_lists_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "sam2.1-large" in out and "cached" in out
