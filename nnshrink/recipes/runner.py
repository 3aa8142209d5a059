"""Run a recipe: stages in order, an artefact after each, resumable, with a report and plots.

This is the one runner behind ``nnshrink run``, every technique command of the CLI (each builds a
one-stage recipe) and ``advise``: model, data and metric handling and the training loops live
here only. The model, data and metric may be the user's own (factories named in the recipe, or
objects passed by Python callers).

Handler convention: a technique edits the model in place (``compress_``); when it also builds a
deployable runtime module (``CompressResult.artifact``, e.g. an int8 ONNX Runtime session) the run
continues with that module, and its stage artefact is that module's ``.onnx``.

Every row's ``size_bytes`` is the size on disk of the artefact written for that stage (the stage
checkpoint, the ``.nns`` of an ``encode`` stage, the ``.onnx`` of an int8 stage, the ``--out``
file at the end); ``dense_bytes`` is the fp32 size of the parameters in memory.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import metrics as metrics_module
from ..core.modules import eval_mode
from ..core.registry import compress_
from ..data import DataBundle, DataError, open_data
from ..io import ArchitectureError
from ..metrics import file_bytes
from ..pruning import BNSlimmingCallback, GroupLassoCallback, input_layer
from ..train import Callback, KeepZeros, barrier, fit, init_distributed, is_main_process, wrap_ddp
from ..train.task import Task, task_from_references
from ..utils import atomic_write_bytes, environment, seed_everything
from ..utils.device import resolve_device
from ..utils.references import ReferenceError_
from .artifacts import is_runtime_module, load_model_file, write_model
from .models import build_model
from .schema import Recipe, RecipeError, Stage, TrainStage, is_technique_stage

ROW_KEYS = ("params", "nonzero_params", "macs", "dense_bytes", "latency_ms", "latency_onnx_ms")


@dataclasses.dataclass
class RunResult:
    """What :func:`run_recipe` produced: the final model, one row per stage, the report files."""

    model: nn.Module
    rows: list[dict[str, Any]]
    out_dir: Path
    report_json: Path
    report_md: Path
    task: Task = dataclasses.field(default_factory=Task)
    final_path: Path | None = None


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, nn.Module):
        return type(value).__name__
    if hasattr(value, "to_dict"):
        return _json_safe(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _json_safe(
            {
                f.name: getattr(value, f.name)
                for f in dataclasses.fields(value)
                if not isinstance(getattr(value, f.name), nn.Module)
            }  # fmt: skip
        )
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 64 else f"tensor{tuple(value.shape)}"
    return str(value)


class _Run:
    """Everything a run needs besides the model: device, data, task, measurement settings."""

    def __init__(
        self,
        recipe: Recipe,
        out_dir: Path,
        progress: bool,
        log,
        *,
        data: DataBundle | None = None,
        task: Task | None = None,
    ) -> None:
        self.recipe, self.out, self.progress, self.log = recipe, out_dir, progress, log
        measure = recipe.measure
        self.threads = int(measure.get("threads", 2))
        self.latency = bool(measure.get("latency", True))
        self.runs = int(measure.get("runs", 30))
        self.latency_batch = int(measure.get("batch_size", 1))
        self._warm = False
        self._reference_onnx: tuple[nn.Module, Callable[[], Any]] | None = None
        try:
            self.device = resolve_device(recipe.device)
        except ValueError as exc:
            raise RecipeError(str(exc)) from None
        # Under torchrun every rank runs the recipe; training data is sharded by rank,
        # gradients are averaged by DDP, and only rank 0 writes files.
        self.dist = init_distributed(self.device)
        if self.dist.world_size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)  # one GPU per process
        if data is None and not recipe.data:
            raise RecipeError(
                "the recipe names no data: add data: {...} or pass data= to run_recipe"
            )
        try:
            self.task = task or task_from_references(recipe.metric, recipe.loss)
            self.data = data or open_data(
                recipe.data, seed=recipe.seed, rank=self.dist.rank, world_size=self.dist.world_size
            )
            self.example_batch = self.data.example_inputs()
        except (DataError, ReferenceError_, ValueError) as exc:
            raise RecipeError(f"data: {exc}") from None
        if self.data.train is None:
            raise RecipeError(f"data: {self.data.name} has no training batches")
        val = (recipe.data or {}).get("eval_split", "test") == "val"
        self.eval_split = "val" if val else "test"
        self.test_loader = self.data.val if val else self.data.test
        if self.test_loader is None:
            raise RecipeError(
                f"data: {self.data.name} has no {self.eval_split} batches to measure on"
            )
        self.train_loader = self.data.train
        self.latency_input = _latency_input(self.example_batch, self.latency_batch)

        self.training: dict[str, Any] = {}

    def provenance(self) -> dict[str, Any]:
        """What a saved model records about how it was made (training settings, data, stages)."""
        out: dict[str, Any] = {"data": self.data.name,
                               "stages": [s.config.to_dict() for s in self.recipe.stages]}  # fmt: skip
        if self.training:
            out["train"] = dict(self.training)
        return out

    # -- model -----------------------------------------------------------------------------
    def initial_model(self) -> nn.Module:
        if not self.recipe.model:
            raise RecipeError(
                "the recipe names no model: add model: {...} or pass model= to run_recipe"
            )
        try:
            model = build_model(self.recipe.model, self.data)
        except (ReferenceError_, ArchitectureError, ValueError, TypeError) as exc:
            raise RecipeError(f"model: {exc}") from None
        return model.to(self.device)

    def measure(
        self,
        model: nn.Module,
        label: str,
        extra: dict[str, Any],
        reference: nn.Module | None = None,
    ) -> dict[str, Any]:
        runtime = is_runtime_module(model)
        x = _to(self.latency_input, "cpu" if runtime else self.device)

        def snapshot() -> dict[str, Any]:
            return metrics_module.snapshot(
                model, x, None, latency=self.latency, threads=self.threads, runs=self.runs,
                runtimes=("eager",) if runtime else ("eager", "onnxruntime"),
            )  # fmt: skip

        if self.latency and not self._warm:
            # the process's first timings run cold (thread pools, kernel caches): 9.3 ms for a
            # model that takes 0.6 ms a minute later; one untimed pass first
            snapshot()
            self._warm = True
        stats = snapshot()
        stats["dense_bytes"] = stats.pop("size_bytes")
        row = {"label": label, **{k: stats.get(k) for k in ROW_KEYS if k in stats}}
        if self.latency and reference is not None:
            row.update(self.paired_speedups(model, reference, x, runtime, row))
        try:
            scores = self.task.evaluate(model, self.test_loader)
        except ValueError as exc:
            raise RecipeError(str(exc)) from None
        except RuntimeError as exc:
            raise RecipeError(f"the model does not run on {self.data.name}: {exc}") from None
        row.update({k: v for k, v in scores.items() if isinstance(v, int | float | type(None))})
        row.update(extra)
        row["size_bytes"] = row.get("file_bytes") or row.get("dense_bytes")
        row["size_kind"] = "file" if row.get("file_bytes") else "dense fp32"
        return row

    def paired_speedups(
        self, model: nn.Module, reference: nn.Module, x: Any, runtime: bool, row: dict
    ) -> dict[str, float]:
        """``speedup`` (and ``speedup_onnx``) of ``model`` over ``reference`` timed interleaved.

        The original row is timed once, at the start of the run; dividing a later stage's time
        by it compares measurements minutes apart (on small models 10.9x where the interleaved
        pair gives 2.25x). Timing both in alternating rounds puts any load on both alike.
        """
        # forward_call runs a module in the mode it is in: time both in eval mode, or the
        # timing passes would update a training-mode model's BatchNorm statistics
        with eval_mode(model), eval_mode(reference):
            return self._paired(model, reference, x, runtime, row)

    def _paired(
        self, model: nn.Module, reference: nn.Module, x: Any, runtime: bool, row: dict
    ) -> dict[str, float]:
        from ..metrics.latency import forward_call, interleaved, torch_threads

        ref_x = _to(self.latency_input, self.device)
        calls = {"reference": forward_call(reference, ref_x), "model": forward_call(model, x)}
        out: dict[str, float] = {}
        with torch_threads(self.threads):
            stats = interleaved(calls, rounds=5, runs=max(5, self.runs // 3), warmup=3)
        out["speedup"] = stats["reference"]["median"] / stats["model"]["median"]
        if runtime or row.get("latency_onnx_ms") is None or self.device.type != "cpu":
            return out
        try:
            # the baseline does not change between stages: export and load its session once
            if self._reference_onnx is None or self._reference_onnx[0] is not reference:
                call = forward_call(reference, ref_x, runtime="onnxruntime",
                                    threads=self.threads, stop_spinning=True)  # fmt: skip
                self._reference_onnx = (reference, call)
            onnx = {
                "reference": self._reference_onnx[1],
                "model": forward_call(model, x, runtime="onnxruntime", threads=self.threads,
                                      stop_spinning=True),
            }  # fmt: skip
        except Exception:  # noqa: BLE001 - a model ONNX cannot hold keeps the unpaired ratio
            return out
        stats = interleaved(onnx, rounds=5, runs=max(5, self.runs // 3), warmup=3)
        out["speedup_onnx"] = stats["reference"]["median"] / stats["model"]["median"]
        return out

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
                progress=self.progress, criterion=self.task.criterion, amp=self.recipe.amp,
            )  # fmt: skip
            details["history"] = history.epochs
            self.training = {k: getattr(config, k) for k in ("optimizer", "lr", "weight_decay",
                                                              "momentum", "schedule")}  # fmt: skip
        elif is_technique_stage(stage):
            # a latency target (or table) is timed on the report's latency input
            # (measure.batch_size), so that it and the reported latency mean the same batch
            timed = (getattr(config, "target_latency_ms", None) is not None
                     or getattr(config, "latency_table", False))  # fmt: skip
            example = _to(self.latency_input if timed else self.example_batch, self.device)
            if _needs_gradients(config):
                self.accumulate_gradients(model)
            outcome = compress_(model, config, example_inputs=example)
            model.zero_grad(set_to_none=True)
            details["result"] = _json_safe(outcome.summary)
            details["before"], details["after"] = outcome.before, outcome.after
            artifact = outcome.artifact
            replaced = getattr(outcome.summary, "model", None)  # summaries that carry a new model
            if artifact is None and isinstance(replaced, nn.Module) and replaced is not model:
                artifact = replaced
            if artifact is not None:
                model = artifact
        elif name == "distill":
            details.update(self.distill(model, baseline, config, index))
        elif name == "encode":
            path = self.out / "model.nns"
            if is_main_process():
                write_model(model, path, huffman=config.huffman,
                            index_bits={"conv": config.conv_index_bits, "fc": config.fc_index_bits})  # fmt: skip
            barrier()
            details.update(encoded=True, path=str(path), file_bytes=file_bytes(path))
        elif name == "export":
            details.update(self.export(model))
        elif name == "finalize":
            from ..core.finalize import finalize

            details["finalized"] = finalize(model)
        return model, details

    def accumulate_gradients(self, model: nn.Module, batches: int = 4) -> None:
        """Loss gradients over a few training batches (gradient-based criteria read ``.grad``)."""
        from ..core.modules import eval_mode
        from ..train.evaluate import default_criterion

        criterion = self.task.criterion or default_criterion
        model.zero_grad(set_to_none=True)
        with eval_mode(model):  # BN statistics stay as trained
            for i, (x, y) in enumerate(self.train_loader):
                if i == batches:
                    break
                loss, _ = criterion(model, _to(x, self.device), _to(y, self.device))
                loss.backward()

    def export(self, model: nn.Module) -> dict[str, Any]:
        from ..metrics import ort_session

        path = self.out / "model.onnx"
        if is_runtime_module(model):  # already an ONNX graph: write it as it runs
            if is_main_process():
                model.save(path)
            barrier()
            return {"path": str(path), "file_bytes": file_bytes(path), "int8": True}
        x = _to(self.example_batch, "cpu")
        x = x[:8] if isinstance(x, torch.Tensor) else x
        if is_main_process():
            write_model(model, path, example_inputs=self.latency_input)
        barrier()
        session = ort_session(path.read_bytes(), threads=1)
        feeds = dict(zip([i.name for i in session.get_inputs()], _numpy_inputs(x)))
        out = session.run(None, feeds)[0]
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        model.eval()
        with torch.no_grad():
            ref = model(*(_as_tuple(_to(x, device))))
        ref = ref[0] if isinstance(ref, tuple | list) else getattr(ref, "logits", ref)
        diff = float((torch.from_numpy(out) - ref.detach().cpu()).abs().max())
        return {"path": str(path), "file_bytes": file_bytes(path), "max_abs_diff_vs_pytorch": diff}

    def distill(self, student: nn.Module, baseline: nn.Module, config, index: int):
        from ..distill import distill

        teacher = baseline
        if config.teacher != "baseline":
            teacher = load_model_file(
                config.teacher, trust_code=bool((self.recipe.model or {}).get("trust_code"))
            )
        teacher = teacher.to(self.device)
        result = distill(
            teacher, student, self.train_loader, method=config.method, epochs=config.epochs,
            lr=config.lr, optimizer=config.optimizer, temperature=config.temperature,
            alpha=config.alpha, beta=config.beta, gamma=config.gamma,
            weight_decay=config.weight_decay, features=config.features or None,
            hint_epochs=config.hint_epochs, seed=self.recipe.seed + index, progress=self.progress,
        )  # fmt: skip
        out = {"history": result.history.epochs, "features": result.distiller.features}
        if result.hint_history is not None:
            out["hint_history"] = result.hint_history.epochs
        return out


def _needs_gradients(config: Any) -> bool:
    """Configs whose criterion scores weight x gradient (Taylor) get loss gradients first."""
    return (
        bool(getattr(config, "needs_gradients", False))
        or getattr(config, "criterion", None) == "taylor"
    )


def _as_tuple(x: Any) -> tuple[Any, ...]:
    return tuple(x) if isinstance(x, tuple | list) else (x,)


def _numpy_inputs(x: Any) -> list[Any]:
    return [t.detach().cpu().numpy() for t in _as_tuple(x)]


def _to(x: Any, device: Any) -> Any:
    from ..core.modules import to_device

    return to_device(x, device)


def _latency_input(example: Any, batch: int) -> Any:
    """``batch`` real samples from the first batch (repeated if the batch is smaller)."""

    def take(t: Any) -> Any:
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return t
        reps = -(-batch // t.shape[0])
        return (
            t.repeat(reps, *([1] * (t.dim() - 1)))[:batch].clone()
            if reps > 1
            else t[:batch].clone()
        )

    if isinstance(example, tuple | list):
        return tuple(take(t) for t in example)
    return take(example)


def _state_path(out: Path) -> Path:
    return out / "state.json"


def run_recipe(
    recipe: Recipe,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], Any] = print,
    model: nn.Module | None = None,
    data: DataBundle | tuple | None = None,
    task: Task | None = None,
    final_path: str | os.PathLike | None = None,
    final_extra: dict[str, Any] | None = None,
) -> RunResult:
    """Run every stage of ``recipe``, writing artefacts and reports under ``out_dir``.

    Args:
        recipe: a validated recipe (:func:`~nnshrink.recipes.load_recipe`).
        out_dir: output folder: ``stages/NN-name.safetensors`` (``.onnx`` for runtime stages),
            ``state.json``, ``report.json``, ``report.md`` and plots.
        resume: continue after the last finished stage of a previous run of the same recipe.
        progress: show progress bars.
        log: function taking one line of progress text.
        model: the user's module to run the stages on (edited in place, as by ``compress_``);
            default: the recipe's ``model``.
        data: a :class:`~nnshrink.data.DataBundle` or ``(train, test[, val])`` loaders;
            default: the recipe's ``data``.
        task: the metric and loss (:class:`~nnshrink.train.task.Task`); default: the recipe's
            ``metric``/``loss``, else classification.
        final_path: also write the final model there (``.safetensors``, ``.nns`` or ``.onnx``,
            chosen by suffix), made final (:func:`nnshrink.finalize`); the last row's
            ``size_bytes`` is that file's size.
        final_extra: metadata stored in that file when it is a checkpoint.

    Example:
        >>> run_recipe(load_recipe("int8-ptq-lenet5"), "runs/int8")  # doctest: +SKIP
    """
    out = Path(out_dir)
    state_file = _state_path(out)
    if state_file.is_file() and not resume:
        raise RecipeError(
            f"{out} holds a previous run; pass --resume to continue it or a new --out"
        )
    if isinstance(data, tuple | list):
        data = DataBundle(*data, name="user data")
    torch.set_num_threads(int(recipe.measure.get("threads", 2)))
    seed_everything(recipe.seed)
    run = _Run(recipe, out, progress, log, data=data, task=task)
    model = run.initial_model() if model is None else model.to(run.device)
    out.mkdir(parents=True, exist_ok=True)  # only after model and data are known to be good
    (out / "stages").mkdir(exist_ok=True)
    state: dict[str, Any] = {"fingerprint": recipe.fingerprint(), "finished": [], "rows": []}
    start = 0
    if resume and state_file.is_file():
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") != recipe.fingerprint():
            raise RecipeError(f"{out} was produced by a different recipe; use a new --out")
        for entry in reversed(state["finished"]):
            if entry.get("checkpoint"):
                model = _reload(entry["checkpoint"], model, recipe).to(run.device)
                start = entry["index"] + 1
                break
        state["finished"] = [e for e in state["finished"] if e["index"] < start]
        state["rows"] = state["rows"][: start + 1]
        log(f"resuming after stage {start} of {len(recipe.stages)}")
    baseline_path = out / "stages" / "00-original.safetensors"
    if not state["rows"]:
        log("measuring the original model")
        extra = {"stage": "original"}
        saved = _save_stage(model, baseline_path)
        if saved:
            extra.update(file_bytes=file_bytes(saved), checkpoint=str(saved))
        state["rows"].append(run.measure(model, "original", extra))
        _write_state(state_file, state)
    baseline = None
    for index in range(start, len(recipe.stages)):
        stage = recipe.stages[index]
        if baseline is None and (is_technique_stage(stage) or stage.name == "distill"):
            baseline = _baseline(model, out, state, recipe)
            _write_state(state_file, state)
        label = f"{index + 1}:{stage.name}"
        log(f"stage {label} ({stage.config.kind})")
        model, details = run.run_stage(index, stage, model, baseline)
        suffix = ".onnx" if is_runtime_module(model) else ".safetensors"
        saved = _save_stage(
            model, out / "stages" / f"{index + 1:02d}-{stage.name}{suffix}", details
        )
        checkpoint = str(saved) if saved and suffix == ".safetensors" else None
        extra: dict[str, Any] = {"stage": stage.name}
        if details.get("encoded"):
            extra.update(encoded=True, file_bytes=details["file_bytes"])
        elif saved:
            extra["file_bytes"] = file_bytes(saved)
        row = run.measure(model, label, extra, reference=baseline)
        if is_runtime_module(model) and state["rows"]:
            # an int8 runtime session has no torch parameters to count: it holds the same
            # weights as the model it was converted from, so report that model's counts
            previous = state["rows"][-1]
            for key in ("params", "nonzero_params", "macs"):
                if not row.get(key) and previous.get(key):
                    row[key] = previous[key]
        state["rows"].append(row)
        state["finished"].append(
            {"index": index, "stage": stage.name, "checkpoint": checkpoint,
             "artifact": str(saved) if saved else None, "details": _json_safe(details)}
        )  # fmt: skip
        _write_state(state_file, state)
    final = None
    if final_path is not None:
        final = Path(final_path)
        if is_main_process():
            write_model(model, final, example_inputs=run.latency_input, final=True,
                        extra={**run.provenance(), **(final_extra or {})})  # fmt: skip
        barrier()
        last = state["rows"][-1]
        last.update(file_bytes=file_bytes(final), size_bytes=file_bytes(final), size_kind="file",
                    final_path=str(final))  # fmt: skip
        _write_state(state_file, state)
    result = _write_reports(recipe, out, model, state, run)
    result.final_path = final
    return result


def _save_stage(model: nn.Module, path: Path, details: dict | None = None) -> Path | None:
    """Write a stage's artefact (checkpoint, or ONNX for runtime modules); None if impossible."""
    try:
        if is_main_process():
            write_model(model, path)
        barrier()
        return path
    except (ArchitectureError, TypeError, ValueError) as exc:
        if details is not None:
            details["checkpoint_error"] = str(exc)  # resume redoes this stage
        return None


def _reload(path: str, model: nn.Module, recipe: Recipe) -> nn.Module:
    return load_model_file(
        path, like=model, trust_code=bool((recipe.model or {}).get("trust_code"))
    )


def _baseline(model: nn.Module, out: Path, state: dict[str, Any], recipe: Recipe) -> nn.Module:
    """The model before the first compression stage (the distillation teacher), kept on disk
    so that a resumed run distils from the same teacher."""
    path = state.get("baseline")
    if path and Path(path).is_file():
        try:
            return _reload(path, model, recipe).to(_device_of(model)).eval()
        except (ArchitectureError, ValueError, TypeError):
            pass
    baseline = copy.deepcopy(model).eval()
    saved = _save_stage(baseline, out / "stages" / "baseline.safetensors")
    if saved:
        state["baseline"] = str(saved)
    return baseline


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _write_state(path: Path, state: dict[str, Any]) -> None:
    if not is_main_process():
        return
    atomic_write_bytes(path, json.dumps(_json_safe(state), indent=1).encode())


def _ratio(a: Any, b: Any) -> float | None:
    return (a / b) if (a is not None and b) else None


def _write_reports(recipe: Recipe, out: Path, model: nn.Module, state, run: _Run) -> RunResult:
    rows = state["rows"]
    original = rows[0]
    headline = run.task.headline
    for row in rows:
        row["compression"] = _ratio(original.get("size_bytes"), row.get("size_bytes"))
        row["mac_reduction"] = _ratio(original.get("macs"), row.get("macs"))
        # a stage timed interleaved with the baseline keeps that ratio (see paired_speedups)
        if row.get("speedup") is None:
            row["speedup"] = _ratio(original.get("latency_ms"), row.get("latency_ms"))
        if row.get("speedup_onnx") is None:
            row["speedup_onnx"] = _ratio(original.get("latency_onnx_ms"),
                                         row.get("latency_onnx_ms"))  # fmt: skip
        if row.get(headline) is not None and original.get(headline) is not None:
            row[f"{headline}_change"] = row[headline] - original[headline]
    paths = (out / "report.json", out / "report.md")
    if not is_main_process():
        return RunResult(model, rows, out, *paths, task=run.task)
    from .plots import stage_plots  # matplotlib is imported only when a report is written
    from .render import render_markdown

    plots = stage_plots(rows, out, metric=headline)
    report = {
        "recipe": recipe.source,
        "environment": environment(recipe.seed),
        "device": str(run.device),
        "world_size": run.dist.world_size,
        "data": run.data.name,
        "metric": {
            "name": run.task.name,
            "headline": headline,
            "higher_is_better": run.task.higher_is_better,
        },  # fmt: skip
        "eval_split": run.eval_split,
        "rows": rows,
        "stages": state["finished"],
        "plots": [p.name for p in plots],
    }
    atomic_write_bytes(paths[0], json.dumps(_json_safe(report), indent=1).encode())
    text = render_markdown(recipe.name, rows, state, plots, headline=headline)
    if run.eval_split == "val":
        text += (f"\n{headline} is measured on the validation split, which training did not "
                 "see.\n")  # fmt: skip
    atomic_write_bytes(paths[1], text.encode())
    return RunResult(model, rows, out, *paths, task=run.task)
