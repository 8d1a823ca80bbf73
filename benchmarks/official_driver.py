"""Time the official predictors on one benchmark task (the official side of ``anyseg bench``).

Run by the python of an environment that has torch and torchvision (plus hydra-core,
iopath and omegaconf for SAM 2, timm for MobileSAM), never by anyseg's: ::

    OFFICIAL_PYTHON benchmarks/official_driver.py TASK_JSON

``TASK_JSON`` is a task of :class:`anyseg.bench.Task`. Its ``source`` is the root of an
official source tree (facebookresearch/sam2, facebookresearch/segment-anything or
ChaoningZhang/MobileSAM): it is put on ``sys.path`` and imported from there, nothing is
installed or compiled. The model is built by the official builder from its official
config and loads ``weights`` (the official checkpoint format) strictly; then the task is
set up and stepped the way :func:`anyseg.bench.prepare` does it on anyseg's side, over
the same stdin/stdout line protocol (:func:`anyseg.bench.child_main`).

On a GPU ``device`` the model is moved there and everything runs under autocast in the
task's precision (none for fp32), as the official notebooks and ``sam2/benchmark.py`` do;
``compiled`` builds SAM 2 with ``compile_image_encoder`` (SAM 1's encoder is compiled the
same way here) and the video predictor in its ``vos_optimized`` mode (anyseg's side
compiles the same parts: ``anyseg.bench.compile_parts``).

This file imports nothing from anyseg: it must run in a separate environment.
"""

from __future__ import annotations

import itertools
import json
import resource
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
from PIL import Image

MARK = "@@anyseg-bench "  # prefix of protocol replies, as in anyseg.bench

# anyseg preset -> official SAM 2 config (inside the sam2 package)
SAM2_CONFIGS = {
    f"sam2{v}_hiera_{s}": f"configs/sam2{v}/sam2{v}_hiera_{s}.yaml"
    for v in ("", ".1") for s in ("t", "s", "b+", "l")
}
# anyseg preset -> (official package, its model-registry key)
SAM1_MODELS = {
    "sam_vit_b": ("segment_anything", "vit_b"),
    "sam_vit_l": ("segment_anything", "vit_l"),
    "sam_vit_h": ("segment_anything", "vit_h"),
    "mobile_sam_vit_t": ("mobile_sam", "vit_t"),
}


AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}  # on a GPU; fp32: none


def on_gpu(task: dict) -> bool:
    """Whether the task computes on a CUDA GPU."""
    return torch.device(task["device"]).type == "cuda"


def seconds(fn, task: dict) -> float:
    """Wall time of one call of ``fn``; on a GPU until the work it queued there is done."""
    sync = (lambda: torch.cuda.synchronize(task["device"])) if on_gpu(task) else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def load_image(path: str) -> np.ndarray:
    """An image file as an ``(H, W, 3)`` uint8 RGB array."""
    return np.asarray(Image.open(path).convert("RGB"))


def is_sam2(task: dict) -> bool:
    """Whether the task's model is a SAM 2 / 2.1 one."""
    return task["model"].startswith("sam2")


def build_image_model(task: dict):
    """The official model of ``task["model"]`` with the task's weights, in eval mode."""
    if is_sam2(task):
        from sam2.build_sam import build_sam2

        extra = ["++model.compile_image_encoder=True"] if task["compiled"] else []
        return build_sam2(SAM2_CONFIGS[task["model"]], task["weights"], device=task["device"],
                          hydra_overrides_extra=extra)
    package, key = SAM1_MODELS[task["model"]]
    registry = __import__(package).sam_model_registry
    model = registry[key](checkpoint=task["weights"]).to(task["device"]).eval()
    if task["compiled"]:  # in the mode of SAM 2's compile_image_encoder
        model.image_encoder.forward = torch.compile(model.image_encoder.forward, mode="max-autotune", dynamic=False)
    return model


def image_predictor(model, task: dict):
    """The official image predictor of the task's family around ``model``."""
    if is_sam2(task):
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        return SAM2ImagePredictor(model)
    return __import__(SAM1_MODELS[task["model"]][0]).SamPredictor(model)


def mask_generator(model, task: dict):
    """The official automatic mask generator at its defaults (32 x 32 grid, no crops)."""
    if is_sam2(task):
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        return SAM2AutomaticMaskGenerator(model)
    return __import__(SAM1_MODELS[task["model"]][0]).SamAutomaticMaskGenerator(model)


def prepare(task: dict):
    """Set the task up on the official predictors, warm-up included; returns ``(step,
    check)`` with the meaning of :func:`anyseg.bench.prepare`."""
    measure_name = task["measure"]
    if measure_name in ("encode", "click", "refine", "memory"):
        image = load_image(task["image"])
        pred = image_predictor(build_image_model(task), task)
        clicks = [np.asarray([c], dtype=np.float32) for c in task["clicks"]]
        label = np.asarray([1], dtype=np.int32)
        for _ in range(task["warmup"] if measure_name == "encode" else 1):
            pred.set_image(image)
        if measure_name == "encode":
            return lambda: seconds(lambda: pred.set_image(image), task), dict
        _, scores, logits = pred.predict(point_coords=clicks[0], point_labels=label, multimask_output=True)
        if measure_name == "memory":
            return (lambda: peak_gpu_mib(task)) if on_gpu(task) else peak_rss_mib, dict
        if measure_name == "refine":
            mask_input = logits[int(np.argmax(scores))][None]
            pairs = itertools.cycle(zip(clicks, clicks[1:] + clicks[:1]))
            labels = np.asarray([1, 1], dtype=np.int32)

            def refine():
                return pred.predict(point_coords=np.concatenate(next(pairs)), point_labels=labels,
                                    mask_input=mask_input, multimask_output=False)

            _, refined, _ = refine()
            for _ in range(task["warmup"]):
                refine()
            return lambda: 1000 * seconds(refine, task), lambda: {"scores": np.asarray(refined).tolist()}
        for _ in range(task["warmup"]):
            pred.predict(point_coords=clicks[0], point_labels=label, multimask_output=True)
        cycle = itertools.cycle(clicks)
        return (lambda: 1000 * seconds(lambda: pred.predict(point_coords=next(cycle), point_labels=label,
                                                           multimask_output=True), task),
                lambda: {"scores": np.asarray(scores).tolist()})
    if measure_name == "everything":
        image = load_image(task["everything_image"])
        generator = mask_generator(build_image_model(task), task)
        generator.predictor.set_image(image)  # warm-up, as on anyseg's side
        counts: list = []

        def step() -> float:
            return seconds(lambda: counts.append(len(generator.generate(image))), task)

        return step, lambda: {"masks": counts[-1]}
    if measure_name == "video":
        return prepare_video(task)
    raise ValueError(f"unknown measure {measure_name!r}")


def prepare_video(task: dict):
    """The official video predictor with the task's prompts on frame 0, propagation
    started; each step tracks one more frame."""
    from sam2.build_sam import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(SAM2_CONFIGS[task["model"]], task["weights"], device=task["device"],
                                           vos_optimized=task["compiled"])
    state = predictor.init_state(task["frames_dir"])
    for prompt in task["prompts"][: task["objects"]]:
        predictor.add_new_points_or_box(
            state, frame_idx=0, obj_id=prompt["obj_id"],
            points=None if "points" not in prompt else np.asarray(prompt["points"], dtype=np.float32),
            labels=None if "labels" not in prompt else np.asarray(prompt["labels"], dtype=np.int32),
            box=None if "box" not in prompt else np.asarray(prompt["box"], dtype=np.float32),
        )
    frames = predictor.propagate_in_video(state, max_frame_num_to_track=task["frames"])
    last = [next(frames)]  # the prompted frame, segmented already

    def step() -> float:
        return seconds(lambda: last.__setitem__(0, next(frames)), task)

    return step, lambda: {"areas": [int((m > 0).sum()) for m in last[0][2]]}


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux: ``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_gpu_mib(task: dict) -> float:
    """Peak memory that torch has allocated on the task's GPU so far."""
    return torch.cuda.max_memory_allocated(task["device"]) / 2**20


def reply(message: dict) -> None:
    """Send one protocol message to the harness (other output is ignored)."""
    print(MARK + json.dumps(message), flush=True)


def main() -> None:
    """The protocol of :func:`anyseg.bench.child_main`: set up, reply ready, answer each
    ``step`` line with a sample, end with the check, peak memory and torch version."""
    task = json.loads(sys.argv[1])
    sys.path.insert(0, task["source"])
    torch.set_num_threads(task["threads"])
    dtype = AUTOCAST.get(task["precision"]) if on_gpu(task) else None
    with torch.autocast("cuda", dtype=dtype) if dtype else nullcontext():
        serve(task)


def serve(task: dict) -> None:
    """Set ``task`` up and answer the harness until it ends the process."""
    step, check = prepare(task)
    reply({"ready": True})
    for line in sys.stdin:
        if line.strip() != "step":
            break
        reply({"sample": step()})
    reply({"check": check(), "peak_rss_mib": peak_rss_mib(), "torch": torch.__version__,
           "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
