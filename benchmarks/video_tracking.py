"""Video tracking speed (frames per second, 1 and 3 objects) and memory with SAM 2.1.

Random weights in the official architecture (speed does not depend on their values),
on ``../shared/samples/videos/bedroom.mp4`` (960x540). Each measurement runs in its own
process so that its peak resident memory is its own. Usage::

    python benchmarks/video_tracking.py [--frames 30] [--memory-frames 500]

Frame rates go to ``results/video_tracking.json``, the long memory run to
``results/video_memory.json``; ``--precisions ""`` or ``--memory-frames 0`` skips either.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

VIDEO = Path(__file__).resolve().parents[2] / "shared" / "samples" / "videos" / "bedroom.mp4"
PROMPTS = [  # (obj_id, kwargs) on frame 0 of bedroom.mp4
    (1, {"points": [[560, 260]], "labels": [1]}),
    (2, {"box": [300, 150, 520, 480]}),
    (3, {"points": [[750, 300], [700, 420]], "labels": [1, 1]}),
]


def rss_mib() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(preset: str):
    from anyseg.models.sam2 import build_sam2

    torch.manual_seed(0)
    return build_sam2(preset).eval().requires_grad_(False)


def measure_fps(preset: str, objects: int, frames: int, precision: str) -> dict:
    """Propagate ``frames`` frames after the prompted one; fps excludes the first frame."""
    from anyseg.predictors.video import VideoPredictor

    session = VideoPredictor(build(preset), precision=precision).open(VIDEO)
    for obj_id, kwargs in PROMPTS[:objects]:
        session.add_prompt(0, obj_id, **kwargs)
    stamps = []
    for r in session.propagate(max_frames=frames):
        stamps.append(time.perf_counter())
    fps = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return {"objects": objects, "frames": len(stamps) - 1, "fps": fps, "peak_rss_mib": peak_mib(),
            "precision": precision}


def measure_memory(preset: str, frames: int, precision: str) -> dict:
    """Resident memory while tracking one object through ``frames`` frames of a live
    stream (bedroom.mp4 looped)."""
    from anyseg.io.video import open_video
    from anyseg.predictors.video import VideoPredictor

    def looped():
        n = 0
        while True:
            with open_video(VIDEO) as video:
                for _, frame in video:
                    yield frame
                    n += 1
                    if n == frames:
                        return

    session = VideoPredictor(build(preset), precision=precision).open(looped())
    session.add_prompt(0, 1, **PROMPTS[0][1])
    marks = {f - 1 for f in (50, 100, 200, 300, 400, 500, frames)}
    rss = {}
    t0 = time.perf_counter()
    for r in session.propagate():
        if r.frame in marks:
            rss[r.frame + 1] = round(rss_mib(), 1)
            print(f"  frame {r.frame + 1}: rss {rss[r.frame + 1]} MiB", file=sys.stderr, flush=True)
    return {"frames": frames, "precision": precision, "rss_mib_after_frames": rss, "seconds": time.perf_counter() - t0,
            "growth_200_to_end_pct": 100 * (rss[frames] / rss[200] - 1) if 200 in rss else None}


def child(args) -> None:
    if args.child == "fps":
        print(json.dumps(measure_fps(args.preset, args.objects, args.frames, args.precision)))
    else:
        print(json.dumps(measure_memory(args.preset, args.memory_frames, args.memory_precision)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="sam2.1_hiera_t")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--memory-frames", type=int, default=500)
    ap.add_argument("--objects", type=int, default=1)
    ap.add_argument("--precisions", default="fp32,bf16", help="precisions to time (fps)")
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--memory-precision", default="bf16",
                    help="precision of the long memory run (memory use does not depend on it; bf16 is faster)")
    ap.add_argument("--child", choices=["fps", "memory"])
    args = ap.parse_args()
    if args.child:
        return child(args)

    def run(*extra):
        cmd = [sys.executable, __file__, "--preset", args.preset, "--frames", str(args.frames),
               "--memory-frames", str(args.memory_frames), "--memory-precision", args.memory_precision, *extra]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        return json.loads(out)

    results = {"preset": args.preset, "video": VIDEO.name, "frames_timed": args.frames}
    for precision in filter(None, args.precisions.split(",")):
        for objects in (1, 3):
            r = run("--child", "fps", "--objects", str(objects), "--precision", precision)
            results[f"fps_{objects}_objects_{precision}"] = r
            print(f"{precision}, {objects} object(s): {r['fps']:.2f} frames/s, peak RSS {r['peak_rss_mib']:.0f} MiB",
                  flush=True)
    if len(results) > 3:
        print("written", write_results("video_tracking", results))
    if args.memory_frames:
        r = run("--child", "memory")
        print(f"memory over {args.memory_frames} frames: {r['rss_mib_after_frames']}", flush=True)
        print("written", write_results("video_memory", {"preset": args.preset, "video": VIDEO.name, **r}))


if __name__ == "__main__":
    main()
