"""``anyseg bench``: speed of encode, click-to-mask, segment-everything, video tracking and
memory per model, optionally side by side with the official implementations.

Writes ``bench.json`` and ``bench.md`` to ``--out``; ``--profile`` also writes, per model,
where anyseg's time goes in an image encode, a click and one video step (wall time per
module and torch.profiler's top operators).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anyseg._process import usable_cpus
from anyseg.cli.common import PRECISIONS, output_folder


def _names(known: tuple[str, ...] | None):
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        bad = [n for n in names if known is not None and n not in known]
        if not names or bad:
            want = f"a subset of {', '.join(known)}" if known else "names"
            raise argparse.ArgumentTypeError(f"expected comma-separated {want}, got {text!r}")
        return names

    return parse


def register(sub) -> None:
    from anyseg import bench

    p = sub.add_parser(
        "bench",
        help="benchmark speed and memory, optionally against the official code",
        description=(
            "Time image encode, click-to-mask, segment-everything, video tracking (1 and 3 "
            "objects) and peak memory per model, with random weights in the official "
            "architectures. Each measurement runs in its own process. With an official source "
            "tree and --official-python, the official predictors are timed on the same weights "
            "and inputs in the same run, interleaved with ours, and each ratio is reported "
            "(above 1: anyseg is faster or smaller)."
        ),
    )
    p.add_argument("--models", type=_names(None), default=list(bench.MODELS), metavar="LIST",
                   help=f"comma-separated presets (default: {','.join(bench.MODELS)})")
    p.add_argument("--measures", type=_names(bench.MEASURES), default=list(bench.MEASURES), metavar="LIST",
                   help=f"comma-separated subset of {','.join(bench.MEASURES)} (default: all)")
    p.add_argument("--precisions", type=_names(list(PRECISIONS)), default=["fp32"], metavar="LIST",
                   help="anyseg's precisions to measure, e.g. fp32,bf16,int8 (default: fp32; the official side is fp32)")
    p.add_argument("--device", default="cpu",
                   help="torch device both sides compute on, e.g. cuda (default: cpu); on a GPU the official "
                        "side computes under autocast in anyseg's precision, as its notebooks do")
    p.add_argument("--compile", action="store_true",
                   help="compile what the official code compiles (torch.compile, max-autotune) on both sides: the "
                        "image encoders, and for video the parts of the official vos_optimized mode")
    p.add_argument("--repeat", type=int, default=3, metavar="N",
                   help="interleaved repeats, each in fresh processes (default: 3)")
    p.add_argument("--iters", type=int, default=3, metavar="N", help="timed encodes per process (default: 3)")
    p.add_argument("--clicks", type=int, default=20, metavar="N",
                   help="timed clicks (or refinements) per process (default: 20)")
    p.add_argument("--frames", type=int, default=15, metavar="N",
                   help="video frames tracked after the prompted one (default: 15)")
    p.add_argument("--pause", type=float, default=0.1, metavar="SECONDS",
                   help="idle time before each timed call, so neither side's spinning threads overlap the "
                        "other's call (default: 0.1)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch threads on both sides (default: the CPUs this process may use, within a "
                        "container's CPU quota)")
    p.add_argument("--image", default=str(bench.DEFAULT_IMAGE), metavar="PATH",
                   help="image for encode, click and memory (default: shared samples truck.jpg)")
    p.add_argument("--everything-image", default=str(bench.DEFAULT_EVERYTHING_IMAGE), metavar="PATH",
                   help="image for segment-everything (default: shared samples groceries.jpg)")
    p.add_argument("--video", default=str(bench.DEFAULT_VIDEO), metavar="PATH",
                   help="video for tracking (default: shared samples bedroom.mp4)")
    p.add_argument("--out", type=Path, default=bench.DEFAULT_OUT, metavar="DIR",
                   help="where bench.json and bench.md go (default: benchmarks/results)")
    p.add_argument("--official-sam2", metavar="PATH", help="facebookresearch/sam2 source tree")
    p.add_argument("--official-sam1", metavar="PATH", help="facebookresearch/segment-anything source tree")
    p.add_argument("--official-mobilesam", metavar="PATH", help="ChaoningZhang/MobileSAM source tree")
    p.add_argument("--official-python", metavar="PATH",
                   help="python of an environment with torch + torchvision (and the official trees' light deps)")
    p.add_argument("--profile", action="store_true",
                   help="also write where anyseg's time goes (per module, top torch ops) in encode, a click "
                        "and one video step, per model and precision")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from anyseg import bench
    from anyseg.errors import InvalidInputError
    from anyseg.loading import check_device
    from anyseg.predictors.precision import check_precision

    official = {key: path for key, path in (("sam2", args.official_sam2), ("sam1", args.official_sam1),
                                            ("mobilesam", args.official_mobilesam)) if path}
    if official and not args.official_python:
        raise InvalidInputError("an official source tree needs --official-python PATH")
    for path in [*official.values(), args.image, args.everything_image, args.video]:
        if not Path(path).exists():
            raise InvalidInputError(f"{path} does not exist")
    if args.threads is None:  # read here, not when the parser is built for every command
        args.threads = usable_cpus()
    if min(args.repeat, args.iters, args.clicks, args.frames, args.threads) < 1:
        raise InvalidInputError("--repeat, --iters, --clicks, --frames and --threads must be >= 1")
    if not 0 <= args.pause <= 60:
        raise InvalidInputError("--pause must be between 0 and 60 seconds")
    device = check_device(args.device)
    for precision in args.precisions:
        check_precision(precision, device)
    output_folder(args.out)
    cfg = bench.Config(models=args.models, measures=args.measures, repeat=args.repeat, iters=args.iters,
                       click_iters=args.clicks, frames=args.frames, threads=args.threads, image=args.image,
                       everything_image=args.everything_image, video=args.video, official=official,
                       official_python=args.official_python or "", precisions=args.precisions,
                       pause=args.pause, device=str(device), compiled=args.compile)
    report = bench.run(cfg, log=lambda line: print(line, flush=True))
    paths = bench.write_report(report, args.out)
    print()
    print(bench.markdown(report))
    if args.profile:
        for model in args.models:
            if bench.unavailable(model, "encode") is None:
                for precision in args.precisions:
                    paths += tuple(bench.profile(model, args.out, image=args.image, video=args.video,
                                                 threads=args.threads, precision=precision))
    print("written:", ", ".join(str(p) for p in paths))
    return 0
