"""Device follows the model: every technique keeps tensors on the model's device.

On CUDA (``@pytest.mark.gpu``, skipped without one) each family runs on a model moved to the GPU
and the model stays there; ``benchmarks/gpu/check.sh`` runs these on a lent GPU machine. On the
``meta`` device (shapes, no data) the techniques whose decisions need no values run on every CI, so
a tensor made on the CPU next to the model's shows up without a GPU. Data-dependent ones (scores
read with ``.item()``, k-means, SVD ranks) cannot run there and are covered by the CUDA tests.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nnshrink as ns

from .conftest import TinyConvNet

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _devices_of(model: nn.Module) -> set[str]:
    return {t.device.type for t in [*model.parameters(), *model.buffers()]}


META_CONFIGS = {
    "structured-random": lambda: ns.StructuredPruning(sparsity=0.5, criterion="random"),
    "compact-dwsep": lambda: ns.CompactReplace(block="dwsep"),
}


@pytest.mark.parametrize("name", sorted(META_CONFIGS))
def test_value_free_techniques_keep_the_model_on_the_meta_device(name):
    model = TinyConvNet().to("meta")
    dense = TinyConvNet()
    x = torch.zeros(2, 1, 28, 28, device="meta")
    ns.compress_(model, META_CONFIGS[name](), example_inputs=x, measure=False)
    assert _devices_of(model) == {"meta"}
    out = model(x)
    assert out.device.type == "meta" and out.shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in dense.parameters())


CONFIGS = {
    "magnitude": lambda: ns.MagnitudePruning(sparsity=0.5),
    "structured": lambda: ns.StructuredPruning(sparsity=0.5),
    "sharing": lambda: ns.WeightSharing(bits=3),
    "binary": lambda: ns.BinaryWeights(),
    "ternary": lambda: ns.Ternary(),
    "lowrank": lambda: ns.LowRank(method="tucker", rank="macs", macs_ratio=0.5),
    "ptq-fake": lambda: ns.PTQ(backend="fake"),
    "compact": lambda: ns.CompactReplace(block="dwsep"),
}


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_family_keeps_the_model_on_cuda(name):
    model = TinyConvNet().cuda().eval()
    x = torch.randn(4, 1, 28, 28, device="cuda")
    reference = copy.deepcopy(model)
    ns.compress_(model, CONFIGS[name](), example_inputs=x)
    assert _devices_of(model) == {"cuda"}
    with torch.no_grad():
        assert model(x).shape == reference(x).shape


@pytest.mark.gpu
@CUDA
def test_fit_and_evaluate_move_cpu_batches_to_the_model():
    model = TinyConvNet().cuda()
    data = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))) for _ in range(3)]
    ns.train.fit(model, data, epochs=1, lr=0.01, progress=False, amp="bf16")
    assert ns.train.evaluate(model, data)["samples"] == 24


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("generator_device", ["cpu", "cuda"])
def test_augment_jitters_cuda_images_with_either_generator(generator_device):
    images = torch.rand(16, 1, 28, 28, device="cuda")
    gen = torch.Generator(device=generator_device).manual_seed(0)
    out = ns.data.augment(images, gen, pad=2, flip=True)
    assert out.device.type == "cuda" and out.shape == images.shape
    # a shift moves pixels, never invents them: each output sums to at most its input's sum
    assert (out.sum((1, 2, 3)) <= images.sum((1, 2, 3)) + 1e-4).all()
