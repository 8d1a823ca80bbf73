"""``anyseg eval``: score predictions with the official benchmarks' metrics.

* ``anyseg eval vos --gt DIR --pred DIR``: J, F, J&F (DAVIS or SA-V folders).
* ``anyseg eval saco-video --gt FILE --pred FILE``: SA-Co/VEval metrics.
* ``anyseg eval saco-image --gt FILE [FILE ...] --pred FILE``: SA-Co/Gold cgF1 family.
* ``anyseg eval clicks --images DIR --gt COCO.json --model NAME``: simulated clicks,
  mIoU@1/3/5 and NoC@85/90.
* ``anyseg eval track --video-dir DIR --gt DIR --model NAME --out DIR``: semi-supervised
  VOS from first-appearance masks, scored as ``eval vos``.

Each prints a Markdown summary table; ``--out DIR`` also writes ``results.json`` and a CSV.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from anyseg.cli.common import add_model_args, load_model_from_args, output_folder

if TYPE_CHECKING:
    from anyseg.metrics.vos import VosResult


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score predictions against ground truth (VOS J&F, SA-Co, clicks NoC, tracking)",
        description="Score predictions with the metrics of the official evaluators.",
    )
    benchmarks = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")

    vos = benchmarks.add_parser(
        "vos",
        help="J, F and J&F of video object segmentation (DAVIS or SA-V layout)",
        description=(
            "J (region IoU), F (boundary F-measure) and J&F per object, per video and overall, "
            "with the conventions of the official SA-V / DAVIS evaluator. The layout is detected "
            "per video: DAVIS = VIDEO/FRAME.png (indexed PNG, value = object id), "
            "SA-V = VIDEO/OBJECT/FRAME.png (binary PNG per object)."
        ),
    )
    vos.add_argument("--gt", required=True, type=Path, metavar="DIR", help="ground-truth root (one folder per video)")
    vos.add_argument("--pred", required=True, type=Path, metavar="DIR", help="prediction root, same layout")
    vos.add_argument("--out", type=Path, metavar="DIR", help="write results.json and results.csv here")
    vos.add_argument(
        "--no-skip-first-last",
        action="store_true",
        help="also score the first and last annotated frame (skipped by default, as for SA-V val/test and DAVIS)",
    )
    vos.add_argument("--strict", action="store_true", help="fail if a ground-truth video has no prediction folder")
    vos.set_defaults(func=run_vos)

    video = benchmarks.add_parser(
        "saco-video",
        help="SA-Co/VEval: cgF1, IL_MCC, positive micro-F1, phrase HOTA, mAP, phrase AP, TETA",
        description="SA-Co video metrics of the official SAM 3 evaluator, for boxes and masks.",
    )
    video.add_argument("--gt", required=True, type=Path, metavar="FILE", help="YT-VIS style ground truth (JSON)")
    video.add_argument("--pred", required=True, type=Path, metavar="FILE", help="YT-VIS style predictions (JSON list)")
    video.add_argument("--out", type=Path, metavar="DIR", help="write results.json and results.csv here")
    video.set_defaults(func=run_saco_video)

    image = benchmarks.add_parser(
        "saco-image",
        help="SA-Co/Gold-style images: cgF1, IL_MCC, positive micro-F1",
        description=(
            "SA-Co image metrics (cgF1 family) for boxes and masks. Give several --gt files "
            "(e.g. SA-Co/Gold's three annotations) to score each query against the best one."
        ),
    )
    image.add_argument("--gt", required=True, type=Path, nargs="+", metavar="FILE", help="COCO ground truth (JSON)")
    image.add_argument("--pred", required=True, type=Path, metavar="FILE", help="COCO results (JSON list)")
    image.add_argument("--out", type=Path, metavar="DIR", help="write results.json and results.csv here")
    image.set_defaults(func=run_saco_image)

    clicks = benchmarks.add_parser(
        "clicks",
        help="interactive images: simulated clicks, mIoU@1/3/5 and NoC@85/90",
        description=(
            "Simulate clicks on every non-crowd object of a COCO file (RITM protocol): the first "
            "click at the object pixel farthest from its boundary (the image border counts as "
            "boundary), each next one at the deepest pixel of the false-negative or false-positive "
            "region (positive or negative click), with all clicks so far and the previous low-res "
            "logits as mask input. Reports mIoU after 1, 3 and 5 clicks and NoC@85/90."
        ),
    )
    clicks.add_argument("--images", required=True, type=Path, metavar="DIR", help="folder of the COCO file's images")
    clicks.add_argument("--gt", required=True, type=Path, metavar="COCO.json", help="COCO annotations (polygons or RLE)")
    add_model_args(clicks)
    clicks.add_argument("--max-clicks", type=_max_clicks, default=20, metavar="N",
                        help="clicks per object; NoC is capped at N (default: 20, at least 5)")
    clicks.add_argument("--out", type=Path, metavar="DIR", help="write results.json and results.csv here")
    clicks.set_defaults(func=run_clicks)

    track = benchmarks.add_parser(
        "track",
        help="semi-supervised VOS: track from first-frame masks, write predictions, score J&F",
        description=(
            "Prompt every ground-truth object with its mask on the first frame where it appears, "
            "track it forward with SAM 2, write the predictions in the ground truth's layout "
            "(DAVIS indexed PNGs or SA-V per-object PNGs) under OUT/pred, and score them as "
            "`anyseg eval vos` does. Frames: VIDEO_DIR/<video>/<frame>.jpg; ground truth: "
            "GT/<video>/<frame>.png (DAVIS) or GT/<video>/<object>/<frame>.png (SA-V)."
        ),
    )
    track.add_argument("--video-dir", required=True, type=Path, metavar="DIR", help="one JPEG/PNG frame folder per video")
    track.add_argument("--gt", required=True, type=Path, metavar="DIR", help="ground-truth root (one folder per video)")
    add_model_args(track)
    track.add_argument("--out", required=True, type=Path, metavar="DIR",
                       help="write pred/<video>/..., results.json and results.csv here")
    track.add_argument(
        "--no-skip-first-last",
        action="store_true",
        help="also score the first and last annotated frame (skipped by default, as for SA-V val/test and DAVIS)",
    )
    track.set_defaults(func=run_track)


def _max_clicks(text: str) -> int:
    """``--max-clicks``: an integer of at least 5 (mIoU@5 is reported)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-clicks takes an integer, got {text!r}") from None
    if value < 5:
        raise argparse.ArgumentTypeError(f"--max-clicks must be at least 5 (mIoU@5 is reported), got {value}")
    return value


def _print_table(title: str, table: str) -> None:
    print(f"\n## {title}\n\n{table}")


def run_vos(args: argparse.Namespace) -> int:
    from anyseg.metrics import report, vos

    output_folder(args.out)
    result = vos.evaluate(
        args.gt,
        args.pred,
        skip_first_last=not args.no_skip_first_last,
        strict=args.strict,
        progress=report.progress_bar("videos"),
    )
    _report_vos(result, args.out)
    return 0


def _report_vos(result: VosResult, out: Path | None) -> None:
    """Print a VOS result as a Markdown table (and warnings); write it under ``out``."""
    from anyseg.metrics import report

    for line in result.unscored:
        print(f"warning: not scored: {line}", file=sys.stderr)
    if result.videos_without_prediction:
        missing = ", ".join(result.videos_without_prediction)
        print(f"warning: no prediction folder, left out: {missing}", file=sys.stderr)
    rows = [[v, m["objects"], m["J&F"], m["J"], m["F"]] for v, m in result.per_video().items()]
    rows.append(["**global** (mean over objects)", len(result.objects), result.jf, result.j, result.f])
    mode = "first and last frames skipped" if result.skip_first_last else "all frames"
    _print_table(
        f"VOS ({result.layout} layout, {mode}); per-video rows: mean over objects",
        report.markdown_table(["video", "objects", "J&F", "J", "F"], rows, digits=2),
    )
    if out:
        report.write_json(out / "results.json", result.to_json())
        (out / "results.csv").write_text(result.official_csv())
        print(f"\nwrote {out / 'results.json'} and {out / 'results.csv'}")


def run_saco_video(args: argparse.Namespace) -> int:
    from anyseg.metrics import report, saco

    output_folder(args.out)
    gt = saco.load_video_gt(args.gt)
    preds = saco.load_video_predictions(args.pred, gt)
    result = saco.evaluate_video(gt, preds, progress=report.progress_bar("queries"))
    d = result.dataset
    rows = [
        [label, d.get(f"video_bbox_{key}", float("nan")), d.get(f"video_mask_{key}", float("nan"))]
        for label, key in (
            ("cgF1 (0.50:0.95)", "demo_cgf1_micro_50_95"),
            ("IL_MCC", "demo_ilmcc_50_95"),
            ("positive micro-F1 (0.50:0.95)", "demo_positive_micro_f1_50_95"),
            ("cgF1 @0.5", "demo_cgf1_micro_50"),
            ("pHOTA", "all_phrase_HOTA"),
            ("pDetA", "all_phrase_DetA"),
            ("pAssA", "all_phrase_AssA"),
            ("mAP (0.50:0.95)", "mAP_50_95"),
            ("phrase AP (0.50:0.95)", "phrase_ap_50_95"),
            ("phrase AP @0.5", "phrase_ap_50"),
            ("TETA (0-100, masks only)", "teta"),
        )
    ]
    _print_table("SA-Co video", report.markdown_table(["metric", "bbox", "mask"], rows))
    if args.out:
        report.write_json(args.out / "results.json", result.to_json())
        per_query = result.to_json()["video_np_results"]
        keys = sorted({k for r in per_query for k in r} - {"video_id", "category_id"})
        report.write_csv(
            args.out / "results.csv",
            ["video_id", "category_id", *keys],
            ([r["video_id"], r["category_id"], *(r.get(k, "") for k in keys)] for r in per_query),
        )
        print(f"\nwrote {args.out / 'results.json'} and {args.out / 'results.csv'} (one row per video and noun phrase)")
    return 0


def run_saco_image(args: argparse.Namespace) -> int:
    from anyseg.metrics import report, saco

    output_folder(args.out)
    gts = [saco.load_image_gt(path) for path in args.gt]
    preds = saco.load_image_predictions(args.pred, gts[0])
    result = saco.evaluate_image(gts, preds, progress=report.progress_bar("queries"))
    rows = [
        [label, result[f"cgF1_eval_bbox_{key}"], result[f"cgF1_eval_segm_{key}"]]
        for label, key in (
            ("cgF1 (0.50:0.95)", "cgF1"),
            ("IL_MCC", "IL_MCC"),
            ("positive micro-F1 (0.50:0.95)", "positive_micro_F1"),
            ("cgF1 @0.5", "cgF1@0.5"),
            ("cgF1 @0.75", "cgF1@0.75"),
        )
    ]
    _print_table("SA-Co image", report.markdown_table(["metric", "bbox", "mask"], rows))
    if args.out:
        report.write_json(args.out / "results.json", result)
        report.write_csv(args.out / "results.csv", ["metric", "value"], result.items())
        print(f"\nwrote {args.out / 'results.json'} and {args.out / 'results.csv'}")
    return 0


def run_clicks(args: argparse.Namespace) -> int:
    from anyseg.metrics import clicks, report
    from anyseg.predictors.image import ImagePredictor

    output_folder(args.out)
    targets, skipped = clicks.load_targets(args.images, args.gt)
    predictor = ImagePredictor(load_model_from_args(args), precision=args.precision)
    result = clicks.evaluate(predictor, targets, args.max_clicks, skipped, progress=report.progress_bar("images"))
    for line in result.skipped:
        print(f"warning: not evaluated: {line}", file=sys.stderr)
    keys = ["mIoU@1", "mIoU@3", "mIoU@5", "NoC@85", "NoC@90"]
    rows = [[name, m["objects"], *(m[k] for k in keys)] for name, m in result.per_image().items()]
    overall = result.overall()
    rows.append(["**overall** (mean over objects)", overall["objects"], *(overall[k] for k in keys)])
    _print_table(
        f"Interactive segmentation, {args.max_clicks} simulated clicks "
        f"(NoF@85 = {overall['NoF@85']}, NoF@90 = {overall['NoF@90']} objects never reach the IoU)",
        report.markdown_table(["image", "objects", *keys], rows, digits=3),
    )
    if args.out:
        report.write_json(args.out / "results.json", result.to_json())
        report.write_csv(args.out / "results.csv", *result.csv_rows())
        print(f"\nwrote {args.out / 'results.json'} and {args.out / 'results.csv'} (one row per object)")
    return 0


def run_track(args: argparse.Namespace) -> int:
    from anyseg.metrics import report, track, vos
    from anyseg.predictors.video import VideoPredictor

    output_folder(args.out)
    plans = track.plan_videos(args.video_dir, args.gt)
    predictor = VideoPredictor(load_model_from_args(args), precision=args.precision)
    pred_root = args.out / "pred"
    for plan in plans:
        track.track_video(predictor, plan, pred_root / plan.name, progress=report.progress_bar(plan.name))
    print(f"wrote predictions of {len(plans)} video(s) to {pred_root}")
    result = vos.evaluate(
        args.gt,
        pred_root,
        skip_first_last=not args.no_skip_first_last,
        strict=True,
        progress=report.progress_bar("scoring"),
    )
    _report_vos(result, args.out)
    return 0
