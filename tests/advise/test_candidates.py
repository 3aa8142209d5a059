"""The candidate generator: priors per budget type, and every candidate is a valid recipe."""

from __future__ import annotations

import pytest
from torch import nn

from nnshrink.advise import Budget, Candidate, Measurement, ModelTraits, generate, model_traits
from nnshrink.advise.advisor import candidate_recipe
from nnshrink.advise.candidates import estimate_share_bytes, gentlest_fitting, interleave
from nnshrink.advise.measure import LayerTime
from nnshrink.io import save_checkpoint
from nnshrink.models import create
from nnshrink.recipes import parse_recipe

BASE = Measurement(score=0.99, bytes=1_700_000, latency_ms=1.0, macs=2_300_000)
CNN = ModelTraits(params=430_000, has_conv=True, has_linear=True, conv_time_share=0.6)
MLP = ModelTraits(params=266_000, has_conv=False, has_linear=True, conv_time_share=0.0)


def _kinds(c: Candidate) -> list[str]:
    return [next(iter(s)) for s in c.stages]


def _types(c: Candidate) -> set[str]:
    return {body["type"] for s in c.stages for body in s.values() if "type" in body}


def test_storage_bound_proposes_deep_compression_and_fits_the_estimate():
    cands = generate(Budget(max_bytes=60_000), BASE, CNN)
    assert cands and all(c.family in ("prune-share", "share", "int8") for c in cands)
    deep = [c for c in cands if c.family == "prune-share"]
    assert deep and all(_kinds(c)[-1] == "encode" and "weight-sharing" in _types(c) for c in deep)
    assert all("finetune" in _kinds(c) for c in deep)
    for c in deep:  # the gentlest sparsity per bit width that the estimate allows
        s = max(b["sparsity"] for st in c.stages for b in st.values() if "sparsity" in b)
        bits = next(b["bits"] for st in c.stages for b in st.values() if "bits" in b)
        assert estimate_share_bytes(CNN.params, s, bits) <= 60_000
    assert "int8-ptq" not in [c.name for c in cands]  # 4x cannot reach 28x
    assert "int8-ptq" in [c.name for c in generate(Budget(max_bytes=500_000), BASE, CNN)]


def test_latency_bound_proposes_structural_methods_and_int8_only_for_onnxruntime():
    ort = generate(Budget(max_latency_ms=0.5), BASE, CNN)
    families = {c.family for c in ort}
    assert {"structured", "low-rank", "compact", "int8", "structured+int8"} <= families
    kd = [c for c in ort if _kinds(c)[-1] == "distill"]
    # never after unstructured pruning (structured-c16: the same, channels in multiples of 16)
    assert kd and all(c.family.startswith("structured") for c in kd)
    eager = generate(Budget(max_latency_ms=0.5, runtime="eager"), BASE, CNN)
    assert not any("ptq" in _types(c) for c in eager)
    macs = generate(Budget(max_macs=1_000_000), BASE, MLP)
    assert not any("ptq" in _types(c) for c in macs)  # int8 does not reduce MACs
    assert any(c.stages[0]["decompose"]["method"] == "svd" for c in macs if c.family == "low-rank")
    assert not any(c.family == "compact" for c in macs)  # no convolutions to replace


def test_no_finetune_uses_only_data_free_methods():
    budget = Budget(max_bytes=400_000, max_latency_ms=0.5, finetune=False)
    cands = generate(budget, BASE, CNN)
    assert cands
    for c in cands:
        assert not c.trains
        assert _types(c) <= {"ptq", "low-rank", "weight-sharing"}


def test_impossible_budget_still_offers_the_strongest_candidate():
    cands = generate(Budget(max_bytes=10), BASE, CNN)
    assert [c.family for c in cands] == ["prune-share"]


@pytest.mark.parametrize(
    "budget",
    [Budget(max_bytes=60_000), Budget(max_latency_ms=0.4), Budget(max_macs=800_000),
     Budget(max_bytes=300_000, max_latency_ms=0.5, finetune=False)],
)  # fmt: skip
def test_every_candidate_is_a_valid_recipe(tmp_path, budget):
    model = create("lenet5")
    save_checkpoint(model, tmp_path / "baseline.safetensors")
    for c in generate(budget, BASE, CNN):
        source = candidate_recipe(c, data={"name": "mnist", "batch_size": 32, "limit": None},
                                  seed=0, budget=budget, train_limit=128, latency=False)  # fmt: skip
        recipe = parse_recipe(source, base_dir=tmp_path)
        assert len(recipe.stages) == len(c.stages)
        assert recipe.data == {"name": "mnist", "batch_size": 32, "train_limit": 128}


def test_model_traits(tiny_convnet, tiny_mlp):
    rows = [LayerTime("conv1", "Conv2d", 3.0, 0.6), LayerTime("fc", "Linear", 1.0, 0.2)]
    t = model_traits(tiny_convnet, rows)
    assert t.has_conv and t.has_linear and t.conv_time_share == pytest.approx(0.75)
    assert t.params == sum(p.numel() for p in tiny_convnet.parameters())
    m = model_traits(tiny_mlp)
    assert not m.has_conv and m.conv_time_share == 0.0
    assert not model_traits(nn.Sequential(nn.Conv2d(3, 3, 1))).has_conv  # 1x1 only


def test_estimate_is_monotonic():
    sizes = [estimate_share_bytes(10**5, s, 4) for s in (0.5, 0.9, 0.99)]
    assert sizes == sorted(sizes, reverse=True)
    assert estimate_share_bytes(10**5, 0.9, 3) < estimate_share_bytes(10**5, 0.9, 8)


def test_interleave_is_round_robin_over_families():
    cands = [Candidate(n, f, ()) for n, f in (("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c"))]
    order = interleave(cands, {"a1": 0.9, "a2": 0.8, "b1": 0.5, "c1": 0.7})
    assert [c.name for c in order] == ["a1", "c1", "b1", "a2"]


def test_with_epochs_scales_only_training_stages():
    c = generate(Budget(max_bytes=60_000), BASE, CNN)[0]
    scaled = c.with_epochs(3)
    for a, b in zip(c.stages, scaled.stages):
        ((name, body),) = a.items()
        if name in ("finetune", "distill"):
            assert b[name]["epochs"] == 3 * body["epochs"] and b[name]["lr"] == body["lr"]
        else:
            assert b == a
    assert c.with_epochs(1) is c


def test_storage_sparsity_from_a_measuring_probe():
    calls = []

    def probe(stages):  # a fake file size: 100 KB dense, shrinking with sparsity and bits
        calls.append(stages)
        s = max([b["sparsity"] for st in stages for b in st.values() if "sparsity" in b] or [0])
        bits = next(b["bits"] for st in stages for b in st.values() if "bits" in b)
        return Measurement(bytes=int(100_000 * (1 - s) * bits / 8))

    cands = generate(Budget(max_bytes=5_000), BASE, CNN, probe=probe)
    by_bits = {}
    for c in cands:
        if c.family in ("prune-share", "share"):
            bits = next(b["bits"] for st in c.stages for b in st.values() if "bits" in b)
            s = max([b["sparsity"] for st in c.stages for b in st.values() if "sparsity" in b]
                    or [0])  # fmt: skip
            by_bits.setdefault(bits, []).append(s)
    # 8 bits: 100 KB * (1 - s) <= 4,850 first holds at s = 0.96 (0.95 gives 5,000)
    assert by_bits[8] == [0.96, 0.97]
    assert by_bits[2] == [0.85, 0.9]  # 25 KB * (1 - s) <= 4,850 -> s >= 0.806
    assert len(calls) < 6 * 16  # bisection, not a full scan


def test_gentlest_fitting():
    values = [0.1 * i for i in range(10)]
    for k in range(10):
        assert gentlest_fitting(values, lambda v, k=k: v >= 0.1 * k - 1e-9) == k
    assert gentlest_fitting(values, lambda v: False) is None
    assert gentlest_fitting([], lambda v: True) is None


def test_speed_strengths_from_a_measuring_probe():
    def probe(stages):  # fake MACs: channels kept squared; low-rank keeps its MAC ratio
        ((name, body),) = stages[0].items()
        if name == "prune":
            return Measurement(macs=int(BASE.macs * (1 - body["ratio"]) ** 2))
        if name == "decompose":
            return Measurement(macs=int(BASE.macs * body["macs_ratio"]))
        return None

    budget = Budget(max_macs=int(0.2 * BASE.macs))
    cands = generate(budget, BASE, CNN, probe=probe)
    ratios = sorted({b["ratio"] for c in cands for st in c.stages for b in st.values()
                     if b.get("type") == "structured-pruning"})  # fmt: skip
    assert ratios == [0.6, 0.7, 0.8]  # (1 - 0.6)^2 = 0.16 <= 0.2 < 0.25 = (1 - 0.5)^2
    low = sorted({b["macs_ratio"] for c in cands for st in c.stages for b in st.values()
                  if b.get("type") == "low-rank"})  # fmt: skip
    assert low == [0.15]  # 0.25 > 0.2: only the strongest of the grid fits
    # nothing fits: the strongest setting is still offered
    none = generate(Budget(max_macs=10), BASE, CNN, probe=probe)
    assert {b["ratio"] for c in none for st in c.stages for b in st.values()
            if b.get("type") == "structured-pruning"} == {0.8}  # fmt: skip


def test_onnxruntime_latency_candidates_keep_channels_in_the_cpu_block():
    from nnshrink.metrics.latency import channel_block

    def structural(cands):
        return [body for c in cands for s in c.stages for body in s.values()
                if body.get("type") in ("structured-pruning", "low-rank")]  # fmt: skip

    cands = generate(Budget(max_latency_ms=0.5), BASE, CNN)
    ort = structural(cands)
    # both variants, measured side by side: exact counts, and multiples of the block
    assert {body.get("round_to") for body in ort} == {None, channel_block()}
    assert channel_block() in (8, 16)
    rounded = [c for c in cands if c.name.endswith(f"-c{channel_block()}-ft")]
    assert rounded and all(c.family.endswith(f"-c{channel_block()}") for c in rounded)
    # eager, or a MAC budget: no rounding (it would only take away choices)
    for budget in (Budget(max_latency_ms=0.5, runtime="eager"), Budget(max_macs=800_000)):
        assert all("round_to" not in body for body in structural(generate(budget, BASE, CNN)))


def test_depth_candidates_for_models_with_residual_blocks(tmp_path):
    import torch

    model = create("resnet20", in_channels=1, input_size=28)
    traits = model_traits(model, (), torch.zeros(1, 1, 28, 28))
    assert traits.residual_blocks == 7
    assert model_traits(model).residual_blocks == 0  # not counted without inputs

    def probe(stages):  # fake latency: each removed block saves 1/8, half the channels 1/2,
        left = 1.0  # int8 divides by 1.6
        for s in stages:
            body = s.get("prune", s.get("quantize", {}))
            if body.get("type") == "block-pruning":
                left -= body["remove"] / 8
            elif body.get("type") == "structured-pruning":
                left *= 1 - body["ratio"]
            elif body.get("type") == "ptq":
                left /= 1.6
        return Measurement(latency_ms=BASE.latency_ms * left, macs=BASE.macs)

    budget = Budget(max_latency_ms=0.5 * BASE.latency_ms)
    cands = generate(budget, BASE, traits, probe=probe)
    depth = {c.name: c for c in cands if c.family.startswith("depth")}
    # 4 of 8 removed is the first that fits alone; with half the channels one (the least) does;
    # before int8 (0.5 * 1.6 = 0.8 of the time left): 2
    assert set(depth) == {"depth4-kd", "depth5-kd", "depth1-struct0.5-kd", "depth2-kd-int8"}
    assert all(_kinds(c)[-1] == "distill" for c in depth.values() if c.family != "depth+int8")
    assert _kinds(depth["depth2-kd-int8"]) == ["prune", "distill", "quantize"]
    eager = generate(Budget(max_latency_ms=0.5, runtime="eager"), BASE, traits, probe=probe)
    assert not any(c.family == "depth+int8" for c in eager)  # int8 only where ORT runs it
    save_checkpoint(model, tmp_path / "baseline.safetensors")
    for c in depth.values():
        source = candidate_recipe(c, data={"name": "mnist", "batch_size": 32, "limit": None},
                                  seed=0, budget=budget, train_limit=128, latency=False)  # fmt: skip
        assert len(parse_recipe(source, base_dir=tmp_path).stages) == len(c.stages)
    # no residual blocks, or no fine-tuning data: no depth candidates
    assert not any(c.family.startswith("depth") for c in generate(budget, BASE, CNN, probe=probe))
    nofit = generate(Budget(max_latency_ms=0.5, finetune=False), BASE, traits, probe=probe)
    assert not any(c.family.startswith("depth") for c in nofit)
