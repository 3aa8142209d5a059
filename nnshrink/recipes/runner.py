"""Run a recipe: stages in order, a checkpoint after each, resumable, with a report and plots.

Handler convention: a technique handler edits the model in place; if it returns an
``nn.Module`` (e.g. a converted int8 runtime module) the runner continues with that module.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.registry import compress_
from ..data import DataNotFoundError, input_shape, loader
from ..data.datasets import VAL_SIZE
from ..io import ArchitectureError, load_checkpoint, save_checkpoint
from ..metrics import file_bytes, snapshot
from ..models import create
from ..pruning import BNSlimmingCallback, GroupLassoCallback, input_layer
from ..train import Callback, KeepZeros, barrier, fit, init_distributed, is_main_process, wrap_ddp
from ..utils import atomic_write_bytes, environment, seed_everything
from .schema import TECHNIQUE_STAGES, Recipe, RecipeError, Stage, TrainStage

ROW_KEYS = ("params", "nonzero_params", "macs", "size_bytes", "file_bytes", "latency_ms",
            "latency_onnx_ms", "top1", "top5", "loss")  # fmt: skip


@dataclasses.dataclass
class RunResult:
    """What :func:`run_recipe` produced."""

    model: nn.Module
    rows: list[dict[str, Any]]
    out_dir: Path
    report_json: Path
    report_md: Path


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _json_safe(dataclasses.asdict(value))
    if hasattr(value, "to_dict"):
        return _json_safe(value.to_dict())
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 64 else f"tensor{tuple(value.shape)}"
    return str(value)


def _without_model(result: Any) -> Any:
    """Handler results may carry the model itself; keep only the report part."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)
                if not isinstance(getattr(result, f.name), nn.Module)}  # fmt: skip
    return result


class _Run:
    def __init__(self, recipe: Recipe, out_dir: Path, progress: bool, log) -> None:
        self.recipe = recipe
        self.out = out_dir
        self.progress = progress
        self.log = log
        data = recipe.data
        measure = recipe.measure
        self.threads = int(measure.get("threads", 2))
        self.latency = bool(measure.get("latency", True))
        self.runs = int(measure.get("runs", 30))
        self.latency_batch = int(measure.get("batch_size", 1))
        # Under torchrun every rank runs the recipe; training data is sharded by rank,
        # gradients are averaged by DDP, and only rank 0 writes files.
        self.dist = init_distributed()
        # eval_split "val": measure on the last val_size training samples, train on the rest
        val = data.get("eval_split", "test") == "val"
        split = {"holdout": data.get("val_size", VAL_SIZE)} if val else {}
        self.eval_split = "val" if val else "test"
        try:
            self.train_loader = loader(
                data["name"], "train", data.get("batch_size", 128), train=True,
                root=data.get("root"), seed=recipe.seed, limit=data.get("train_limit"),
                rank=self.dist.rank, world_size=self.dist.world_size, **split,
            )  # fmt: skip
            self.test_loader = loader(
                data["name"], self.eval_split, 1000, root=data.get("root"),
                limit=data.get("limit"), val_size=data.get("val_size", VAL_SIZE),
            )  # fmt: skip
            calib = loader(data["name"], "train", data.get("batch_size", 128), root=data.get("root"),
                           limit=data.get("train_limit"), **split)  # fmt: skip
        except (DataNotFoundError, ValueError) as exc:  # ValueError: val_size >= training set
            raise RecipeError(f"data: {exc}") from None
        self.example_batch = next(iter(calib))[0]
        self.latency_input = torch.zeros(self.latency_batch, *input_shape(data["name"]))

    # -- model -----------------------------------------------------------------------------
    def initial_model(self) -> nn.Module:
        spec = self.recipe.model
        if "checkpoint" in spec:
            model, _ = load_checkpoint(spec["checkpoint"])
            return model
        c, h, _ = input_shape(self.recipe.data["name"])
        kwargs = {"in_channels": c, "input_size": h, **spec.get("kwargs", {})}
        return create(spec["name"], **kwargs)

    def measure(self, model: nn.Module, label: str, extra: dict[str, Any]) -> dict[str, Any]:
        stats = snapshot(
            model, self.latency_input, self.test_loader, latency=self.latency,
            threads=self.threads, runs=self.runs,
        )  # fmt: skip
        row = {"label": label, **{k: stats.get(k) for k in ROW_KEYS if k in stats}, **extra}
        if row.get("file_bytes") is not None and extra.get("encoded"):
            row["size_bytes"] = row["file_bytes"]
        return row

    # -- stages ----------------------------------------------------------------------------
    def train_callbacks(self, model: nn.Module, config: TrainStage, keep: bool) -> list[Callback]:
        """KeepZeros and the sparsity penalties a train stage asks for."""
        callbacks: list[Callback] = [KeepZeros()] if keep else []
        if config.bn_l1 > 0:
            callbacks.append(BNSlimmingCallback(config.bn_l1))
        if config.input_group_lasso > 0:
            layer = model.get_submodule(input_layer(model, self.example_batch))
            callbacks.append(GroupLassoCallback(config.input_group_lasso, [layer]))
        return callbacks

    def run_stage(self, index: int, stage: Stage, model: nn.Module, baseline: nn.Module):
        name, config = stage.name, stage.config
        details: dict[str, Any] = {}
        if name in ("train", "finetune"):
            keep = config.keep_zeros if config.keep_zeros is not None else name == "finetune"
            history = fit(
                wrap_ddp(model), self.train_loader, epochs=config.epochs, lr=config.lr,
                optimizer=config.optimizer, schedule=config.schedule,
                weight_decay=config.weight_decay, momentum=config.momentum,
                callbacks=self.train_callbacks(model, config, keep), seed=self.recipe.seed + index,
                progress=self.progress,
            )  # fmt: skip
            details["history"] = history.epochs
        elif name in TECHNIQUE_STAGES:
            outcome = compress_(model, config, example_inputs=self.example_batch)
            result = outcome.summary
            replacement = outcome.artifact or getattr(result, "model", None)
            if isinstance(replacement, nn.Module):
                model = replacement
            if result is not None and not isinstance(result, nn.Module):
                details["result"] = _json_safe(_without_model(result))
        elif name == "distill":
            details["history"] = self.distill(model, baseline, config, index)
        elif name == "encode":
            from ..storage import save as save_nns

            path = self.out / "model.nns"
            if is_main_process():
                save_nns(_stripped(model), path, huffman=config.huffman,
                         index_bits={"conv": config.conv_index_bits, "fc": config.fc_index_bits})  # fmt: skip
            barrier()
            details.update(encoded=True, path=str(path), file_bytes=file_bytes(path))
        elif name == "export":
            from ..export import export_onnx
            from ..metrics import ort_session
            from ..quantization.backends.ort import OrtInt8Module

            path = self.out / "model.onnx"
            if isinstance(model, OrtInt8Module):  # already an ONNX graph: write it as it runs
                if is_main_process():
                    model.save(path)
                barrier()
                details.update(path=str(path), file_bytes=file_bytes(path), int8=True)
                return model, details
            data = export_onnx(model, self.latency_input, path if is_main_process() else None)
            session = ort_session(data, threads=1)
            x = self.example_batch[:8]
            (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
            model.eval()
            with torch.no_grad():
                diff = float((torch.from_numpy(out) - model(x)).abs().max())
            details.update(path=str(path), max_abs_diff_vs_pytorch=diff)
        return model, details

    def distill(self, student: nn.Module, baseline: nn.Module, config, index: int):
        from ..distill import distill

        teacher = baseline
        if config.teacher != "baseline":
            teacher, _ = load_checkpoint(config.teacher)
        result = distill(
            teacher, student, self.train_loader, method=config.method, epochs=config.epochs,
            lr=config.lr, optimizer=config.optimizer, temperature=config.temperature,
            alpha=config.alpha, seed=self.recipe.seed + index, progress=self.progress,
        )  # fmt: skip
        return result.history.epochs


def _stripped(model: nn.Module) -> nn.Module:
    """A copy with training-time wrappers (k-means codebooks, low-bit latents) made plain."""
    from ..binary import strip_low_bit
    from ..sharing import strip_sharing

    return strip_low_bit(strip_sharing(copy.deepcopy(model)))


def _state_path(out: Path) -> Path:
    return out / "state.json"


def run_recipe(
    recipe: Recipe,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    log=print,
) -> RunResult:
    """Run every stage of ``recipe``, writing checkpoints and reports under ``out_dir``.

    Args:
        recipe: a validated recipe (:func:`~nnshrink.recipes.load_recipe`).
        out_dir: output folder: ``stages/NN-name.safetensors``, ``state.json``, ``report.json``,
            ``report.md`` and plots.
        resume: continue after the last finished stage of a previous run of the same recipe.
        progress: show progress bars.
        log: function taking one line of progress text.

    Example:
        >>> run_recipe(load_recipe("int8-ptq-lenet5"), "runs/int8")  # doctest: +SKIP
    """
    out = Path(out_dir)
    state_file = _state_path(out)
    if state_file.is_file() and not resume:
        raise RecipeError(
            f"{out} holds a previous run; pass --resume to continue it or a new --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "stages").mkdir(exist_ok=True)
    torch.set_num_threads(int(recipe.measure.get("threads", 2)))
    seed_everything(recipe.seed)
    run = _Run(recipe, out, progress, log)
    state: dict[str, Any] = {"fingerprint": recipe.fingerprint(), "finished": [], "rows": []}
    model = run.initial_model()
    baseline_path = out / "stages" / "baseline.safetensors"
    start = 0
    if resume and state_file.is_file():
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") != recipe.fingerprint():
            raise RecipeError(f"{out} was produced by a different recipe; use a new --out")
        for entry in reversed(state["finished"]):
            if entry.get("checkpoint"):
                model, _ = load_checkpoint(entry["checkpoint"])
                start = entry["index"] + 1
                break
        state["finished"] = [e for e in state["finished"] if e["index"] < start]
        state["rows"] = state["rows"][: start + 1]
        log(f"resuming after stage {start} of {len(recipe.stages)}")
    if not state["rows"]:
        log("measuring the original model")
        state["rows"].append(run.measure(model, "original", {"stage": "original"}))
        _write_state(state_file, state)
    baseline = None
    for index in range(start, len(recipe.stages)):
        stage = recipe.stages[index]
        if baseline is None and (stage.name in TECHNIQUE_STAGES or stage.name == "distill"):
            baseline = _baseline(model, baseline_path, state, state_file)
        label = f"{index + 1}:{stage.name}"
        log(f"stage {label} ({stage.config.kind})")
        model, details = run.run_stage(index, stage, model, baseline)
        ckpt_path = out / "stages" / f"{index + 1:02d}-{stage.name}.safetensors"
        try:
            if is_main_process():
                save_checkpoint(model, ckpt_path, extra={"stage": stage.name, "index": index})
            barrier()
            checkpoint = str(ckpt_path)
        except (ArchitectureError, TypeError, ValueError) as exc:
            checkpoint = None  # e.g. a runtime-backed int8 module: resume redoes this stage
            details["checkpoint_error"] = str(exc)
        extra = {"stage": stage.name}
        if details.get("encoded"):
            extra.update(encoded=True, file_bytes=details["file_bytes"])
        elif checkpoint:
            extra["file_bytes"] = file_bytes(checkpoint)
        row = run.measure(model, label, extra)
        state["rows"].append(row)
        state["finished"].append(
            {"index": index, "stage": stage.name, "checkpoint": checkpoint,
             "details": _json_safe(details)}
        )  # fmt: skip
        _write_state(state_file, state)
    return _write_reports(recipe, out, model, state)


def _baseline(model, path: Path, state, state_file) -> nn.Module:
    if state.get("baseline") and Path(state["baseline"]).is_file():
        baseline, _ = load_checkpoint(state["baseline"])
        return baseline
    baseline = copy.deepcopy(model).eval()
    try:
        if is_main_process():
            save_checkpoint(baseline, path)
        barrier()
        state["baseline"] = str(path)
        _write_state(state_file, state)
    except (ArchitectureError, TypeError, ValueError):
        pass
    return baseline


def _write_state(path: Path, state: dict[str, Any]) -> None:
    if not is_main_process():
        return
    atomic_write_bytes(path, json.dumps(_json_safe(state), indent=1).encode())


def _ratio(a: Any, b: Any) -> float | None:
    return (a / b) if (a is not None and b) else None


def _write_reports(recipe: Recipe, out: Path, model: nn.Module, state) -> RunResult:
    rows = state["rows"]
    original = rows[0]
    for row in rows:
        row["compression"] = _ratio(original.get("size_bytes"), row.get("size_bytes"))
        row["mac_reduction"] = _ratio(original.get("macs"), row.get("macs"))
        row["speedup"] = _ratio(original.get("latency_ms"), row.get("latency_ms"))
        row["speedup_onnx"] = _ratio(original.get("latency_onnx_ms"), row.get("latency_onnx_ms"))
        if row.get("top1") is not None and original.get("top1") is not None:
            row["top1_change"] = row["top1"] - original["top1"]
    if not is_main_process():
        return RunResult(model, rows, out, out / "report.json", out / "report.md")
    from .plots import stage_plots  # matplotlib is imported only when a report is written

    plots = stage_plots(rows, out)
    report = {
        "recipe": recipe.source,
        "environment": environment(recipe.seed),
        "eval_split": recipe.data.get("eval_split", "test"),
        "rows": rows,
        "stages": state["finished"],
        "plots": [p.name for p in plots],
    }
    report_json = out / "report.json"
    atomic_write_bytes(report_json, json.dumps(_json_safe(report), indent=1).encode())
    report_md = out / "report.md"
    text = render_markdown(recipe.name, rows, state, plots)
    if report["eval_split"] == "val":
        val_size = recipe.data.get("val_size", VAL_SIZE)
        text += (f"\nTop-1 is on the validation split: the last {val_size:,} training samples, "
                 "which training did not see.\n")  # fmt: skip
    atomic_write_bytes(report_md, text.encode())
    return RunResult(model, rows, out, report_json, report_md)


def _fmt(value: Any, pct: bool = False, suffix: str = "") -> str:
    if value is None:
        return "-"
    if pct:
        return f"{100 * value:.2f}%"
    if isinstance(value, float):
        return f"{value:.3g}{suffix}"
    return f"{value:,}{suffix}"


def render_markdown(name: str, rows, state, plots) -> str:
    """The run report as markdown: one row per stage, ratios vs the original, plots."""
    lines = [f"# Run report: {name}", "",
             "| stage | top-1 | params | non-zero | MACs | bytes | compression | eager ms | "
             "speed-up | ORT ms | ORT speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['label']} | {_fmt(r.get('top1'), pct=True)} | {_fmt(r.get('params'))} | "
            f"{_fmt(r.get('nonzero_params'))} | {_fmt(r.get('macs'))} | {_fmt(r.get('size_bytes'))} | "
            f"{_fmt(r.get('compression'), suffix='x')} | {_fmt(r.get('latency_ms'))} | "
            f"{_fmt(r.get('speedup'), suffix='x')} | {_fmt(r.get('latency_onnx_ms'))} | "
            f"{_fmt(r.get('speedup_onnx'), suffix='x')} |"
        )
    lines += ["", "Bytes: dense fp32 parameters, or the encoded file after an `encode` stage. "
              "Latency: median, batch and threads as in the recipe's `measure`.", ""]  # fmt: skip
    for entry in state["finished"]:
        result = entry.get("details", {}).get("result")
        if isinstance(result, dict) and isinstance(result.get("layers"), list):
            layers = result["layers"]
            if layers and isinstance(layers[0], dict):
                keys = list(layers[0])
                lines += [f"## Stage {entry['index'] + 1} ({entry['stage']}): per layer", "",
                          "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]  # fmt: skip
                for layer in layers:
                    lines.append("| " + " | ".join(str(layer.get(k)) for k in keys) + " |")
                lines.append("")
    for plot in plots:
        lines += [f"![{plot.stem}]({plot.name})", ""]
    return "\n".join(lines)
