"""Image encode time and click-to-mask latency (cached embedding), per model.

Weights are random (speed does not depend on their values), built from the same
presets as the official checkpoints. Usage::

    python benchmarks/image_predictor.py [--presets sam2.1_hiera_t,...] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timeit, write_results  # noqa: E402

from anyseg import ImagePredictor  # noqa: E402
from anyseg.models import build_model  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "samples" / "images" / "truck.jpg"
DEFAULT = "sam2.1_hiera_t,sam2.1_hiera_s,sam2.1_hiera_b+,sam2.1_hiera_l"


def family_of(preset: str) -> str:
    return "sam2" if preset.startswith("sam2") else "sam"


def bench(preset: str, image: np.ndarray, repeat: int, clicks: int) -> dict:
    torch.manual_seed(0)
    model = build_model(family_of(preset), preset).eval().requires_grad_(False)
    pred = ImagePredictor(model)
    encode = timeit(lambda: pred.set_image(image), repeat=repeat)
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    pts = rng.uniform([0, 0], [w, h], size=(clicks, 2))
    it = iter(range(10**9))

    def click():
        i = next(it) % clicks
        pred.predict(points=pts[i : i + 1], labels=[1], multimask=True)

    latency = timeit(click, repeat=clicks, warmup=2)
    return {"encode": encode, "click_to_mask": latency, "image_hw": [h, w]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--image", default=str(SAMPLE))
    args = ap.parse_args()
    image = np.asarray(Image.open(args.image).convert("RGB"))
    results = {}
    for preset in args.presets.split(","):
        r = bench(preset, image, args.repeat, args.clicks)
        results[preset] = r
        print(f"{preset:<18} encode {r['encode']['median_s']:.2f} s   click-to-mask "
              f"{1000 * r['click_to_mask']['median_s']:.1f} ms", flush=True)
    print("written", write_results("image_predictor", {"image": Path(args.image).name, "results": results}))


if __name__ == "__main__":
    main()
