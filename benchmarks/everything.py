"""Segment everything: seconds per image on CPU at the official default settings
(32 x 32 grid, 64 points per batch, no crops, the family's thresholds), per model.

Weights are random (built from the presets, PyTorch's default initialisation): the time of
the encoder and of the 1024 prompted decodes does not depend on them, but how many masks
pass the IoU / stability thresholds does, and with it the cost of upscaling, RLE encoding
and NMS. The mask counts are reported alongside; ``--keep-all`` switches the thresholds
and NMS off (every one of the 3072 masks is upscaled, encoded and kept): the upper bound of
that post-processing. Usage::

    python benchmarks/everything.py [--presets sam2.1_hiera_t,...] [--repeat 2] [--keep-all]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timeit, write_results  # noqa: E402

from anyseg.models import build_model  # noqa: E402
from anyseg.predictors.everything import MaskGenerator  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "samples" / "images" / "groceries.jpg"
DEFAULT = "sam2.1_hiera_t,mobile_sam_vit_t,sam_vit_b"


def family_of(preset: str) -> str:
    return "sam2" if preset.startswith("sam2") else "sam"


KEEP_ALL = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


def bench(preset: str, image: np.ndarray, repeat: int, keep_all: bool) -> dict:
    torch.manual_seed(0)
    model = build_model(family_of(preset), preset).eval().requires_grad_(False)
    gen = MaskGenerator(model, **(KEEP_ALL if keep_all else {}))  # else the official defaults of the family
    counts = []
    cpu = time.process_time()
    # no warm-up run: one call prompts the decoder 16 times, first-call overheads are noise
    timing = timeit(lambda: counts.append(len(gen.generate(image))), repeat=repeat, warmup=0)
    # CPU seconds (all threads) per image: less sensitive than wall time to other load
    cpu_s = (time.process_time() - cpu) / repeat
    t = time.perf_counter()
    gen.predictor.set_image(image)
    encode_s = time.perf_counter() - t
    return {
        "seconds_per_image": timing,
        "cpu_seconds_per_image": cpu_s,
        "encode_s": encode_s,
        "masks": counts[-1],
        "settings": {"points_per_side": 32, "points_per_batch": gen.points_per_batch,
                     "pred_iou_thresh": gen.pred_iou_thresh, "stability_score_thresh": gen.stability_score_thresh,
                     "box_nms_thresh": gen.box_nms_thresh, "crop_n_layers": gen.crop_n_layers},
        "image_hw": list(image.shape[:2]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--image", default=str(SAMPLE))
    ap.add_argument("--keep-all", action="store_true", help="thresholds and NMS off")
    args = ap.parse_args()
    image = np.asarray(Image.open(args.image).convert("RGB"))
    results = {}
    for preset in args.presets.split(","):
        r = bench(preset, image, args.repeat, args.keep_all)
        results[preset] = r
        print(f"{preset:<18} {r['seconds_per_image']['median_s']:.2f} s/image "
              f"({r['cpu_seconds_per_image']:.1f} CPU s; encode {r['encode_s']:.2f} s), {r['masks']} masks", flush=True)
    name = "everything_keep_all" if args.keep_all else "everything"
    print("written", write_results(name, {"image": Path(args.image).name, "results": results}))


if __name__ == "__main__":
    main()
