"""The benchmark harness: each measure on a reduced SAM 2 in-process, one real
side-by-side round in subprocesses (anyseg against itself standing in for the official
side), the report, and the CLI's argument checks."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from anyseg import _process, bench
from anyseg.cli import main
from anyseg.models.hiera import HieraConfig
from anyseg.models.sam2 import Sam2Config, Sam2Model

H, W = 48, 64
# A measuring process that answers every step with 0.5 s.
FAKE_CHILD = """
import json, sys
from anyseg.bench import reply
reply({"ready": True})
for line in sys.stdin:
    if line.strip() != "step":
        break
    reply({"sample": 0.5})
reply({"check": {}, "peak_rss_mib": 1.0, "torch": "x", "threads": 1})
"""


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
    fields = dict(model="sam2.1_hiera_t", measure=measure, weights="", threads=1, image=str(image),
                  everything_image=str(image), frames_dir=str(frames), frames=3, prompts=prompts)
    return bench.Task(**(fields | kw))


def test_image_measures(small_model, inputs):
    step, check = bench.prepare(task("encode", inputs), small_model)
    assert step() > 0 and check() == {}
    step, check = bench.prepare(task("click", inputs, clicks=bench.click_points((H, W))), small_model)
    assert step() > 0 and step() > 0 and len(check()["scores"]) == 3
    step, check = bench.prepare(task("refine", inputs, clicks=bench.click_points((H, W))), small_model)
    assert step() > 0 and step() > 0 and len(check()["scores"]) == 1
    step, _ = bench.prepare(task("memory", inputs), small_model)
    assert step() == pytest.approx(bench.peak_rss_mib(), rel=0.05)


def test_video_measure(small_model, inputs):
    step, check = bench.prepare(task("video", inputs, objects=2, frames=1), small_model)
    assert step() > 0 and len(check()["areas"]) == 2
    with pytest.raises(StopIteration):
        step()


def test_everything_measure(small_model, inputs, monkeypatch):
    if bench.unavailable("sam2.1_hiera_t", "everything"):
        pytest.skip("segment-everything is not in this checkout")
    from anyseg.predictors import everything

    monkeypatch.setattr(everything, "MaskGenerator", functools.partial(everything.MaskGenerator, points_per_side=4))
    step, check = bench.prepare(task("everything", inputs), small_model)
    assert step() > 0 and check()["masks"] >= 0


def test_compiled_task_compiles_what_the_official_code_compiles(small_model, inputs, monkeypatch):
    """``--compile``: the parts' forwards go through torch.compile in the official modes, the
    image encoder's (``compile_image_encoder``), for video the tracker's parts too
    (``vos_optimized``). The compiled parts themselves: test_compile.py."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append((type(fn.__self__).__name__, kw)) or fn)
    parts = ("image_encoder", "memory_encoder", "memory_attention", "sam_prompt_encoder", "sam_mask_decoder")
    for name in parts:  # restored after the test
        monkeypatch.setattr(getattr(small_model, name), "forward", getattr(small_model, name).forward)
    step, _ = bench.prepare(task("encode", inputs, compiled=True), small_model)
    assert step() > 0 and calls == [("Sam2ImageEncoder", {"mode": "max-autotune", "dynamic": False})]
    calls.clear()
    step, _ = bench.prepare(task("video", inputs, compiled=True), small_model)
    assert step() > 0 and [(name, kw["dynamic"]) for name, kw in calls] == [
        ("Sam2ImageEncoder", False), ("MemoryEncoder", False), ("MemoryAttention", True), ("PromptEncoder", False),
        ("MaskDecoder", False)]


def test_device_parity_of_a_model_with_itself(small_model, inputs):
    """benchmarks/device_parity.py's comparisons, the model against itself: equal."""
    spec = importlib.util.spec_from_file_location("device_parity", bench.REPO / "benchmarks" / "device_parity.py")
    device_parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(device_parity)
    image, frames = inputs
    outputs = [device_parity.image_outputs(small_model, bench.load_image(str(image)), "fp32") for _ in range(2)]
    got = device_parity.image_agreement(*outputs)
    assert got["max_low_res_logit_diff"] == 0 and got["min_mask_iou"] == 1 and got["prompts"] == 10
    prompts = task("video", inputs).prompts
    masks = [device_parity.video_masks(small_model, frames, 2, "fp32", prompts) for _ in range(2)]
    assert device_parity.video_agreement(*masks) == {"frames": 3, "objects": 2, "min_mask_iou": 1.0,
                                                     "mean_mask_iou": 1.0}


def test_profile_computes_in_the_precision_asked(small_model, inputs, tmp_path, monkeypatch):
    image, _ = inputs
    frames = tmp_path / "frames"  # the prompted frame, 3 warm-up steps, then two timed ones
    frames.mkdir()
    for i in range(7):
        Image.open(image).save(frames / f"{i:05d}.jpg")
    monkeypatch.setattr(bench, "load_model", lambda model, weights: small_model)
    monkeypatch.setattr(bench, "random_weights", lambda model, path: path)
    monkeypatch.setattr(bench, "extract_frames", lambda video, count, folder: frames)
    monkeypatch.setattr(bench, "VIDEO_PROMPTS", ({"obj_id": 1, "points": [[30, 20]], "labels": [1]},))
    paths = bench.profile("sam2.1_hiera_t", tmp_path / "out", image=str(image), precision="bf16")
    assert [p.name for p in paths] == [f"profile_sam2.1_hiera_t_bf16_{what}.txt" for what in ("encode", "click", "video_step")]
    text = paths[0].read_text()
    assert text.startswith("sam2.1_hiera_t encode (bf16)") and "image_encoder" in text and "aten::" in text


def test_glibc_tunables_are_reported(monkeypatch):
    """Both sides inherit the environment's glibc tunables; the report names them."""
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    report = {"machine": bench.machine(), "date": "today", "settings": {"repeat": 1}, "results": []}
    assert report["machine"]["glibc_tunables"] == "glibc.malloc.hugetlb=1"
    assert "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in bench.markdown(report)


def test_pause_probes_the_host_in_its_middle():
    bench.host_probe()  # compiled
    probes: list[float] = []
    start = time.perf_counter()
    bench._pause(0.02, probes)
    assert time.perf_counter() - start >= 0.02 and len(probes) == 1 and 0 < probes[0] < 20
    bench._pause(0, probes)  # no pause, no probe
    assert len(probes) == 1


def test_what_cannot_be_measured():
    assert "SAM 2 only" in bench.unavailable("mobile_sam_vit_t", "video")
    assert "not a preset" in bench.unavailable("sam9_huge", "encode")
    assert bench.unavailable("sam2.1_hiera_t", "video") is None
    assert [bench.official_tree_key(m) for m in ("sam2.1_hiera_s", "mobile_sam_vit_t", "sam_vit_b")] == [
        "sam2", "mobilesam", "sam1"]


def test_side_by_side_round(samples_dir, tmp_path, monkeypatch):
    """A full run in subprocesses with anyseg's own measuring process standing in for the
    official driver: calls alternate, same weights give the same scores, ratios near 1; each
    precision gets its own rows."""
    monkeypatch.setattr(bench, "official_side", lambda python, source: bench.Side(
        "official", python, ["-m", "anyseg.bench"], source))
    cfg = bench.Config(models=["sam2.1_hiera_t", "sam9_huge"], measures=["click"], repeat=1, click_iters=2, pause=0.05,
                       threads=1, image=str(samples_dir / "images" / "truck.jpg"),
                       official={"sam2": str(tmp_path)}, official_python=bench.OURS.python,
                       precisions=["fp32", "bf16"])
    lines: list[str] = []
    report = bench.run(cfg, log=lines.append)
    click, click_bf16, skipped, _ = report["results"]
    # the stand-in reads the task's precision too (the official driver ignores it)
    assert click_bf16["precision"] == "bf16" and click_bf16["check"] == "scores max diff 0.0e+00"
    assert len(click["anyseg"]["samples"]) == len(click["official"]["samples"]) == len(click["ratios"]) == 2
    assert click["check"] == "scores max diff 0.0e+00" and 0.2 < click["ratio"] < 5
    assert len(click["anyseg"]["peak_rss_mib"]) == 1 and click["official"]["value"] > 0
    assert skipped["anyseg"] is None and "not a preset" in skipped["note"]
    assert lines[0].startswith("skip sam9_huge click") and lines[2].startswith("[1/1] sam2.1_hiera_t click (fp32): anyseg")
    json_path, md_path = bench.write_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text())["machine"]["torch_threads"] == 1
    table = md_path.read_text()
    assert "cores; torch" in table and "| sam2.1_hiera_t | click | fp32 |" in table
    assert "| sam2.1_hiera_t | click | bf16 |" in table
    assert report["settings"]["pause"] == 0.05 and "(0.05 s idle before each)" in table
    # a host probe in each pause: one per timed call of each side
    assert len(click["host_probe_ms"]) == 4 and click["host_load"] >= 1 and skipped["host_probe_ms"] == []
    fastest = min(p for r in (click, click_bf16) for p in r["host_probe_ms"])
    assert report["settings"]["host_probe_fastest_ms"] == fastest and "| ratio | host load |" in table
    assert ("both sides: THP_MEM_ALLOC_ENABLE=1" in table) == (os.environ.get("THP_MEM_ALLOC_ENABLE") == "1")


@pytest.mark.parametrize("code, preset, expected", [
    ("import anyseg", None, "1"), ("import anyseg", "0", "0"), ("import torch, anyseg", None, "0")])
def test_huge_page_buffers(code, preset, expected):
    """Imported before torch, anyseg turns torch's huge-page buffers on unless the environment
    says otherwise (torch reads the setting once); the bench names the setting, which both
    sides inherit."""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    env |= {} if preset is None else {"THP_MEM_ALLOC_ENABLE": preset}
    script = f"{code}; from anyseg import bench; print(bench.machine()['thp_alloc'])"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
    report = {"machine": bench.machine() | {"thp_alloc": expected}, "date": "", "settings": {"repeat": 1},
              "results": []}
    assert ("; THP_MEM_ALLOC_ENABLE=1" in bench.markdown(report)) == (expected == "1")


def test_failing_side_is_reported(tmp_path, monkeypatch):
    """An official python that cannot run the driver: its error is reported, ours still measured."""
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(image)
    monkeypatch.setattr(bench, "random_weights", lambda model, path: path)
    monkeypatch.setattr(bench, "OURS", bench.Side("anyseg", sys.executable, ["-c", FAKE_CHILD]))
    cfg = bench.Config(models=["sam2.1_hiera_t"], measures=["encode"], repeat=1, iters=2, threads=1,
                       image=str(image), official={"sam2": str(tmp_path)}, official_python=sys.executable)
    report = bench.run(cfg, log=lambda line: None)
    (row,) = report["results"]
    assert row["anyseg"]["samples"] == [0.5, 0.5] and row["ratio"] is None
    assert "exit code 1" in row["official"]["errors"][0]
    assert "| 0.5 s | - | - |" in bench.markdown(report) and "official: exit code 1" in bench.markdown(report)


def test_cli_argument_errors(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--measures", "encode,speed"])
    assert "subset of" in capsys.readouterr().err
    assert main(["bench", "--official-sam2", ".", "--measures", "encode"]) == 2
    assert "--official-python" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--pause", "-1"], "must be"), (["--repeat", "0"], "must be"), (["--device", "gpu7"], "unknown device"),
    pytest.param(["--device", "cuda"], "sees no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here")),
])
def test_bench_cli_rejects_bad_settings(argv, message, tmp_path, capsys):
    assert main(["bench", "--measures", "click", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


FAULTS = """
import resource, sys, torch
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(64 << 20, dtype=torch.uint8).fill_(1)  # 64 MB, touched, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(min(faults() for _ in range(8)))  # the heap settles after a few
"""


@pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="malloc settings are glibc's")
@pytest.mark.parametrize("preset", [None, "131072"])
def test_keep_freed_memory(preset):
    """Imported, anyseg has malloc keep freed buffers for the next ones (no page faults on
    reuse) unless the environment sets malloc's thresholds itself; the bench names the
    settings, and gives the official side the same."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | {"THP_MEM_ALLOC_ENABLE": "0"}
    env |= {} if preset is None else {"MALLOC_MMAP_THRESHOLD_": preset}
    script = f"import json, anyseg; from anyseg import _process; print(json.dumps(_process.in_force))\n{FAULTS}"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    in_force, faults = out.stdout.split("\n")[:2]
    expected = _process.MALLOC_ENV if preset is None else {"MALLOC_MMAP_THRESHOLD_": preset}
    assert json.loads(in_force) == expected
    assert int(faults) < 1000 if preset is None else int(faults) > 10_000  # 64 MB: 16384 pages
    report = {"machine": bench.machine() | {"malloc": expected}, "date": "", "settings": {"repeat": 1},
              "results": []}
    assert ", ".join(f"{k}={v}" for k, v in expected.items()) in bench.markdown(report).split("\n")[0]
