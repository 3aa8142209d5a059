"""Running recipes: stage checkpoints, reports, plots, resume after a kill."""

from __future__ import annotations

import json

import pytest
import torch

from nnshrink.io import load_checkpoint
from nnshrink.recipes import RecipeError, parse_recipe, run_recipe
from nnshrink.recipes import runner as runner_module

from ..conftest import needs_mnist

pytestmark = needs_mnist


def _quiet(*args, **kwargs):
    pass


def test_tiny_recipe_end_to_end(tmp_path, tiny_recipe):
    result = run_recipe(parse_recipe(tiny_recipe), tmp_path, progress=False, log=_quiet)
    labels = [r["label"] for r in result.rows]
    assert labels == ["original", "1:train", "2:prune", "3:finetune", "4:export", "5:evaluate"]
    rows = {r["label"]: r for r in result.rows}
    assert rows["1:train"]["top1"] > 0.5
    # the finetune stage kept the pruned zeros
    assert rows["3:finetune"]["nonzero_params"] == rows["2:prune"]["nonzero_params"]
    assert rows["2:prune"]["nonzero_params"] < 0.3 * rows["1:train"]["nonzero_params"]
    report = json.loads(result.report_json.read_text())
    assert report["environment"]["torch"] == torch.__version__
    export = report["stages"][3]["details"]
    assert export["max_abs_diff_vs_pytorch"] < 1e-4 and (tmp_path / "model.onnx").is_file()
    md = result.report_md.read_text()
    assert "| 2:prune |" in md and "per layer" in md and "accuracy_vs_size.png" in md
    assert (tmp_path / "accuracy_vs_size.png").is_file()
    for i, name in enumerate(["train", "prune", "finetune", "export", "evaluate"], start=1):
        assert (tmp_path / "stages" / f"{i:02d}-{name}.safetensors").is_file()


def test_resume_after_kill_redoes_nothing(tmp_path, tiny_recipe, monkeypatch):
    reference = run_recipe(parse_recipe(tiny_recipe), tmp_path / "ref", progress=False, log=_quiet)
    calls: list[int] = []
    original = runner_module._Run.run_stage

    def killing(self, index, stage, model, baseline):
        if index == 2 and not calls.count(-1):
            calls.append(-1)
            raise KeyboardInterrupt  # simulated kill during stage 3
        calls.append(index)
        return original(self, index, stage, model, baseline)

    monkeypatch.setattr(runner_module._Run, "run_stage", killing)
    recipe = parse_recipe(tiny_recipe)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, tmp_path / "run", progress=False, log=_quiet)
    assert calls == [0, 1, -1]
    with pytest.raises(RecipeError, match="--resume"):
        run_recipe(recipe, tmp_path / "run", progress=False, log=_quiet)
    result = run_recipe(recipe, tmp_path / "run", resume=True, progress=False, log=_quiet)
    assert calls == [0, 1, -1, 2, 3, 4]  # stages 1 and 2 were not redone
    final, _ = load_checkpoint(tmp_path / "run" / "stages" / "05-evaluate.safetensors")
    ref_final, _ = load_checkpoint(tmp_path / "ref" / "stages" / "05-evaluate.safetensors")
    for (k, a), b in zip(final.state_dict().items(), ref_final.state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["top1"] for r in result.rows] == [r["top1"] for r in reference.rows]


def test_resume_with_another_recipe_is_refused(tmp_path, tiny_recipe):
    tiny_recipe["stages"] = tiny_recipe["stages"][:1]
    run_recipe(parse_recipe(tiny_recipe), tmp_path, progress=False, log=_quiet)
    tiny_recipe["seed"] = 4
    with pytest.raises(RecipeError, match="different recipe"):
        run_recipe(parse_recipe(tiny_recipe), tmp_path, resume=True, progress=False, log=_quiet)


def test_shipped_smoke_preset_runs_end_to_end(tmp_path):
    from nnshrink.recipes import load_recipe
    from nnshrink.storage import load

    result = run_recipe(load_recipe("smoke-lenet300"), tmp_path, progress=False, log=_quiet)
    rows = {r["stage"]: r for r in result.rows}
    assert rows["encode"]["size_bytes"] == (tmp_path / "model.nns").stat().st_size
    assert rows["encode"]["compression"] > 10
    assert rows["encode"]["top1"] > 0.6
    model = load(tmp_path / "model.nns")
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.8, abs=0.01)  # 80 % of all weights, one threshold
    assert (tmp_path / "model.onnx").is_file()


def test_distill_and_structured_prune_stages(tmp_path, tiny_recipe):
    tiny_recipe["model"] = {"name": "lenet5"}
    tiny_recipe["stages"] = [
        {"train": {"epochs": 1}},
        {"prune": {"type": "structured-pruning", "sparsity": 0.5}},
        {"distill": {"teacher": "baseline", "method": "kd", "epochs": 1}},
    ]
    result = run_recipe(parse_recipe(tiny_recipe), tmp_path, progress=False, log=_quiet)
    rows = {r["stage"]: r for r in result.rows}
    assert rows["prune"]["params"] < 0.6 * rows["train"]["params"]
    assert rows["prune"]["macs"] < rows["train"]["macs"]
    assert rows["distill"]["params"] == rows["prune"]["params"]
    assert rows["distill"]["top1"] > 0.5
    report = json.loads(result.report_json.read_text())
    assert len(report["stages"][2]["details"]["history"]) == 1
    assert (tmp_path / "stages" / "baseline.safetensors").is_file()


def test_slimming_with_input_pruning_stages(tmp_path, tiny_recipe):
    tiny_recipe["model"] = {"name": "mlp", "kwargs": {"batch_norm": True}}
    tiny_recipe["stages"] = [
        {"train": {"epochs": 1, "bn_l1": 1e-3, "input_group_lasso": 1e-3}},
        {"prune": {"type": "structured-pruning", "sparsity": 0.6, "criterion": "bn_scale"}},
        {"prune": {"type": "input-pruning", "keep": 400}},
        {"finetune": {"epochs": 1, "lr": 0.005, "optimizer": "sgd"}},
        {"export": {}},
    ]
    result = run_recipe(parse_recipe(tiny_recipe), tmp_path, progress=False, log=_quiet)
    rows = {r["label"]: r for r in result.rows}
    # 784-500-300-10 -> 400-200-120-10: 106,170 parameters of 547,410
    assert rows["3:prune"]["params"] == 400 * 200 + 200 + 2 * 200 + 200 * 120 + 120 + 2 * 120 + 1210
    assert rows["4:finetune"]["top1"] > 0.5
    report = json.loads(result.report_json.read_text())
    assert report["stages"][2]["details"]["result"]["features_after"] == 400
    assert report["stages"][4]["details"]["max_abs_diff_vs_pytorch"] < 1e-4
    model, _ = load_checkpoint(tmp_path / "stages" / "04-finetune.safetensors")
    assert model[1][1].in_features == 400


def test_export_of_int8_model_writes_the_int8_graph(tmp_path, tiny_recipe):
    tiny_recipe["stages"] = [
        {"train": {"epochs": 1}},
        {"quantize": {"type": "ptq", "backend": "onnxruntime", "calibration_batches": 2}},
        {"export": {"format": "onnx"}},
    ]
    result = run_recipe(parse_recipe(tiny_recipe), tmp_path, progress=False, log=_quiet)
    report = json.loads(result.report_json.read_text())
    export = report["stages"][2]["details"]
    onnx_file = tmp_path / "model.onnx"
    assert export["int8"] and export["file_bytes"] == onnx_file.stat().st_size
    import onnx

    ops = {node.op_type for node in onnx.load(str(onnx_file)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops  # the int8 QDQ graph, not fp32


def test_eval_split_val_trains_on_the_rest_and_measures_on_val(tmp_path, tiny_recipe):
    from nnshrink.data import loader
    from nnshrink.train import evaluate

    tiny_recipe["data"] = {"name": "mnist", "batch_size": 64, "eval_split": "val",
                           "val_size": 300}  # fmt: skip
    tiny_recipe["stages"] = [{"prune": {"type": "test-zero-smallest", "fraction": 0.5}}]
    recipe = parse_recipe(tiny_recipe)
    run = runner_module._Run(recipe, tmp_path, False, _quiet)
    # training and calibration data: every training sample but the last 300; top-1: those 300
    assert run.train_loader.num_samples == 60_000 - 300
    assert run.test_loader.num_samples == 300
    assert torch.equal(run.test_loader.labels, loader("mnist", "train").labels[-300:])
    result = run_recipe(recipe, tmp_path / "run", progress=False, log=_quiet)
    assert result.rows[-1]["top1"] == pytest.approx(
        evaluate(result.model, loader("mnist", "val", 1000, val_size=300))["top1"]
    )
    assert json.loads(result.report_json.read_text())["eval_split"] == "val"
    assert "validation split" in result.report_md.read_text()
    # with a train_limit the first samples are used, as before
    tiny_recipe["data"]["train_limit"] = 512
    run = runner_module._Run(parse_recipe(tiny_recipe), tmp_path / "b", False, _quiet)
    assert run.train_loader.num_samples == 512


def test_python_caller_runs_a_recipe_on_their_own_model_and_loaders(tmp_path):
    from tests.usercode import make_data, make_model

    train, test = make_data(batch_size=32)
    model = make_model(width=16)
    recipe = parse_recipe({
        "stages": [
            {"train": {"epochs": 4, "lr": 0.01}},
            {"structured-pruning": {"sparsity": 0.5}},
            {"finetune": {"epochs": 4, "lr": 0.01}},
        ],
        "measure": {"latency": False},
    })  # fmt: skip
    final = tmp_path / "pruned.safetensors"
    result = run_recipe(recipe, tmp_path / "run", model=model, data=(train, test),
                        progress=False, log=_quiet, final_path=final)  # fmt: skip
    rows = {r["label"]: r for r in result.rows}
    assert result.model is model  # the user's module was edited in place
    assert (
        model.head.in_features == 8
        and rows["2:structured-pruning"]["params"] < rows["1:train"]["params"]
    )
    assert rows["3:finetune"]["top1"] > 0.9 and rows["1:train"]["top1"] > 0.9
    assert rows["3:finetune"]["size_bytes"] == final.stat().st_size  # the file written
    assert rows["original"]["size_kind"] == "file"


def test_recipe_names_user_factories_and_metric(tmp_path):
    source = {
        "model": {"factory": "tests.usercode:make_model", "kwargs": {"width": 8}},
        "data": {"factory": "tests.usercode:make_data", "batch_size": 32},
        "metric": "tests.usercode:error_rate",
        "device": "cpu",
        "measure": {"latency": False},
        "stages": [{"train": {"epochs": 3, "lr": 0.01}}, {"magnitude-pruning": {"sparsity": 0.5}}],
    }
    result = run_recipe(parse_recipe(source), tmp_path, progress=False, log=_quiet)
    assert [r["label"] for r in result.rows] == ["original", "1:train", "2:magnitude-pruning"]
    assert result.task.headline == "error" and result.rows[1]["error"] < result.rows[0]["error"]
    report = json.loads(result.report_json.read_text())
    assert report["metric"] == {"name": "tests.usercode:error_rate", "headline": "error",
                                "higher_is_better": False} and report["device"] == "cpu"  # fmt: skip
    assert "| stage | error |" in result.report_md.read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"factory": "tests.nowhere:make"}}, "cannot import 'tests.nowhere'"),
        ({"model": {"factory": "tests.usercode:not_a_model"}}, "not an nn.Module"),
        ({"data": {"factory": "tests.usercode:bad_data"}}, r"\(train, test\)"),
        ({"device": "cuda:7"} if not torch.cuda.is_available() else {"device": "tpu"}, "device"),
    ],
)
def test_bad_references_fail_before_anything_is_written(tmp_path, change, message):
    source = {
        "model": {"factory": "tests.usercode:make_model"},
        "data": {"factory": "tests.usercode:make_data"},
        "stages": [{"train": {"epochs": 1}}],
        **change,
    }
    with pytest.raises(RecipeError, match=message):
        run_recipe(parse_recipe(source), tmp_path / "out", progress=False, log=_quiet)
    assert not (tmp_path / "out").exists()


def test_stage_speedups_are_timed_interleaved_with_the_baseline(tmp_path, monkeypatch):
    # the original row is timed once at the start; a later stage's speed-up is the ratio of an
    # interleaved pair (baseline, stage model), which the fake below fixes at 3.0 / 1.5 ms
    from nnshrink.metrics import latency as latency_module

    paired = []

    def fake_interleaved(fns, *, rounds, runs, warmup=3, seed=0):
        paired.append(sorted(fns))
        return {"reference": {"median": 3.0, "p10": 3.0}, "model": {"median": 1.5, "p10": 1.5}}

    monkeypatch.setattr(latency_module, "interleaved", fake_interleaved)
    recipe = {
        "name": "paired",
        "model": {"factory": "tests.usercode:make_model", "kwargs": {"width": 16}},
        "data": {"factory": "tests.usercode:make_data", "batch_size": 16},
        "measure": {"latency": True, "runs": 3, "batch_size": 4},
        "stages": [{"train": {"epochs": 1, "lr": 0.01}},
                   {"structured-pruning": {"sparsity": 0.5}}],
    }  # fmt: skip
    result = run_recipe(parse_recipe(recipe), tmp_path, progress=False, log=_quiet)
    rows = {r["stage"]: r for r in result.rows}
    assert rows["structured-pruning"]["speedup"] == 2.0
    assert rows["structured-pruning"]["speedup_onnx"] == 2.0
    assert paired == [["model", "reference"]] * 2  # eager, then ONNX Runtime
    # before any technique there is no baseline yet: the ratio to the original row stays
    train = rows["train"]
    assert train["speedup"] == pytest.approx(rows["original"]["latency_ms"] / train["latency_ms"])
