"""Opt-in reduced precision for inference.

``"fp32"`` (the default) computes exactly as the official implementations do. ``"bf16"``
and ``"fp16"`` run the image encoder and the video tracker's matrix products, convolutions
and attention under autocast in that type (weights stay fp32), and the image side and the
token MLPs of the image predictors' mask decoder on a copy of its weights
(``MaskDecoder.copy_in``; the prompt tokens stay fp32): several times faster on CPUs with
AMX/AVX-512-BF16 and on GPUs, at an accuracy cost measured in
``benchmarks/precision_accuracy.py``.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from anyseg.errors import InvalidInputError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(device: torch.device, precision: str):
    """A context computing in ``precision`` on ``device`` (nothing for fp32)."""
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)
