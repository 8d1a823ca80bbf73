"""Opt-in reduced precision for inference.

``"fp32"`` (the default) computes exactly as the official implementations do. ``"bf16"``
and ``"fp16"`` run the image encoder and the video tracker's memory attention and memory
encoder (matrix products, convolutions and attention) under autocast in that type (weights
stay fp32), and the image side and the token MLPs of the mask decoder, in the image
predictors and the video tracker alike, on a copy of its weights outside autocast
(``MaskDecoder.copy_in``; the prompt tokens stay fp32): bf16 several times faster on CPUs
with AMX/AVX-512-BF16 and on GPUs, at an accuracy cost measured in
``benchmarks/precision_accuracy.py``; fp16 is for GPUs (a CPU without fp16 arithmetic, such
as the AMD EPYC host, runs it tens of times slower than fp32). ``"int8"`` is ``"bf16"`` with the image encoder's wide
linear layers in int8 on the CPU (:func:`~anyseg.models.common.int8_linears`): a SAM
2.1-tiny encode another 10-13% faster on an AMD EPYC (int8 dot-product instructions, VNNI),
and the mask decoder copy's first upscaling product and its attention scores against the
image after the transformer's first block too (``MaskDecoder.copy_in``: a click 3-8% faster
there), at a further accuracy cost, measured there on the fixtures' random weights only.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from anyseg.errors import InvalidInputError
from anyseg.models.common import int8_linears

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.bfloat16}
"""Each precision's reduced type (autocast's and the decoder copy's), None for fp32."""


def check_precision(precision: str, device: torch.device | str | None = None) -> str:
    """``precision``, if it is one of :data:`PRECISIONS` and runs on ``device`` (int8 is a CPU
    mode: elsewhere it would silently be bf16); else an :class:`InvalidInputError`."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and device is not None and torch.device(device).type != "cpu":
        raise InvalidInputError("int8 is a CPU mode (its int8 products run on the CPU); on a GPU use bf16 or fp16")
    return precision


def decoder_copy(model, precision: str):
    """The copy of ``model``'s mask decoder that prompts are decoded with in ``precision`` (its
    image side in the reduced type, outside autocast, which would cast every weight on every
    call; ``MaskDecoder.copy_in``), or None for fp32 (the model's own, not read here)."""
    reduced = PRECISIONS[precision]
    return None if reduced is None else model.mask_decoder.copy_in(reduced, int8=precision == "int8")


def autocast(device: torch.device, precision: str):
    """A context computing in ``precision`` on ``device`` (nothing for fp32)."""
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


@contextmanager
def encoding(device: torch.device, precision: str):
    """The context of an image encode in ``precision`` on ``device``: :func:`autocast`, and for
    ``"int8"`` on the CPU the encoder's wide linear layers in int8."""
    with autocast(device, precision), int8_linears() if precision == "int8" and device.type == "cpu" else nullcontext():
        yield
