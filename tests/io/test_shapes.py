"""Checks before allocation: meta/fake builds, signature comparison, module cap, budgets."""

from __future__ import annotations

import tracemalloc

import pytest
import torch
from torch import nn

from nnshrink.binary import TernaryLinear
from nnshrink.io import ArchitectureError, budget_for, check_build, checked_build
from nnshrink.io.shapes import (
    MIN_BUDGET,
    _factory_numel,
    budgeted_build,
    compare,
    module_limit,
    signature,
    state_bytes,
)
from nnshrink.sharing.circulant import CirculantLinear


def test_huge_layer_is_refused_before_allocation():
    stored = signature(nn.Linear(4, 3))
    with torch.device("meta"):
        nn.Linear(1, 1)  # warm up torch's meta machinery outside the measurement
    tracemalloc.start()
    try:
        with pytest.raises(ArchitectureError, match="stored shape"):
            checked_build(lambda: nn.Linear(10**6, 10**6), stored, budget_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # a real build would take 4 TB


def test_consistent_but_oversized_claim_is_refused():
    """Shapes that match the stored ones but exceed the budget (e.g. non-persistent buffers)."""
    model = CirculantLinear(64, 64)
    with pytest.raises(ArchitectureError, match="more than the file justifies"):
        checked_build(lambda: CirculantLinear(64, 64), signature(model), budget_bytes=100)
    assert state_bytes(model) == (64 + 64 + 64) * 4  # r, bias, and the non-persistent signs


def test_constructors_that_compute_constants_run_on_meta():
    with pytest.raises(RuntimeError, match="meta"):
        with torch.device("meta"):
            CirculantLinear(8, 8)  # int(mix32(torch.tensor(seed))) in __init__
    probe = check_build(lambda: CirculantLinear(10**7, 10**7), max_modules=10)
    assert probe.r.shape == (10**7,) and probe.r.device.type == "meta"
    assert probe.signs.device.type == "meta"  # only the scalar seed was made on the CPU
    built = checked_build(lambda: CirculantLinear(8, 4), signature(CirculantLinear(8, 4)),
                          budget_bytes=1 << 20)  # fmt: skip
    assert built.r.device.type == "cpu"


def test_module_cap_stops_runaway_builders():
    def many():
        return nn.Sequential(*[nn.ReLU() for _ in range(1_000)])

    with pytest.raises(ArchitectureError, match="more than 100 submodules"):
        check_build(many, max_modules=100)
    with module_limit(5):
        nn.Sequential(nn.ReLU(), nn.ReLU())  # under the cap: fine


def test_untrusted_builder_errors_become_architecture_errors():
    def broken():
        raise RuntimeError("boom")

    with pytest.raises(ArchitectureError, match="cannot build the architecture.*boom"):
        checked_build(broken, {}, budget_bytes=1)
    with pytest.raises(ArchitectureError, match="returned int"):
        check_build(lambda: 3, max_modules=1)
    with pytest.raises(RuntimeError, match="boom"):  # the user's own code: their traceback
        checked_build(broken, {}, budget_bytes=1, trusted=True)


def test_compare_names_shapes_and_dtypes():
    lin = signature(nn.Linear(3, 2))
    compare(lin, {k: (s, torch.float16) for k, (s, _) in lin.items()})  # floats cast on load
    with pytest.raises(ArchitectureError, match=r"missing \['bias'\]"):
        compare(lin, {"weight": lin["weight"]})
    with pytest.raises(ArchitectureError, match="stored shape"):
        compare(lin, {**lin, "weight": ((2, 4), torch.float32)})
    bn = signature(nn.BatchNorm1d(2))
    with pytest.raises(ArchitectureError, match="num_batches_tracked: stored dtype torch.float32"):
        compare(bn, {**bn, "num_batches_tracked": ((), torch.float32)})


def test_half_precision_files_rebuild_in_half():
    stored = {k: (s, torch.float16) for k, (s, _) in signature(nn.Linear(3, 2)).items()}
    model = checked_build(lambda: nn.Linear(3, 2), stored, budget_bytes=1 << 10)
    assert model.weight.dtype == torch.float16


def test_budget():
    assert budget_for(10) == MIN_BUDGET
    assert budget_for(1 << 20, max_expansion=2) == MIN_BUDGET
    assert budget_for(100 << 20, max_expansion=2) == 200 << 20
    with pytest.raises(ValueError, match="max_expansion"):
        budget_for(1, max_expansion=0)


def test_data_dependent_constructors_get_a_budgeted_real_build():
    """TTQ initialises its scales from the weights' values: no meta build, a bounded real one."""
    stored = signature(TernaryLinear(6, 4, mode="ttq"))
    model = checked_build(lambda: TernaryLinear(6, 4, mode="ttq"), stored, budget_bytes=1 << 20)
    assert model.weight.device.type == "cpu" and model.wp.shape == ()
    with pytest.raises(ArchitectureError, match="would allocate more than the file justifies"):
        checked_build(lambda: TernaryLinear(10**5, 10**5, mode="ttq"), stored, budget_bytes=1 << 20)
    with pytest.raises(ArchitectureError, match="would allocate more"):
        budgeted_build(lambda: nn.Linear(10**6, 10**6), max_modules=10, budget_bytes=1 << 20)


@pytest.mark.parametrize(
    "call, numel",
    [((torch.empty, (3, 4), {}), 12), ((torch.zeros, ((3, 4),), {}), 12),
     ((torch.ones, (), {"size": (5,)}), 5), ((torch.full, ((2, 3), 1.0), {}), 6),
     ((torch.arange, (10,), {}), 11), ((torch.arange, (2, 10, 2), {}), 5),
     ((torch.randint, (0, 5, (4, 4)), {}), 16), ((torch.linspace, (0, 1, 7), {}), 7),
     ((torch.eye, (3,), {}), 9), ((torch.randperm, (8,), {}), 8), ((torch.relu, (1,), {}), None),
     ((torch.Tensor.new_zeros, (torch.ones(1), 3, 4), {}), 12),
     ((torch.Tensor.new_empty, (torch.ones(1), (5, 2)), {}), 10),
     ((torch.Tensor.new_full, (torch.ones(1), (2, 2), 1.0), {}), 4)],
)  # fmt: skip
def test_factory_sizes_are_known_before_allocation(call, numel):
    func, args, kwargs = call
    assert _factory_numel(func, args, kwargs) == numel
    if numel is not None:  # never under: the count bounds the real allocation
        assert func(*args, **kwargs).numel() <= numel
