"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model NAME | --checkpoint PATH`` (a name and a file together: the file holds
    fine-tuned weights of that architecture) and ``--device``."""
    parser.add_argument("--model", metavar="NAME", help="registry name (see `anyseg models`)")
    parser.add_argument("--checkpoint", metavar="PATH", help="load weights from this local file")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def load_model_from_args(args: argparse.Namespace):
    from anyseg.errors import InvalidInputError
    from anyseg.loading import load_model

    if args.model is None and args.checkpoint is None:
        raise InvalidInputError("give --model NAME or --checkpoint PATH (`anyseg models` lists the names)")
    return load_model(args.model, checkpoint=args.checkpoint, device=args.device)


def numbers(text: str, count: tuple[int, ...], what: str) -> list[float]:
    """Parse ``"1,2,3"`` into floats, requiring one of the lengths in ``count``."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if len(values) not in count:
        raise argparse.ArgumentTypeError(f"{what} takes {' or '.join(map(str, count))} numbers, got {text!r}")
    return values
