"""``common.Linear`` under the CPU's bf16 autocast (the bf16 and int8 precisions' encodes):
oneDNN's linear kernel with bf16 copies of the weights, kept, against autocast's own product."""

import pytest
import torch
import torch.nn.functional as F

from anyseg.models.common import ONEDNN_ROWS, Linear

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN is not in this torch")


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("bias", [True, False])
def test_bf16_autocast_linear_is_autocasts_product(bias):
    torch.manual_seed(0)
    layer = Linear(96, 200, bias=bias).eval()
    x = torch.randn(2, ONEDNN_ROWS, 96)
    with torch.inference_mode(), bf16_autocast():
        got = layer(x)
        expected = F.linear(x, layer.weight, layer.bias)
    assert got.dtype == expected.dtype == torch.bfloat16 and got.shape == expected.shape
    # both from the same bf16 operands with float32 sums, rounded once to bf16
    torch.testing.assert_close(got.float(), expected.float(), rtol=2**-7, atol=1e-2)


def test_bf16_weights_are_kept_and_follow_loaded_weights():
    torch.manual_seed(0)
    layer = Linear(64, 64).eval()
    x = torch.randn(ONEDNN_ROWS, 64)
    with torch.inference_mode(), bf16_autocast():
        first = layer(x)
        kept = layer._bf16_of._value[0]
        assert torch.equal(layer(x), first) and layer._bf16_of._value[0] is kept  # made once
        layer.load_state_dict({"weight": -layer.weight, "bias": layer.bias})
        after = layer(x)
        expected = F.linear(x, layer.weight, layer.bias)
    assert layer._bf16_of._value[0] is not kept
    torch.testing.assert_close(after.float(), expected.float(), rtol=2**-7, atol=1e-2)


def test_torchs_product_elsewhere():
    """Few rows, gradients and fp16 autocast keep torch's own path (no kept copy)."""
    torch.manual_seed(0)
    layer = Linear(32, 48).eval()
    with torch.inference_mode(), bf16_autocast():
        few = torch.randn(ONEDNN_ROWS - 1, 32)
        assert torch.equal(layer(few), F.linear(few, layer.weight, layer.bias))
    x = torch.randn(ONEDNN_ROWS, 32)
    with bf16_autocast():
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))  # gradients recorded
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16):
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    assert layer._bf16_of._value is None
