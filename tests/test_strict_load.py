"""Every official SAM 2 / SAM 2.1 state dict (keys and shapes from manifests.json)
loads strictly into the architecture its registry preset builds."""

from __future__ import annotations

import json

import pytest
import torch

from anyseg.loading import infer_preset
from anyseg.models import build_model
from anyseg.models.registry import list_specs

@pytest.fixture(scope="module")
def manifests(fixtures_dir):
    return json.loads((fixtures_dir / "manifests.json").read_text())


def _meta_state_dict(entries: dict) -> dict[str, torch.Tensor]:
    dtypes = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}
    return {k: torch.empty(shape, dtype=dtypes.get(dt, torch.float32), device="meta") for k, (shape, dt) in entries.items()}


@pytest.mark.parametrize("spec", list_specs(), ids=lambda s: s.name)
def test_registry_model_loads_official_keys_strictly(spec, manifests):
    entries = manifests[spec.preset]  # manifest keys are the preset names
    with torch.device("meta"):
        model = build_model(spec.family, spec.preset)
    # assign=True keeps the meta tensors: this checks keys and shapes without memory
    model.load_state_dict(_meta_state_dict(entries), strict=True, assign=True)


@pytest.mark.parametrize("preset", ["sam2_hiera_t", "sam2.1_hiera_l", "sam2.1_hiera_b+"])
def test_architecture_is_recognised_from_keys(preset, manifests):
    found = infer_preset(_meta_state_dict(manifests[preset]))
    assert found is not None and found[1] == preset
