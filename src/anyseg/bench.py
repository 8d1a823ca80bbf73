"""Speed benchmark of anyseg's predictors, optionally side by side with the official code.

Measures, per model (random weights in the official architecture and checkpoint format:
speed does not depend on the values):

* ``encode``: image encode, seconds (``ImagePredictor.set_image``);
* ``click``: click-to-mask latency with a cached embedding, milliseconds (one
  foreground click, three masks, masks at the image's resolution);
* ``refine``: a refinement click, milliseconds: the first click's best low-res logits as
  the mask input, with that click and a second one, one mask (the official notebooks'
  iterative refinement);
* ``everything``: segment-everything, seconds per image (``MaskGenerator`` at the
  official defaults: a 32 x 32 grid, no crops);
* ``video``: video tracking, frames per second with 1 and with 3 objects (SAM 2 only);
* ``memory``: peak resident memory of a process that loads the model, embeds one image
  and answers one click, MiB (on a GPU: the peak that torch allocated there).

Every measurement runs in its own process, so each peak resident memory is its own. With
an official source tree and a python that has torch + torchvision, the same measurement
also runs in ``benchmarks/official_driver.py`` on the official predictors, with the same
weights file, inputs and thread count. Both processes are set up (model loaded, warmed
up), then their timed calls alternate one by one, so that each pair of samples sees the
same load on a shared machine; this repeats ``--repeat`` times in fresh processes. Each
timed call starts after ``--pause`` seconds of idle time (0.1 s by default; clicks come
at human pace): otherwise the worker threads that one side's torch leaves spinning
after its call would run on the cores during the other side's call. Where anyseg places
its threads one per CPU (:func:`anyseg.kernels.bound_threads`), the official process gets
the same placement from OpenMP's variables (:func:`anyseg.kernels.placement_env`), as it
gets anyseg's malloc settings (:mod:`anyseg._process`). The
ratio is the median over pairs of the official time over ours (for video: per frame
step; for memory: the official peak over ours), so above 1 means anyseg is faster (or
smaller).

Each row also reports the *host load*: in the middle of each pause the harness times a
fixed loop of vector multiply-adds on data in the CPU's first-level cache
(:func:`host_probe`), and the row's median over the fastest of the whole run is its load
(1.00: the machine had the cores to itself). On a shared virtual machine other tenants'
work on the same cores (hyperthreads) slows such a loop, and both sides' calls with it,
while the clock rate stays: on the 2-core AMD host it varied 1.0-1.6x within minutes, and
anyseg's int8 clicks followed it (correlation 0.75 over 4 minutes). Ratios hold across it;
absolute times do not.

On a GPU (``--device cuda``) both sides compute there; each timed call lasts until the
device has finished the work it queued, and the official side runs under autocast in
anyseg's precision (fp32 for fp32), as its notebooks do. ``--compile`` compiles both image
encoders (``torch.compile``, the official ``compile_image_encoder``'s mode) and runs the
official video predictor in its ``vos_optimized`` mode, with the same parts of anyseg's
tracker compiled (:func:`compile_parts`).

A measurement is described by a JSON *task* that both sides read (see :class:`Task`);
``python -m anyseg.bench TASK_JSON`` runs one on anyseg's side, speaking the line
protocol of :func:`child_main` on stdin/stdout.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from anyseg import _process, kernels

MODELS = ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "mobile_sam_vit_t", "sam_vit_b")
MEASURES = ("encode", "click", "refine", "everything", "video", "memory")
VIDEO_OBJECTS = (1, 3)

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO.parent / "shared" / "samples"
DEFAULT_IMAGE = SAMPLES / "images" / "truck.jpg"
DEFAULT_EVERYTHING_IMAGE = SAMPLES / "images" / "groceries.jpg"
DEFAULT_VIDEO = SAMPLES / "videos" / "bedroom.mp4"
DEFAULT_OUT = REPO / "benchmarks" / "results"
OFFICIAL_DRIVER = REPO / "benchmarks" / "official_driver.py"

# Clicks for click-to-mask, as fractions of (width, height); cycled through.
CLICKS = ((0.5, 0.5), (0.3, 0.6), (0.7, 0.4), (0.25, 0.25), (0.75, 0.75), (0.6, 0.3), (0.4, 0.8), (0.8, 0.6))
# Prompts on frame 0 of bedroom.mp4 (960 x 540), one per object, as in benchmarks/video_tracking.py.
VIDEO_PROMPTS = (
    {"obj_id": 1, "points": [[560, 260]], "labels": [1]},
    {"obj_id": 2, "box": [300, 150, 520, 480]},
    {"obj_id": 3, "points": [[750, 300], [700, 420]], "labels": [1, 1]},
)

# measure -> unit of the reported value (video samples are seconds per frame step)
UNITS = {"encode": "s", "click": "ms", "refine": "ms", "everything": "s", "video": "fps", "memory": "MiB"}


def family_of(model: str) -> str:
    """``"sam2"`` for SAM 2 / 2.1 presets, ``"sam"`` for SAM 1 and MobileSAM."""
    return "sam2" if model.startswith("sam2") else "sam"


def official_tree_key(model: str) -> str:
    """Which official source tree a model is timed against: ``sam2``, ``mobilesam`` or ``sam1``."""
    if family_of(model) == "sam2":
        return "sam2"
    return "mobilesam" if model.startswith("mobile_sam") else "sam1"


def unavailable(model: str, measure: str) -> str | None:
    """Why anyseg cannot measure ``measure`` for ``model`` in this checkout, or ``None``."""
    from anyseg.models import all_presets

    if measure == "video" and family_of(model) != "sam2":
        return "video tracking is SAM 2 only"
    if (family_of(model), model) not in all_presets():
        return f"{model} is not a preset of this anyseg checkout"
    if measure == "everything" and importlib.util.find_spec("anyseg.predictors.everything") is None:
        return "anyseg.predictors.everything is not in this checkout"
    return None


def machine(device: str = "cpu") -> dict:
    """The CPU, core count, python and torch version, thread count, the huge-page setting of
    torch's allocator (``THP_MEM_ALLOC_ENABLE``: anyseg sets it; both sides inherit it), the
    malloc settings in force (:mod:`anyseg._process`; both sides get them too), glibc's
    tunables where the environment sets them (``GLIBC_TUNABLES``, e.g.
    ``glibc.malloc.hugetlb=1``: both sides inherit it) and, for a GPU ``device``, the GPU's
    name."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = {"gpu": torch.cuda.get_device_name(device)} if on_gpu(device) else {}
    tunables = {"glibc_tunables": os.environ["GLIBC_TUNABLES"]} if os.environ.get("GLIBC_TUNABLES") else {}
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "thp_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"), "malloc": dict(_process.in_force)} | tunables | gpu


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux: ``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def on_gpu(device: str) -> bool:
    """Whether the torch device ``device`` is a CUDA GPU."""
    import torch

    return torch.device(device).type == "cuda"


def peak_gpu_mib(device: str) -> float:
    """Peak memory that torch has allocated on the GPU ``device`` so far."""
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20


@dataclass
class Task:
    """One measurement, as both sides read it (JSON).

    ``measure`` is one of :data:`MEASURES`; ``weights`` an official-format checkpoint of
    ``model``; ``image`` the input of encode, click, refine and memory, ``everything_image`` that of
    segment-everything; ``frames_dir`` a folder of JPEG frames ``00000.jpg`` ... of which
    the first ``frames`` + 1 are tracked with the first ``objects`` of ``prompts``.
    ``warmup`` untimed calls precede the ``iters`` timed ones the harness asks for.
    ``source`` is the official source tree (the driver's side only). ``precision`` is
    anyseg's (``fp32``, ``bf16``, ``fp16`` or, on the CPU, ``int8``); the official side
    computes in fp32 on the CPU, its only CPU mode, and on a GPU under autocast in the same
    type (fp32 for fp32), as its notebooks do. ``device``: where both sides compute (a torch
    device). ``compiled``: on both sides, the parts that the official code compiles
    through ``torch.compile`` (:func:`compile_parts`; the official side's video predictor in
    its ``vos_optimized`` mode).
    """

    model: str
    measure: str
    weights: str
    threads: int
    image: str = str(DEFAULT_IMAGE)
    everything_image: str = str(DEFAULT_EVERYTHING_IMAGE)
    frames_dir: str = ""
    frames: int = 15
    objects: int = 1
    iters: int = 3
    warmup: int = 1
    clicks: list = field(default_factory=list)
    prompts: list = field(default_factory=lambda: [dict(p) for p in VIDEO_PROMPTS])
    source: str = ""
    precision: str = "fp32"
    device: str = "cpu"
    compiled: bool = False


# ----------------------------------------------------------------------- measuring


def seconds(fn: Callable[[], object], device: str = "cpu") -> float:
    """Wall time of one call of ``fn``; on a GPU ``device``, from an idle device to the end
    of the work that the call queued there."""
    import torch

    sync = (lambda: torch.cuda.synchronize(device)) if on_gpu(device) else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


_PROBE_DATA = np.ones(4096, np.float32)  # 16 kB: in the first-level cache


def host_probe() -> float:
    """Milliseconds of a fixed loop of float32 vector multiply-adds over 16 kB (1 M of
    them, ~0.3 ms on a quiet 2-core AMD EPYC host): it reads no memory beyond the core's
    own caches, so its time moves with the clock rate and with other work on the same
    core (another tenant's hyperthread, or the hypervisor taking the CPU away); on that
    host the clock held (a loop of dependent multiply-adds kept its time within 7%) while
    this loop's varied 1.0-1.6x. Compiled (:mod:`anyseg._loops`), or read from numba's
    cache, on its first call."""
    from anyseg import _loops

    start = time.perf_counter()
    _loops.multiply_adds(_PROBE_DATA, _PROBE_DATA, 250)
    return 1e3 * (time.perf_counter() - start)


def _pause(seconds: float, probes: list[float]) -> None:
    """Idle ``seconds``, with :func:`host_probe` timed in their middle and added to
    ``probes`` (none for no pause)."""
    if seconds <= 0:
        return
    end = time.perf_counter() + seconds
    time.sleep(seconds / 2)
    probes.append(host_probe())
    time.sleep(max(0.0, end - time.perf_counter()))


def click_points(image_hw: tuple[int, int]) -> list[list[float]]:
    """:data:`CLICKS` in pixels of an image of size ``image_hw``."""
    h, w = image_hw
    return [[fx * w, fy * h] for fx, fy in CLICKS]


def load_image(path: str) -> np.ndarray:
    """An image file as an ``(H, W, 3)`` uint8 RGB array."""
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def load_model(model: str, weights: str):
    """anyseg's model of preset ``model`` with the weights of an official-format file."""
    import torch

    from anyseg.models import build_model

    sd = torch.load(weights, map_location="cpu", weights_only=True)
    net = build_model(family_of(model), model)
    net.load_state_dict(sd.get("model", sd) if family_of(model) == "sam2" else sd)
    return net.eval().requires_grad_(False)


def compile_parts(net, measure: str) -> None:
    """``torch.compile`` the parts of ``net`` that the official code compiles for
    ``measure``, in its modes: the image encoder (SAM 2's ``compile_image_encoder``); for
    video also the tracker's memory encoder, memory attention (shapes dynamic: the number
    of memories varies), prompt encoder and mask decoder (its ``vos_optimized`` mode)."""
    import torch

    names = ["image_encoder"]
    if measure == "video":
        names += ["memory_encoder", "memory_attention", "sam_prompt_encoder", "sam_mask_decoder"]
    for name in names:
        part = getattr(net, name)
        part.forward = torch.compile(part.forward, mode="max-autotune", dynamic=name == "memory_attention")


Step = Callable[[], float]
Check = Callable[[], dict]


def prepare(task: Task, net=None) -> tuple[Step, Check]:
    """Set ``task`` up on anyseg's side (``net``: an already built model, else loaded from
    ``task.weights``; moved to ``task.device``), warm-up included. Returns ``(step,
    check)``: ``step()`` makes one timed call and returns its sample (encode and
    everything: seconds; click: milliseconds; video: seconds of one frame step; memory: the
    peak resident MiB after one encode and one click, on a GPU the peak MiB allocated
    there); ``check()`` describes the outputs so far, to compare with the official side's."""
    from anyseg.predictors.image import ImagePredictor

    net = (load_model(task.model, task.weights) if net is None else net).to(task.device)
    if task.compiled:
        compile_parts(net, task.measure)

    def timed(fn: Callable[[], object]) -> float:
        return seconds(fn, task.device)

    if task.measure in ("encode", "click", "refine", "memory"):
        image = load_image(task.image)
        pred = ImagePredictor(net, precision=task.precision)
        clicks = task.clicks or click_points(image.shape[:2])
        for _ in range(task.warmup if task.measure == "encode" else 1):
            pred.set_image(image)
        if task.measure == "encode":
            return lambda: timed(lambda: pred.set_image(image)), dict
        first = pred.predict(points=[clicks[0]], labels=[1], multimask=True)
        if task.measure == "memory":
            return (lambda: peak_gpu_mib(task.device)) if on_gpu(task.device) else peak_rss_mib, dict
        if task.measure == "refine":
            mask_input = first.logits[first.best][None]
            pairs = itertools.cycle(zip(clicks, clicks[1:] + clicks[:1]))

            def refine():
                return pred.predict(points=list(next(pairs)), labels=[1, 1], mask_input=mask_input, multimask=False)

            refined = refine()
            for _ in range(task.warmup):
                refine()
            return lambda: 1000 * timed(refine), lambda: {"scores": refined.scores.tolist()}
        for _ in range(task.warmup):
            pred.predict(points=[clicks[0]], labels=[1], multimask=True)
        cycle = itertools.cycle(clicks)
        return (lambda: 1000 * timed(lambda: pred.predict(points=[next(cycle)], labels=[1], multimask=True)),
                lambda: {"scores": first.scores.tolist()})
    if task.measure == "everything":
        from anyseg.predictors.everything import MaskGenerator

        image = load_image(task.everything_image)
        generator = MaskGenerator(net, precision=task.precision)
        generator.predictor.set_image(image)  # warm-up: the encoder's first call is slower
        counts: list[int] = []
        return lambda: timed(lambda: counts.append(len(generator.generate(image)))), lambda: {"masks": counts[-1]}
    if task.measure == "video":
        from anyseg.predictors.video import VideoPredictor

        session = VideoPredictor(net, precision=task.precision).open(task.frames_dir)
        for prompt in task.prompts[: task.objects]:
            session.add_prompt(0, prompt["obj_id"], points=prompt.get("points"),
                               labels=prompt.get("labels"), box=prompt.get("box"))
        frames = session.propagate(max_frames=task.frames)
        last = [next(frames)]  # the prompted frame, segmented already

        def step() -> float:
            return timed(lambda: last.__setitem__(0, next(frames)))

        return step, lambda: {"areas": [int(m.sum()) for m in last[0].masks]}
    raise ValueError(f"unknown measure {task.measure!r}")


MARK = "@@anyseg-bench "
"""Prefix of the protocol's reply lines (other output of a measuring process is ignored)."""


def reply(message: dict) -> None:
    """Send one protocol message to the harness."""
    print(MARK + json.dumps(message), flush=True)


def child_main(task_json: str) -> None:
    """A measuring process: set the task up, reply ``{"ready": true}``; then answer each
    ``step`` line on stdin with ``{"sample": x}``; at ``end`` (or end of input) reply with
    the output check, the peak resident memory, the torch version and thread count."""
    import torch

    task = Task(**json.loads(task_json))
    torch.set_num_threads(task.threads)
    step, check = prepare(task)
    reply({"ready": True})
    for line in sys.stdin:
        if line.strip() != "step":
            break
        reply({"sample": step()})
    reply({"check": check(), "peak_rss_mib": peak_rss_mib(), "torch": torch.__version__,
           "threads": torch.get_num_threads()})


# -------------------------------------------------------------------- orchestration


@dataclass
class Side:
    """How to start one side's measuring process: the interpreter and, for the official
    side, the driver script and the official source tree."""

    name: str
    python: str
    script: list[str]
    source: str = ""


OURS = Side("anyseg", sys.executable, ["-m", "anyseg.bench"])


def official_side(python: str, source: str) -> Side:
    """The official predictors, run by ``benchmarks/official_driver.py`` in ``python``."""
    return Side("official", python, [str(OFFICIAL_DRIVER)], str(Path(source).resolve()))


class WorkerError(RuntimeError):
    """A measuring process failed; the message ends with its last lines of stderr."""


class Worker:
    """One measuring process, set up and waiting for ``step`` commands."""

    def __init__(self, side: Side, task: Task, log_dir: Path) -> None:
        threads = str(task.threads)
        env = {**os.environ, **_process.in_force, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
               "TQDM_DISABLE": "1",
               "PYTHONPATH": str(REPO / "src") if side is OURS else ""}
        if side is not OURS:  # anyseg places its own threads (kernels.bound_threads)
            env |= kernels.placement_env(task.threads)
        task_json = json.dumps({**asdict(task), "source": side.source})
        self.side = side
        self.stderr = (log_dir / f"{side.name}.stderr").open("w+")
        self.proc = subprocess.Popen([side.python, *side.script, task_json], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        self._read()

    def step(self) -> float:
        """One timed call; its sample."""
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self._read()["sample"]

    def finish(self) -> dict:
        """End the process; its final report (check, peak memory, torch version)."""
        self.proc.stdin.write("end\n")
        self.proc.stdin.flush()
        final = self._read()
        self.close()
        return final

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        self.proc.wait()
        self.stderr.seek(0)
        tail = " | ".join(self.stderr.read().strip().splitlines()[-3:])
        self.close()
        raise WorkerError(f"exit code {self.proc.returncode}: {tail}")


def random_weights(model: str, path: Path, seed: int = 0) -> Path:
    """Save random weights of ``model`` in the official checkpoint format (SAM 2:
    ``{"model": state_dict}``, SAM 1: the bare state dict): the module's own
    initialisation plus N(0, 0.02) noise on every float tensor (none is degenerate)."""
    import torch

    from anyseg.models import build_model

    torch.manual_seed(seed)
    sd = build_model(family_of(model), model).state_dict()
    sd = {k: v + 0.02 * torch.randn_like(v) if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"model": sd} if family_of(model) == "sam2" else sd, path)
    return path


def extract_frames(video: str, count: int, folder: Path) -> Path:
    """Write the first ``count`` frames of ``video`` as ``00000.jpg`` ... into ``folder``
    (the layout the official video predictor reads; both sides track the same JPEGs)."""
    from PIL import Image

    from anyseg.io.video import open_video

    folder.mkdir(parents=True, exist_ok=True)
    with open_video(video) as source:
        for index, frame in source:
            if index >= count:
                break
            Image.fromarray(frame).save(folder / f"{index:05d}.jpg", quality=95)
    return folder


@dataclass
class Config:
    """What ``anyseg bench`` runs. ``official`` maps ``sam2`` / ``sam1`` / ``mobilesam``
    to an official source tree; ``official_python`` runs them."""

    models: list[str] = field(default_factory=lambda: list(MODELS))
    measures: list[str] = field(default_factory=lambda: list(MEASURES))
    repeat: int = 3
    iters: int = 3
    click_iters: int = 20
    frames: int = 15
    threads: int = field(default_factory=_process.usable_cpus)
    image: str = str(DEFAULT_IMAGE)
    everything_image: str = str(DEFAULT_EVERYTHING_IMAGE)
    video: str = str(DEFAULT_VIDEO)
    official: dict[str, str] = field(default_factory=dict)
    official_python: str = ""
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    pause: float = 0.1  # idle seconds before each timed call
    device: str = "cpu"  # where both sides compute
    compiled: bool = False  # see Task


def _metrics(measures: list[str]) -> list[tuple[str, str, int]]:
    """``(row name, measure, objects)`` for each requested measure (video: one row per
    object count)."""
    rows = []
    for m in measures:
        if m == "video":
            rows += [(f"video_{k}obj", "video", k) for k in VIDEO_OBJECTS]
        else:
            rows.append((m, m, 1))
    return rows


def run(cfg: Config, log: Callable[[str], None] = print) -> dict:
    """Measure every model x measure of ``cfg`` (side by side where an official tree is
    given); returns the report that :func:`write_report` saves.

    For each row and repeat, both sides' processes are set up, then their timed calls
    alternate one by one (who goes first alternates too), so each pair of samples sees
    the same machine load; the ratio is the median over pairs of official / anyseg."""
    for m in cfg.measures:
        if m not in MEASURES:
            raise ValueError(f"unknown measure {m!r}; known: {', '.join(MEASURES)}")
    if cfg.official and not cfg.official_python:
        raise ValueError("an official source tree needs an official python")
    official = {k: official_side(cfg.official_python, v) for k, v in cfg.official.items()}
    host_probe()  # compiled now, not in the first pause
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="anyseg-bench-") as tmp:
        tmp_path = Path(tmp)
        frames_dir = ""
        if "video" in cfg.measures and any(family_of(m) == "sam2" for m in cfg.models):
            frames_dir = str(extract_frames(cfg.video, cfg.frames + 1, tmp_path / "frames"))
        clicks = click_points(load_image(cfg.image).shape[:2])
        plan = []
        for model, precision in itertools.product(cfg.models, cfg.precisions):
            weights = None
            for name, measure_name, objects in _metrics(cfg.measures):
                row = {"model": model, "metric": name, "precision": precision, "unit": UNITS[measure_name],
                       "anyseg": None, "official": None, "ratios": [], "ratio": None, "note": "",
                       "host_probe_ms": []}
                rows.append(row)
                reason = unavailable(model, measure_name)
                if reason:
                    row["note"] = reason
                    log(f"skip {model} {name}: {reason}")
                    continue
                if weights is None:  # the same file for every precision
                    weights = random_weights(model, tmp_path / f"{model}.pt")
                clicks_or_frames = {"video": cfg.frames, "click": cfg.click_iters, "refine": cfg.click_iters}
                iters = clicks_or_frames.get(measure_name, cfg.iters)
                if measure_name in ("everything", "memory"):
                    iters = 1
                task = Task(model=model, measure=measure_name, weights=str(weights), threads=cfg.threads,
                            image=cfg.image, everything_image=cfg.everything_image, frames_dir=frames_dir,
                            frames=cfg.frames, objects=objects, iters=iters, clicks=clicks, precision=precision,
                            device=cfg.device, compiled=cfg.compiled)
                sides = [OURS]
                if official_tree_key(model) in official:
                    sides.append(official[official_tree_key(model)])
                else:
                    row["note"] = "no official tree given"
                plan.append((row, task, sides))
        for r in range(cfg.repeat):
            for row, task, sides in plan:
                _run_pairs(row, task, sides if r % 2 == 0 else sides[::-1], tmp_path, cfg.pause)
                shown = ", ".join(f"{side}: {_fmt(_value(row[side], row['unit']), row['unit'])}"
                                  for side in ("anyseg", "official") if row[side])
                log(f"[{r + 1}/{cfg.repeat}] {row['model']} {row['metric']} ({row['precision']}): {shown}")
    quiet = min((p for row in rows for p in row["host_probe_ms"]), default=None)
    for row in rows:
        if row["ratios"]:
            row["ratio"] = statistics.median(row["ratios"])
        if row["host_probe_ms"]:
            row["host_load"] = statistics.median(row["host_probe_ms"]) / quiet
        for side in ("anyseg", "official"):
            if row[side]:
                row[side]["value"] = _value(row[side], row["unit"])
        if row["anyseg"] and row["official"]:
            row["check"] = compare_checks(row["anyseg"].get("check"), row["official"].get("check"))
    return {"machine": machine(cfg.device) | {"torch_threads": cfg.threads},
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "settings": {"repeat": cfg.repeat, "threads": cfg.threads, "precisions": cfg.precisions,
                         "pause": cfg.pause, "host_probe_fastest_ms": quiet,
                         "placement": kernels.placement_env(cfg.threads),
                         "device": cfg.device, "compiled": cfg.compiled,
                         "image": Path(cfg.image).name,
                         "everything_image": Path(cfg.everything_image).name,
                         "video": Path(cfg.video).name, "video_frames": cfg.frames,
                         "official": {k: str(v) for k, v in cfg.official.items()}},
            "results": rows}


def _run_pairs(row: dict, task: Task, sides: list[Side], tmp_path: Path, pause: float) -> None:
    """One repeat of one row: start both sides, alternate their timed calls (each after
    ``pause`` idle seconds, :func:`_pause`), and add samples, pair ratios, peak memory,
    checks, errors and host probes to ``row``."""
    entries = {}
    for side in sides:
        entries[side.name] = row[side.name] = row[side.name] or {"samples": [], "peak_rss_mib": [], "errors": []}
    workers = []
    for side in sides:
        try:
            workers.append(Worker(side, task, tmp_path))
        except WorkerError as exc:
            entries[side.name]["errors"].append(str(exc))
    try:
        for i in range(task.iters):
            got = {}
            for worker in workers if i % 2 == 0 else workers[::-1]:
                _pause(pause, row["host_probe_ms"])
                got[worker.side.name] = worker.step()
                entries[worker.side.name]["samples"].append(got[worker.side.name])
            if len(got) == 2 and got["anyseg"] > 0:
                row["ratios"].append(got["official"] / got["anyseg"])
        for worker in workers:
            final = worker.finish()
            entry = entries[worker.side.name]
            entry["peak_rss_mib"].append(round(final["peak_rss_mib"], 1))
            entry.update(torch=final["torch"], check=final["check"])
    except WorkerError as exc:
        entries[worker.side.name]["errors"].append(str(exc))
    finally:
        for worker in workers:
            worker.close()


def _value(entry: dict, unit: str) -> float | None:
    """A side's headline number: the median sample (video: frames per second from the
    median frame step)."""
    if not entry["samples"]:
        return None
    median = statistics.median(entry["samples"])
    return 1 / median if unit == "fps" else median


def compare_checks(ours: dict | None, theirs: dict | None) -> str:
    """A short statement of whether both sides computed the same outputs: predicted IoU
    scores of the first click (or refinement), mask areas on the last tracked frame, or mask
    counts."""
    if not ours or not theirs:
        return ""
    if "scores" in ours:
        diff = float(np.abs(np.subtract(ours["scores"], theirs["scores"])).max())
        return f"scores max diff {diff:.1e}"
    if "areas" in ours:
        a, b = np.asarray(ours["areas"], float), np.asarray(theirs["areas"], float)
        return f"mask areas max rel diff {float((np.abs(a - b) / np.maximum(b, 1)).max()):.1%}"
    if "masks" in ours:
        return f"masks {ours['masks']} vs {theirs['masks']}"
    return ""


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    return f"{value:.3g} {unit}"


def markdown(report: dict) -> str:
    """The report as a Markdown table with the machine named above it."""
    m = report["machine"]
    official_torch = {r["official"]["torch"] for r in report["results"] if r["official"] and "torch" in r["official"]}
    settings = (["THP_MEM_ALLOC_ENABLE=1"] if m.get("thp_alloc") == "1" else []) + [
        f"{name}={value}" for name, value in m.get("malloc", {}).items()] + (
        [f"GLIBC_TUNABLES={m['glibc_tunables']}"] if m.get("glibc_tunables") else [])
    if report["settings"].get("placement"):  # anyseg's own (kernels.bound_threads), the official side's by variables
        settings.append("threads placed one per CPU (official side: "
                        + " ".join(f"{k}={v}" for k, v in report["settings"]["placement"].items()) + ")")
    gpu_run = "gpu" in m
    official_precision = ("under autocast in anyseg's type, fp32 for fp32" if gpu_run else "in fp32")
    compiled = "; compiled (torch.compile, max-autotune) as the official code compiles: the image encoders, and " \
               "for video the official vos_optimized mode's parts on both sides" if report["settings"].get("compiled") else ""
    lines = [
        (f"GPU: {m['gpu']} ({report['settings']['device']}); host: " if gpu_run else "Machine: ")
        + f"{m['cpu']}, {m['cores']} cores; torch {m['torch']}, {m['torch_threads']} threads"
        + (f"; official side: torch {', '.join(sorted(official_torch))}" if official_torch else "")
        + (f"; {'both sides: ' if official_torch else ''}{', '.join(settings)}" if settings else "")
        + f". {report['date']}; {report['settings']['repeat']} repeats, calls alternating between the sides"
        + f" ({report['settings'].get('pause', 0)} s idle before each); "
        "medians. Ratio: the median over pairs of official time / anyseg time (memory: official / anyseg). "
        "Host load: a fixed vector loop's median time in the row's pauses over its fastest in the run "
        "(1.00: no other tenant's work on the cores; see anyseg.bench). "
        f"Precision: anyseg's (the official side computes {official_precision}){compiled}.",
        "",
        "| model | measure | precision | anyseg | official | ratio | host load | peak RSS anyseg / official "
        "| check / note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        ours, theirs = r["anyseg"] or {}, r["official"] or {}
        rss = " / ".join(f"{max(e['peak_rss_mib']):.0f}" if e.get("peak_rss_mib") else "-" for e in (ours, theirs))
        notes = [r.get("check", ""), r["note"]] + [f"{s}: {e}" for s, d in (("anyseg", ours), ("official", theirs))
                                                   for e in d.get("errors", [])[:1]]
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        load = f"{r['host_load']:.2f}" if r.get("host_load") else "-"
        lines.append(f"| {r['model']} | {r['metric']} | {r.get('precision', 'fp32')} | {_fmt(ours.get('value'), r['unit'])} | "
                     f"{_fmt(theirs.get('value'), r['unit'])} | {ratio} | {load} | {rss} MiB | "
                     f"{'; '.join(n for n in notes if n).replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    """Write ``bench.json`` and ``bench.md`` into ``out``; returns both paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "bench.json", out / "bench.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path


# ------------------------------------------------------------------------ profiling


def module_times(net, fn: Callable[[], object]) -> dict[str, float]:
    """Wall seconds that one call of ``fn`` spends in the forward of each top-level
    submodule of ``net``, plus ``"other"`` (pre/post-processing and glue) and ``"total"``."""
    spent: dict[str, float] = {}
    started: dict[str, float] = {}

    def enter(name: str):
        return lambda module, args: started.__setitem__(name, time.perf_counter())

    def leave(name: str):
        return lambda module, args, output: spent.__setitem__(
            name, spent.get(name, 0.0) + time.perf_counter() - started[name])

    handles = []
    for name, child in net.named_children():
        handles += [child.register_forward_pre_hook(enter(name)), child.register_forward_hook(leave(name))]
    try:
        start = time.perf_counter()
        fn()
        total = time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
    return {**spent, "other": total - sum(spent.values()), "total": total}


def profile(model: str, out: Path, image: str = str(DEFAULT_IMAGE), video: str = str(DEFAULT_VIDEO),
            threads: int | None = None, rows: int = 25, precision: str = "fp32") -> list[Path]:
    """Where anyseg's time goes in ``precision``: the image encode, one click (cached
    embedding) and, for SAM 2, one video propagation step with one object, after warm-up. For
    each, the wall time per top-level module (:func:`module_times`) of one call and the
    torch.profiler table (top operators by self CPU time) of the next, written as
    ``profile_<model>_<what>.txt`` (``profile_<model>_<precision>_<what>.txt`` but in fp32)
    into ``out``."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from anyseg.predictors.image import ImagePredictor
    from anyseg.predictors.video import VideoPredictor

    if threads:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="anyseg-profile-") as tmp:
        net = load_model(model, str(random_weights(model, Path(tmp) / "weights.pt")))

        def record(what: str, fn: Callable[[], object]) -> None:
            times = module_times(net, fn)
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                fn()
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
            modules = "\n".join(f"  {name:<24} {seconds:8.3f} s" for name, seconds in times.items())
            path = out / f"profile_{model}{'' if precision == 'fp32' else '_' + precision}_{what}.txt"
            path.write_text(f"{model} {what} ({precision}), torch {torch.__version__}, "
                            f"{torch.get_num_threads()} threads\n\n"
                            f"wall time per top-level module (one call):\n{modules}\n\n"
                            f"torch.profiler, the next call:\n{table}\n")
            written.append(path)

        pred = ImagePredictor(net, precision=precision)
        picture = load_image(image)
        pred.set_image(picture)
        record("encode", lambda: pred.set_image(picture))
        click = click_points(picture.shape[:2])[0]
        for _ in range(3):  # warm-up
            pred.predict(points=[click], labels=[1], multimask=True)
        record("click", lambda: pred.predict(points=[click], labels=[1], multimask=True))
        if family_of(model) == "sam2":
            frames = extract_frames(video, 7, Path(tmp) / "frames")
            with VideoPredictor(net, precision=precision).open(frames) as session:
                first = VIDEO_PROMPTS[0]
                session.add_prompt(0, first["obj_id"], points=first["points"], labels=first["labels"])
                steps = session.propagate()
                for _ in range(4):  # the prompted frame, then warm-up steps
                    next(steps)
                record("video_step", lambda: next(steps))
    return written


if __name__ == "__main__":
    child_main(sys.argv[1])
