"""``anyseg.load_model``: a registry name or a checkpoint file to a ready model."""

from __future__ import annotations

import os

import torch

from anyseg import hub
from anyseg.errors import CheckpointError, InvalidInputError
from anyseg.models import all_presets, build_model


def _shapes(model: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def infer_preset(state_dict: dict[str, torch.Tensor]) -> tuple[str, str] | None:
    """The ``(family, preset)`` whose architecture has exactly these keys and shapes."""
    wanted = {k: tuple(v.shape) for k, v in state_dict.items()}
    for family, preset in all_presets():
        with torch.device("meta"):
            if _shapes(build_model(family, preset)) == wanted:
                return family, preset
    return None


def _mismatch(model, state_dict) -> str:
    ours, theirs = _shapes(model), {k: tuple(v.shape) for k, v in state_dict.items()}
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    shapes = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: file {theirs[k]}, model {ours[k]})")
    return "; ".join(parts)


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, if this torch can compute there; else
    :class:`InvalidInputError` saying why."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"unknown device {device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device}: this torch ({torch.__version__}) sees no CUDA GPU")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InvalidInputError(f"device {device}: there are {torch.cuda.device_count()} CUDA GPUs")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(f"device {device}: this torch sees no MPS (Apple GPU) device")
    return device


def load_model(
    name: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    download: bool = True,
) -> torch.nn.Module:
    """Build a model and load its weights strictly, ready for inference.

    ``name`` is a registry name (``anyseg models`` lists them): its official weights
    are taken from the cache, or downloaded and verified. ``checkpoint`` loads a local
    file instead; without ``name`` its architecture is recognised from its keys.
    Offline, or on a checksum mismatch, :class:`WeightsUnavailableError` says which
    file to download and where to put it. An unknown ``device``, or one this torch cannot
    reach, is an :class:`InvalidInputError` (:func:`check_device`).
    """
    device = check_device(device)
    spec, path = hub.checkpoint_for(name, checkpoint, download=download)
    state_dict = hub.load_state_dict(path)
    if spec is not None:
        family, preset = spec.family, spec.preset
    else:
        found = infer_preset(state_dict)
        if found is None:
            raise CheckpointError(
                f"{path} does not match any known architecture; pass the model name it belongs to"
            )
        family, preset = found
    model = build_model(family, preset)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError:
        raise CheckpointError(f"{path} does not fit {preset}: {_mismatch(model, state_dict)}") from None
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise InvalidInputError(f"dtype must be float32, float16 or bfloat16, not {dtype}")
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
