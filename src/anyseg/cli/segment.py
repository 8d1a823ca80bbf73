"""``anyseg segment``: prompted masks for one image, written as PNGs and JSON."""

from __future__ import annotations

import argparse
import time

from anyseg.cli.common import add_model_args, load_model_from_args, numbers, output_folder


def _point(text: str) -> list[float]:
    values = numbers(text, (2, 3), "--point")
    if len(values) == 3 and values[2] not in (0, 1):
        raise argparse.ArgumentTypeError("a point's label is 1 (foreground) or 0 (background)")
    return values if len(values) == 3 else values + [1]


def _box(text: str) -> list[float]:
    return numbers(text, (4,), "--box")


def register(sub) -> None:
    p = sub.add_parser(
        "segment",
        help="segment an image from point and box prompts",
        description="Segment IMAGE from clicks and/or a box; write each mask as a PNG, a "
        "transparent cut-out, an overlay, and a JSON summary.",
    )
    p.add_argument("image", help="image file (JPEG, PNG, ...)")
    add_model_args(p)
    p.add_argument("--point", type=_point, action="append", default=[], metavar="X,Y[,LABEL]",
                   help="a click in image pixels; LABEL 1 = object (default), 0 = background; repeatable")
    p.add_argument("--box", type=_box, metavar="X0,Y0,X1,Y1", help="a box around the object, in image pixels")
    mm = p.add_mutually_exclusive_group()
    mm.add_argument("--multimask", dest="multimask", action="store_true", default=None,
                    help="return three candidate masks (default for a single click)")
    mm.add_argument("--single", dest="multimask", action="store_false", help="return one mask")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anyseg.errors import InvalidInputError
    from anyseg.io.export import cutout, overlay, save_mask_png, save_rgb_png, save_rgba_png, write_json_atomic
    from anyseg.io.images import load_image
    from anyseg.io.masks import encode_rle, mask_to_box
    from anyseg.predictors.image import ImagePredictor

    if not args.point and args.box is None:
        raise InvalidInputError("give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1")
    out_dir = output_folder(args.out)
    model = load_model_from_args(args)
    image = load_image(args.image)
    multimask = args.multimask if args.multimask is not None else (len(args.point) == 1 and args.box is None)

    pred = ImagePredictor(model, precision=args.precision)
    t0 = time.perf_counter()
    pred.set_image(image)
    t1 = time.perf_counter()
    points = [p[:2] for p in args.point] or None
    labels = [int(p[2]) for p in args.point] or None
    out = pred.predict(points=points, labels=labels, box=args.box, multimask=multimask)
    t2 = time.perf_counter()

    out_dir.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(out.scores)), key=lambda k: -float(out.scores[k]))
    records = []
    for rank, k in enumerate(order):
        mask = out.masks[k]
        stem = f"mask_{rank}"
        save_mask_png(out_dir / f"{stem}.png", mask)
        save_rgba_png(out_dir / f"{stem}_cutout.png", cutout(image, mask))
        save_rgb_png(out_dir / f"{stem}_overlay.png", overlay(image, mask[None], [rank + 1]))
        x0, y0, x1, y1 = (int(v) for v in mask_to_box(mask))
        records.append({
            "index": rank,
            "score": float(out.scores[k]),
            "area": int(mask.sum()),
            "bbox_xywh": [x0, y0, x1 - x0, y1 - y0],
            "files": {"mask": f"{stem}.png", "cutout": f"{stem}_cutout.png", "overlay": f"{stem}_overlay.png"},
            "rle": encode_rle(mask),
        })
        print(f"{stem}: score {out.scores[k]:.3f}, area {int(mask.sum())} px -> {out_dir / (stem + '.png')}")
    write_json_atomic(out_dir / "segment.json", {
        "image": str(args.image),
        "size_hw": list(image.shape[:2]),
        "model": args.model or str(args.checkpoint),
        "precision": args.precision,
        "prompts": {"points": points, "labels": labels, "box": args.box, "multimask": multimask},
        "masks": records,
        "timing_s": {"encode": round(t1 - t0, 4), "predict": round(t2 - t1, 4)},
    }, indent=2)
    print(f"encode {t1 - t0:.2f} s, predict {1000 * (t2 - t1):.1f} ms; summary in {out_dir / 'segment.json'}")
    return 0
