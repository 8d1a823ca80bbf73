"""``anyseg everything``: every mask of an image, or of each image in a folder.

Writes, under ``--out``:

- ``annotations.json``: one COCO-style file for the run (``images``, ``annotations`` with
  ``segmentation`` as COCO RLE, ``area``, ``bbox`` XYWH, ``predicted_iou``,
  ``stability_score``, ``point_coords``, ``crop_box``; one category, ``object``), loadable
  with ``pycocotools.coco.COCO``;
- ``overlays/NAME.png``: the image with every mask in its own colour;
- ``masks/NAME/0000.png`` ...: one greyscale PNG per mask (not with ``--rle``: the masks
  are then only in the JSON).

Masks of an image are numbered by decreasing area. In a folder, a file that cannot be read
as an image, or that the generator refuses, is reported and skipped; the others are
processed, the JSON lists the skipped files, and the exit code is 1. Nothing is written
when no image can be read. Every file is written atomically.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from anyseg.cli.common import add_model_args, load_model_from_args, output_folder

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
OVERLAY_CHUNK = 32  # masks decoded at once when drawing an overlay


def register(sub) -> None:
    p = sub.add_parser(
        "everything",
        help="segment everything in an image or a folder of images",
        description="Segment everything in IMAGE, or in every image of FOLDER, with a grid of "
        "clicks (the official automatic mask generator). Writes a COCO JSON, an overlay per "
        "image and, unless --rle, one PNG per mask.",
    )
    p.add_argument("input", metavar="IMAGE|FOLDER", help="an image file, or a folder of images (not recursive)")
    add_model_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--rle", action="store_true", help="masks only as COCO RLE in the JSON, no mask PNGs")
    p.add_argument("--points-per-side", type=int, default=32, metavar="N", help="click grid of N x N points (default 32)")
    p.add_argument("--points-per-batch", type=int, default=64, metavar="N", help="clicks decoded at once (default 64)")
    p.add_argument("--pred-iou-thresh", type=float, metavar="F",
                   help="keep masks whose predicted IoU exceeds F (default: SAM 0.88, SAM 2 0.8)")
    p.add_argument("--stability-score-thresh", type=float, default=0.95, metavar="F",
                   help="keep masks at least this stable (default 0.95)")
    p.add_argument("--crop-n-layers", type=int, default=0, metavar="N",
                   help="also segment N layers of overlapping crops (default 0)")
    p.add_argument("--min-mask-region-area", type=float, default=0, metavar="PX",
                   help="fill holes and drop islands smaller than this (default 0: off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from anyseg.errors import AnysegError, InvalidInputError
    from anyseg.io.export import write_json_atomic
    from anyseg.io.images import load_image, open_pil
    from anyseg.predictors.everything import MaskGenerator

    folder = Path(args.input).is_dir()
    readable, skipped = [], []
    for path in _input_files(Path(args.input)):
        try:
            with open_pil(path):  # the header only: catch non-images before loading the model
                readable.append(path)
        except AnysegError as exc:
            if not folder:
                raise
            skipped.append({"file": str(path), "reason": str(exc)})
            print(f"anyseg: skipping {path}: {exc}", file=sys.stderr)
    if not readable:
        raise InvalidInputError(f"none of the {len(skipped)} image files in {args.input} can be read")

    out = output_folder(args.out)
    model = load_model_from_args(args)
    generator = MaskGenerator(
        model,
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        crop_n_layers=args.crop_n_layers,
        min_mask_region_area=args.min_mask_region_area,
        output_mode="coco_rle",
        precision=args.precision,
    )
    names = _output_names(readable)
    images, annotations = [], []
    started = time.perf_counter()
    for path in tqdm(readable, desc="everything", unit="image", file=sys.stderr, disable=None):
        try:
            image = load_image(path)
            records = generator.generate(image)
        except AnysegError as exc:
            if not folder:
                raise
            skipped.append({"file": str(path), "reason": str(exc)})
            tqdm.write(f"anyseg: skipping {path}: {exc}", file=sys.stderr)
            continue
        records.sort(key=lambda r: -r["area"])
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": str(path), "height": image.shape[0], "width": image.shape[1],
                       "overlay": f"overlays/{names[path]}.png"})
        mask_dir = None if args.rle else f"masks/{names[path]}"
        _write_image_outputs(out, image, records, names[path], mask_dir)
        for k, rec in enumerate(records):
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0, **rec}
            if mask_dir is not None:
                ann["mask_file"] = f"{mask_dir}/{k:04d}.png"
            annotations.append(ann)
    if not images:
        raise InvalidInputError(f"no image of {args.input} could be segmented (see the messages above)")

    write_json_atomic(out / "annotations.json", {
        "info": {
            "description": "anyseg everything",
            "model": args.model or str(args.checkpoint),
            "precision": args.precision,
            "settings": {k: getattr(generator, k) for k in (
                "pred_iou_thresh", "stability_score_thresh", "crop_n_layers", "min_mask_region_area")}
            | {"points_per_side": args.points_per_side, "points_per_batch": args.points_per_batch},
            "seconds": round(time.perf_counter() - started, 3),
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object"}],
        "skipped": skipped,
    })
    print(f"{len(annotations)} masks in {len(images)} image(s) -> {out / 'annotations.json'}")
    if skipped:
        print(f"anyseg: {len(skipped)} file(s) skipped (listed under 'skipped' in the JSON)", file=sys.stderr)
        return 1
    return 0


def _input_files(path: Path) -> list[Path]:
    """The image to process, or the image files of a folder (by suffix, sorted)."""
    from anyseg.errors import InvalidInputError

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InvalidInputError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file or folder")
    return [path]


def _output_names(paths: list[Path]) -> dict[Path, str]:
    """A distinct output name per image: its stem, or stem_suffix where stems collide."""
    stems = [p.stem for p in paths]
    return {p: p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix.lstrip('.')}" for p in paths}


def _write_image_outputs(out: Path, image, records: list[dict], name: str, mask_dir: str | None) -> None:
    """The overlay (every mask in its own colour, larger ones underneath) and the mask PNGs."""
    import numpy as np

    from anyseg.io.export import overlay, save_mask_png, save_rgb_png
    from anyseg.io.masks import decode_rle

    canvas = image
    for start in range(0, len(records), OVERLAY_CHUNK):
        chunk = records[start : start + OVERLAY_CHUNK]
        masks = np.stack([decode_rle(r["segmentation"]) for r in chunk])
        canvas = overlay(canvas, masks, list(range(start + 1, start + 1 + len(chunk))))
        if mask_dir is not None:
            for k, mask in enumerate(masks, start=start):
                save_mask_png(out / mask_dir / f"{k:04d}.png", mask)
    save_rgb_png(out / "overlays" / f"{name}.png", canvas)
