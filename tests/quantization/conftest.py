"""Shared fixtures of the quantization tests: artefacts that take seconds to build, built once."""

import pytest
import torch

import nnshrink as ns
from nnshrink.quantization import PTQ


@pytest.fixture(scope="session")
def auto_int8():
    """TinyConvNet through ``compress_(PTQ(batch_sizes=(1, 4)))``: ``(model, original bn1,
    batches, fp32 output, result)``. Tests read it; none may edit it."""
    from tests.conftest import TinyConvNet

    torch.manual_seed(0)
    model = TinyConvNet().eval()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(8, 1, 28, 28, generator=g) for _ in range(3)]
    ref = model(batches[0]).detach()
    bn = model.bn1
    result = ns.compress_(model, PTQ(batch_sizes=(1, 4)), example_inputs=batches)
    return model, bn, batches, ref, result
