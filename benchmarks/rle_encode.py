"""COCO RLE encoding of real object masks: ``anyseg.io.masks.encode_rle`` against
pycocotools' ``encode`` (with the column-major copy it needs), and the studio's mask record
(encode plus area: ``rle_area`` of the runs against a sum over the pixels).

The masks are the SA-V annotation's in ``../shared/samples/annotations`` (every annotated
object in every annotated frame, decoded), at their own size and upscaled by nearest
neighbour to 1800 x 1200 (a photo's size, the click benchmark's), laid out by rows as
predictions are (and at their own size also by columns, as pycocotools decodes them); the
strings are checked equal to pycocotools'. Usage::

    python benchmarks/rle_encode.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from anyseg.io.masks import decode_rle, encode_rle, rle_area  # noqa: E402

ANNOTATION = Path(__file__).resolve().parents[2] / "shared" / "samples" / "annotations" / "sav_000001_manual.json"


def pycocotools_encode(mask: np.ndarray) -> bytes:
    return coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]


def pycocotools_record(mask: np.ndarray) -> tuple[bytes, int]:
    return pycocotools_encode(mask), int(mask.sum())


def anyseg_record(mask: np.ndarray) -> tuple[str, int]:
    rle = encode_rle(mask)
    return rle["counts"], rle_area(rle)


def per_mask_ms(fn, masks: list[np.ndarray], repeat: int) -> float:
    """The median over ``repeat`` passes of a pass's mean time per mask, in ms."""
    fn(masks[0])
    passes = []
    for _ in range(repeat):
        t = time.perf_counter()
        for m in masks:
            fn(m)
        passes.append((time.perf_counter() - t) / len(masks))
    return 1000 * statistics.median(passes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not ANNOTATION.is_file():
        sys.exit(f"{ANNOTATION} is missing: this benchmark reads the SA-V sample annotation")
    frames = json.loads(ANNOTATION.read_text())["masklet"]
    masks = [decode_rle(rle) for frame in frames for rle in frame if rle is not None]
    masks = [np.ascontiguousarray(m) for m in masks if m.any()]  # rows in memory, as predictions
    h, w = masks[0].shape
    big = [np.ascontiguousarray(m[np.arange(1200) * h // 1200][:, np.arange(1800) * w // 1800]) for m in masks[::5]]
    rows = {}
    for name, batch in ((f"{h}x{w}", masks), (f"{h}x{w} column-major", [np.asfortranarray(m) for m in masks]),
                        ("1200x1800", big)):
        for m in batch:
            assert encode_rle(m)["counts"].encode() == pycocotools_encode(m)
        rows[name] = {
            "masks": len(batch),
            "encode_ms": {"anyseg": per_mask_ms(encode_rle, batch, args.repeat),
                          "pycocotools": per_mask_ms(pycocotools_encode, batch, args.repeat)},
            "encode_and_area_ms": {"anyseg": per_mask_ms(anyseg_record, batch, args.repeat),
                                   "pycocotools": per_mask_ms(pycocotools_record, batch, args.repeat)},
        }
        r = rows[name]
        print(f"{name}: {len(batch)} masks; per mask, encode {r['encode_ms']['anyseg']:.3f} ms "
              f"(pycocotools {r['encode_ms']['pycocotools']:.3f}), encode + area "
              f"{r['encode_and_area_ms']['anyseg']:.3f} ms (pycocotools + sum {r['encode_and_area_ms']['pycocotools']:.3f})")
    print("written:", write_results("rle_encode", {"source": ANNOTATION.name, "repeat": args.repeat, "sizes": rows}))


if __name__ == "__main__":
    main()
