"""Model architectures: pure tensor math, built from config dataclasses."""

from __future__ import annotations

from torch import nn

from anyseg.models import sam, sam2


def all_presets() -> list[tuple[str, str]]:
    """Every ``(family, preset)`` that :func:`build_model` knows."""
    return [("sam2", name) for name in sam2.PRESETS] + [("sam", name) for name in sam.PRESETS]


def build_model(family: str, preset: str) -> nn.Module:
    """An uninitialised model of a family (``"sam"``, ``"sam2"``) from a preset name."""
    if family == "sam2":
        return sam2.build_sam2(preset)
    if family == "sam":
        return sam.build_sam(preset)
    raise ValueError(f"unknown model family {family!r}")
