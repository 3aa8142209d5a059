import copy

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.data import TensorLoader
from nnshrink.sharing import FINETUNE_LR, WeightSharing, finetune_shared
from nnshrink.train import evaluate, fit
from tests.conftest import needs_mnist


def _task(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = (x[:, 0, :14].mean((1, 2)) > 0).long()
    return TensorLoader(x, y, 64, shuffle=True, seed=seed)


def _pruned_shared_model():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32),
                          nn.ReLU(), nn.Linear(32, 2))  # fmt: skip
    with torch.no_grad():
        model[5].weight[model[5].weight.abs() < 0.05] = 0  # a pruned layer left unshared
    ns.compress_(model, WeightSharing(bits=3, exclude=("5",)))
    return model


def test_indices_masks_and_pruned_plain_weights_survive_and_loss_drops():
    model = _pruned_shared_model()
    zeros = model[5].weight == 0
    indices = model[1].indices.clone()
    codebook = model[1].codebook.detach().clone()
    data = _task()
    loss_before = evaluate(model, data)["loss"]
    history = finetune_shared(model, data, epochs=3, lr=1e-3)
    assert len(history.epochs) == 3 and history.epochs[0]["lr"] < 1e-3  # cosine from 1e-3
    assert evaluate(model, data)["loss"] < loss_before
    assert torch.equal(model[1].indices, indices)
    assert not torch.equal(model[1].codebook, codebook)  # the shared values did train
    assert torch.all(model[5].weight[zeros] == 0)  # KeepZeros on the plain pruned layer
    assert model[1].weight.unique().numel() <= 8


def test_default_lr_and_clear_error_without_shared_layers():
    assert FINETUNE_LR == 1e-4
    with pytest.raises(ValueError, match="WeightSharing"):
        finetune_shared(ns.models.create("lenet300"), _task(64), epochs=1)


def test_a_failed_run_leaves_the_model_bit_identical():
    model = _pruned_shared_model()
    before = copy.deepcopy(model.state_dict())
    x = torch.full((64, 1, 28, 28), float("nan"))
    with pytest.raises(FloatingPointError):
        finetune_shared(model, TensorLoader(x, torch.zeros(64, dtype=torch.long), 32), epochs=1)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@needs_mnist
@pytest.mark.slow
def test_kmeans_4_bits_and_one_epoch_keep_lenet300_within_half_a_point():
    torch.manual_seed(0)
    train = ns.data.loader("mnist", "train", 128, train=True, seed=0, limit=20_000)
    test = ns.data.loader("mnist", "test", 1000)
    model = ns.models.create("lenet300")
    fit(model, train, epochs=1, lr=0.05, optimizer="sgd", weight_decay=1e-4, progress=False)
    dense = evaluate(model, test)["top1"]
    ns.compress_(model, WeightSharing(bits=4))
    finetune_shared(model, train, epochs=1)
    shared = evaluate(model, test)["top1"]
    assert dense > 0.93  # it did learn
    assert shared >= dense - 0.005, (dense, shared)


@pytest.fixture(autouse=True)
def _one_thread():
    # training-heavy tests: one thread is several times faster than two on a loaded machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
