"""``anyseg track``: track prompted objects through a video with SAM 2."""

from __future__ import annotations

import argparse
import re

from anyseg.cli.common import add_model_args, load_model_from_args, numbers, output_folder

_PROMPT = re.compile(r"^(\d+):(\d+):(point|box)=(.+)$")


def parse_prompt(text: str) -> tuple[int, int, str, list[float]]:
    """``FRAME:OBJ:point=X,Y[,L]`` or ``FRAME:OBJ:box=X0,Y0,X1,Y1`` -> parts."""
    m = _PROMPT.match(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(
            f"bad --prompt {text!r}: use FRAME:OBJ:point=X,Y[,LABEL] or FRAME:OBJ:box=X0,Y0,X1,Y1"
        )
    frame, obj, kind, values = int(m[1]), int(m[2]), m[3], m[4]
    if not 1 <= obj <= 255:
        raise argparse.ArgumentTypeError(f"object ids are 1..255 (they index the PNG palette), got {obj}")
    if kind == "point":
        xy = numbers(values, (2, 3), "a point")
        if len(xy) == 3 and xy[2] not in (0, 1):
            raise argparse.ArgumentTypeError("a point's label is 1 (object) or 0 (background)")
        return frame, obj, kind, xy if len(xy) == 3 else xy + [1]
    return frame, obj, kind, numbers(values, (4,), "a box")


def register(sub) -> None:
    p = sub.add_parser(
        "track",
        help="track objects through a video from clicks or boxes",
        description="Prompt objects on any frames, track them through VIDEO (file or frame "
        "folder) with SAM 2, and write DAVIS-palette PNG masks, COCO RLE JSON and an overlay MP4.",
    )
    p.add_argument("video", help="video file (mp4, mov, webm, ...) or folder of JPEG/PNG frames")
    add_model_args(p)
    p.add_argument("--prompt", type=parse_prompt, action="append", required=True,
                   metavar="FRAME:OBJ:point=X,Y[,L] | FRAME:OBJ:box=X0,Y0,X1,Y1",
                   help="a click or box for object OBJ on frame FRAME (video pixels); repeatable")
    p.add_argument("--reverse", action="store_true",
                   help="track backward from the last prompted frame (default: forward from the first)")
    p.add_argument("--max-frames", type=int, default=None, help="track at most this many frames")
    p.add_argument("--fill-hole-area", type=int, default=8, help="fill mask holes up to this area (0: off)")
    p.add_argument("--no-video", action="store_true", help="skip the overlay MP4")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from anyseg.io.export import overlay, save_indexed_png, write_json_atomic, write_video
    from anyseg.io.masks import decode_rle, encode_rle, mask_to_box
    from anyseg.predictors.video import VideoPredictor

    out = output_folder(args.out)
    model = load_model_from_args(args)
    session = VideoPredictor(model, fill_hole_area=args.fill_hole_area, precision=args.precision).open(args.video)
    with session:
        seen: set[tuple[int, int]] = set()
        for frame, obj, kind, values in args.prompt:
            if kind == "box":  # a box starts the frame's prompt afresh; give it before clicks
                session.add_prompt(frame, obj, box=values)
            else:
                session.add_prompt(frame, obj, points=[values[:2]], labels=[int(values[2])],
                                   clear=(frame, obj) not in seen)
            seen.add((frame, obj))
        frames = sorted({f for f, _, _, _ in args.prompt})
        start = frames[-1] if args.reverse else frames[0]

        mask_dir = out / "masks"
        mask_dir.mkdir(parents=True, exist_ok=True)
        annotations = []
        results = session.propagate(start=start, reverse=args.reverse, max_frames=args.max_frames)
        for r in tqdm(results, total=_expected(session, start, args), unit="frame", desc="tracking"):
            labels = _label_map(r.masks, r.obj_ids)
            save_indexed_png(mask_dir / f"{r.frame:05d}.png", labels)
            for obj_id, mask, score in zip(r.obj_ids, r.masks, r.object_scores):
                x0, y0, x1, y1 = (int(v) for v in mask_to_box(mask))
                annotations.append({
                    "frame": r.frame, "obj_id": obj_id, "segmentation": encode_rle(mask),
                    "area": int(mask.sum()), "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "object_score": float(score),
                })
        h, w = session.size
        write_json_atomic(out / "annotations.json", {
            "video": str(args.video), "height": h, "width": w, "fps": session.video.fps,
            "model": args.model or str(args.checkpoint), "precision": args.precision,
            "prompts": [{"frame": f, "obj_id": o, kind: v} for f, o, kind, v in args.prompt],
            "annotations": annotations,
        })
        tracked = sorted({a["frame"] for a in annotations})
        if not args.no_video and tracked:
            by_frame: dict[int, list] = {}
            for a in annotations:
                by_frame.setdefault(a["frame"], []).append(a)

            def frames_with_masks():
                for f in tracked:
                    anns = by_frame[f]
                    masks = [decode_rle(a["segmentation"]) for a in anns]
                    yield overlay(session.video.get(f), masks, [a["obj_id"] for a in anns], labels=True)

            write_video(out / "overlay.mp4", frames_with_masks(), fps=session.video.fps or 24.0)
    print(f"tracked {len(tracked)} frames of {len(set(o for _, o, _, _ in args.prompt))} object(s) -> {out}")
    return 0


def _label_map(masks, obj_ids):
    """``(N, H, W)`` masks -> ``(H, W)`` uint8 labels (object id, 0 background); later
    objects are painted over earlier ones."""
    import numpy as np

    labels = np.zeros(masks.shape[1:], dtype=np.uint8)
    for obj_id, mask in zip(obj_ids, masks):
        labels[mask] = obj_id
    return labels


def _expected(session, start: int, args) -> int | None:
    n = session.num_frames
    if n is None:
        return args.max_frames
    total = start + 1 if args.reverse else n - start
    return total if args.max_frames is None else min(total, args.max_frames + 1)
