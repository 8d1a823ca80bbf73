"""anyseg on a GPU (or any torch device) against anyseg on the CPU in fp32, on the same
random weights and real inputs.

The CPU fp32 outputs are the official ones (the parity tests prove it on the fixtures), so
agreement here carries that parity over to the device without the fixtures, which a lent
GPU machine does not have. Per model and precision: for clicks, a box and a refinement on
an image, the largest low-res logit and predicted-IoU differences and the mask IoUs; for
SAM 2, the mask IoUs of every object on every frame of a short video track.

Usage::

    python benchmarks/device_parity.py --device cuda [--models sam2.1_hiera_t,mobile_sam_vit_t]
        [--precisions fp32,bf16] [--frames 8] [--out results/device_parity.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from anyseg import bench
from anyseg.loading import check_device
from anyseg.metrics.clicks import mask_iou
from anyseg.predictors.image import ImagePredictor
from anyseg.predictors.video import VideoPredictor


def image_prompts(image_hw: tuple[int, int]) -> list[dict]:
    """The bench's clicks (three masks each), a box (one mask) and, for a refinement, the
    first click with a second one (one mask, the first click's best logits as mask input:
    filled in by :func:`image_agreement`)."""
    h, w = image_hw
    clicks = bench.click_points(image_hw)
    box = [0.2 * w, 0.25 * h, 0.7 * w, 0.8 * h]
    return ([{"points": [c], "labels": [1], "multimask": True} for c in clicks]
            + [{"box": box, "multimask": False},
               {"points": clicks[:2], "labels": [1, 1], "multimask": False, "refine": True}])


def image_outputs(model, image: np.ndarray, precision: str) -> list:
    """``model``'s predictions (in ``precision``) for :func:`image_prompts` on ``image``
    ``(H, W, 3)`` uint8."""
    pred = ImagePredictor(model, precision=precision)
    pred.set_image(image)
    outs = []
    for prompt in image_prompts(image.shape[:2]):
        kwargs = {k: v for k, v in prompt.items() if k != "refine"}
        if prompt.get("refine"):
            kwargs["mask_input"] = outs[0].logits[outs[0].best][None]
        outs.append(pred.predict(**kwargs))
    return outs


def image_agreement(reference: list, outputs: list) -> dict:
    """Two :func:`image_outputs` compared."""
    logit_diff = max(float(np.abs(a.logits - b.logits).max()) for a, b in zip(reference, outputs))
    score_diff = max(float(np.abs(a.scores - b.scores).max()) for a, b in zip(reference, outputs))
    ious = [mask_iou(x, y) for a, b in zip(reference, outputs) for x, y in zip(a.masks, b.masks)]
    return {"prompts": len(outputs), "max_low_res_logit_diff": logit_diff, "max_iou_pred_diff": score_diff,
            "min_mask_iou": min(ious), "mean_mask_iou": float(np.mean(ious))}


def video_masks(model, frames_dir: Path, frames: int, precision: str, prompts=bench.VIDEO_PROMPTS) -> list:
    """``model`` (in ``precision``) tracking ``prompts`` (on frame 0; by default the bench's
    three objects on ``bedroom.mp4``) through ``frames`` more frames of ``frames_dir``: each
    frame's ``(objects, H, W)`` masks."""
    with VideoPredictor(model, precision=precision).open(frames_dir) as session:
        for prompt in prompts:
            session.add_prompt(0, prompt["obj_id"], points=prompt.get("points"), labels=prompt.get("labels"),
                               box=prompt.get("box"))
        return [r.masks for r in session.propagate(max_frames=frames)]


def video_agreement(reference: list, masks: list) -> dict:
    """Two :func:`video_masks` compared."""
    ious = [mask_iou(x, y) for a, b in zip(reference, masks) for x, y in zip(a, b)]
    return {"frames": len(masks), "objects": len(masks[0]), "min_mask_iou": min(ious),
            "mean_mask_iou": float(np.mean(ious))}


def measure(models: list[str], precisions: list[str], device: torch.device, image: np.ndarray,
            frames_dir: Path | None, frames: int, weights_dir: Path, log=print) -> list[dict]:
    """One row per model and precision: its image (and SAM 2: video) agreement with the
    model on the CPU in fp32."""
    rows = []
    for name in models:
        weights = str(bench.random_weights(name, weights_dir / f"{name}.pt"))
        reference = bench.load_model(name, weights)
        model = bench.load_model(name, weights).to(device)
        tracks = frames_dir is not None and bench.family_of(name) == "sam2"
        ref_image = image_outputs(reference, image, "fp32")
        ref_video = video_masks(reference, frames_dir, frames, "fp32") if tracks else None
        for precision in precisions:
            start = time.perf_counter()
            row = {"model": name, "precision": precision,
                   "image": image_agreement(ref_image, image_outputs(model, image, precision))}
            if tracks:
                row["video"] = video_agreement(ref_video, video_masks(model, frames_dir, frames, precision))
            log(f"{name} {precision} ({time.perf_counter() - start:.0f} s): {json.dumps(row)}")
            rows.append(row)
    return rows


def markdown(report: dict) -> str:
    """The report as a Markdown table, the device and inputs named above it."""
    lines = [f"{report['device']} ({report['device_name']}) against the CPU in fp32, torch {report['torch']}, "
             f"{report['date']}; random weights; {report['image']}, {report['video']}.", "",
             "| model | precision | max logit diff | max IoU-pred diff | image mask IoU min / mean | "
             "video mask IoU min / mean |", "|---|---|---|---|---|---|"]
    for r in report["results"]:
        i, v = r["image"], r.get("video")
        video = f"{v['min_mask_iou']:.4f} / {v['mean_mask_iou']:.4f} ({v['frames']} frames)" if v else "-"
        lines.append(f"| {r['model']} | {r['precision']} | {i['max_low_res_logit_diff']:.2e} | "
                     f"{i['max_iou_pred_diff']:.2e} | {i['min_mask_iou']:.4f} / {i['mean_mask_iou']:.4f} | {video} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", default="sam2.1_hiera_t,mobile_sam_vit_t")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--image", default=str(bench.DEFAULT_IMAGE))
    p.add_argument("--video", default=str(bench.DEFAULT_VIDEO), help="'' for no video track")
    p.add_argument("--frames", type=int, default=8, help="frames tracked after the prompted one")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "device_parity.json")
    args = p.parse_args(argv)
    device = check_device(args.device)
    with tempfile.TemporaryDirectory(prefix="anyseg-device-parity-") as tmp:
        frames_dir = bench.extract_frames(args.video, args.frames + 1, Path(tmp) / "frames") if args.video else None
        rows = measure(args.models.split(","), args.precisions.split(","), device, bench.load_image(args.image),
                       frames_dir, args.frames, Path(tmp))
    report = {"device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else bench.machine()["cpu"],
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"), "image": Path(args.image).name,
              "video": f"{Path(args.video).name}, {args.frames} frames" if args.video else "no video",
              "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    sys.exit(main())
