"""Accuracy cost of the opt-in reduced precisions, measured against the official fp32
outputs in ``../shared/fixtures`` (the SAM 2.1-tiny and MobileSAM image cases, and the
SAM 2.1-tiny video replay).

Usage::

    python benchmarks/precision_accuracy.py [--precisions fp32,bf16,int8] [--no-video] [--merge]

``--merge`` re-measures into the existing ``results/precision_accuracy.json``: the entries
measured replace theirs, the others (e.g. the video replays, ~15 min) are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import RESULTS, write_results  # noqa: E402
from parity import fixture_image, fixture_index, image_cases, mask_iou, run_image_case, unpack_masks  # noqa: E402

from anyseg import ImagePredictor, load_model  # noqa: E402
from anyseg.predictors.video import VideoPredictor  # noqa: E402

FIXTURES = HERE.parents[1] / "shared" / "fixtures"
IMAGE_KEYS = ("sam2.1_hiera_tiny", "mobile_sam_vit_t")
VIDEO_KEY = "sam2.1_hiera_tiny"


def image_accuracy(model, key: str, precision: str) -> dict:
    outputs = np.load(FIXTURES / fixture_index(FIXTURES)[key]["image_outputs"])
    logit_diff, iou_diff, ious, encode_s = 0.0, 0.0, [], []
    preds = {}
    for image, case in image_cases(FIXTURES, key):
        if image not in preds:
            preds[image] = ImagePredictor(model, precision=precision)
            t = time.perf_counter()
            preds[image].set_image(fixture_image(FIXTURES, image))
            encode_s.append(time.perf_counter() - t)
        prefix = f"{image}/{case['name']}"
        out = run_image_case(preds[image], case, outputs, image)
        logit_diff = max(logit_diff, float(np.abs(out.logits - outputs[f"{prefix}/low_res_logits"]).max()))
        iou_diff = max(iou_diff, float(np.abs(out.scores - outputs[f"{prefix}/iou"]).max()))
        ref = unpack_masks(outputs, prefix).reshape(-1, *out.masks.shape[-2:])
        ious += [mask_iou(a, b) for a, b in zip(out.masks.reshape(ref.shape), ref)]
    return {"max_low_res_logit_diff": logit_diff, "max_iou_pred_diff": iou_diff,
            "min_mask_iou": min(ious), "mean_mask_iou": float(np.mean(ious)), "encode_s": encode_s}


def video_accuracy(model, precision: str) -> dict:
    video = fixture_index(FIXTURES)[VIDEO_KEY]["video"]
    ref = np.load(FIXTURES / video["outputs"])
    session = VideoPredictor(model, fill_hole_area=0, precision=precision).open(FIXTURES / video["frames_dir"])
    h, w = video["video_hw"]
    ious, sign_agree, t0 = [], [], time.perf_counter()
    for a in video["actions"]:
        if a["op"] == "points":
            session.add_prompt(a["frame"], a["obj_id"], points=a["points"], labels=a["labels"],
                               clear=a.get("clear_old_points", True))
        elif a["op"] == "box":
            session.add_prompt(a["frame"], a["obj_id"], box=a["box"])
        elif a["op"] == "mask":
            m = np.zeros((h, w), bool)
            if a["mask_box"] is not None:
                x0, y0, x1, y1 = (int(v) for v in a["mask_box"])
                m[y0:y1, x0:x1] = True
            session.add_prompt(a["frame"], a["obj_id"], mask=m)
        else:
            for r in session.propagate(start=a.get("start_frame"), reverse=a["reverse"]):
                prefix = f"video/{a['tag']}/{r.frame}"
                ious += [mask_iou(x, y) for x, y in zip(r.masks, unpack_masks(ref, prefix))]
                sign_agree += list((r.object_scores > 0) == (ref[f"{prefix}/object_score_logits"] > 0))
    return {"mean_mask_iou": float(np.mean(ious)), "min_mask_iou": float(np.min(ious)),
            "object_score_sign_agreement": float(np.mean(sign_agree)), "seconds": time.perf_counter() - t0}


def fixture_model(key: str):
    return load_model(checkpoint=FIXTURES / fixture_index(FIXTURES)[key]["checkpoint"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--precisions", default="fp32,bf16,int8")
    ap.add_argument("--no-video", action="store_true")
    ap.add_argument("--merge", action="store_true", help="keep the existing results not re-measured")
    args = ap.parse_args()
    models = {key: fixture_model(key) for key in IMAGE_KEYS}
    existing = RESULTS / "precision_accuracy.json"
    results = json.loads(existing.read_text())["results"] if args.merge and existing.exists() else {}
    for precision in args.precisions.split(","):
        r = {f"image_{key}": image_accuracy(models[key], key, precision) for key in IMAGE_KEYS}
        if not args.no_video:
            r[f"video_{VIDEO_KEY}"] = video_accuracy(models[VIDEO_KEY], precision)
        results[precision] = {**results.get(precision, {}), **r}
        print(precision, r, flush=True)
    print("written", write_results("precision_accuracy", {"results": results}))


if __name__ == "__main__":
    main()
