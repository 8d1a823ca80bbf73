"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
"""The precisions a predictor computes in (``anyseg.predictors.precision``), for the CLI's
choices without importing torch."""

PRECISION_HELP = ("fp32 (default: exact, as the official code), bf16 (faster, approximate), fp16 (the same on a "
                  "GPU; most CPUs run it far slower than fp32), int8 (bf16 with int8 products on the CPU: the "
                  "fastest there); the README's Performance section has each one's speed and accuracy cost")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model NAME | --checkpoint PATH`` (a name and a file together: the file holds
    fine-tuned weights of that architecture), ``--device`` and ``--precision``."""
    parser.add_argument("--model", metavar="NAME", help="registry name (see `anyseg models`)")
    parser.add_argument("--checkpoint", metavar="PATH", help="load weights from this local file")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)


def load_model_from_args(args: argparse.Namespace):
    """The model the arguments name, on their device; a device or precision that cannot
    work there is refused first, before any weights are read or downloaded."""
    from anyseg.errors import InvalidInputError
    from anyseg.loading import check_device, load_model
    from anyseg.predictors.precision import check_precision

    if args.model is None and args.checkpoint is None:
        raise InvalidInputError("give --model NAME or --checkpoint PATH (`anyseg models` lists the names)")
    check_precision(args.precision, check_device(args.device))
    return load_model(args.model, checkpoint=args.checkpoint, device=args.device)


def output_folder(path: str | None):
    """``--out`` as a path, checked writable before any model work (made when written to;
    None stays None)."""
    from anyseg.io.export import writable_folder

    return None if path is None else writable_folder(path, make=False)


def numbers(text: str, count: tuple[int, ...], what: str) -> list[float]:
    """Parse ``"1,2,3"`` into floats, requiring one of the lengths in ``count``."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if len(values) not in count:
        raise argparse.ArgumentTypeError(f"{what} takes {' or '.join(map(str, count))} numbers, got {text!r}")
    return values
