"""``advise``: from a trained model, its data and a budget to a measured, reproducible choice.

The model is any ``nn.Module`` (or a reference: a checkpoint, a zoo name, the user's factory),
the data any loaders (or a built-in name, a factory, a file), the metric the task's (top-1 by
default, or the user's). Steps: measure the baseline and where its time goes; generate candidate
pipelines from the rules of thumb (:mod:`.candidates`); measure each zero-shot and drop those
whose structure cannot meet the budget (:mod:`.screen`); run the rest as recipes on copies of
the model under successive halving (:mod:`.search`); choose the best-scoring one that meets every
limit, re-timed beside the baseline (:mod:`.confirm`); write the report, the Pareto plot and the
recipe that reproduces the choice (:mod:`.report`).

Candidates are compared on the data's ``val`` batches, or on a held-back part of its training
data (:mod:`.inputs`), never on ``test``: only the choice and the baseline are measured there,
once, for the report.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn

from ..core.sensitivity import ReplayBatches
from ..data import Limited, first_batch
from ..data.datasets import VAL_SIZE
from ..io import save_checkpoint
from ..metrics.macs import first_sample
from ..train.task import Task
from .allocation import sensitivity_candidates
from .budget import Budget, Measurement, goodness
from .candidates import (
    TRAINING_STAGES,
    Candidate,
    _keep_fraction,
    generate,
    interleave,
    model_traits,
)
from .confirm import confirm, load_artifact
from .inputs import HOLDOUT, model_factory, recipe_model, resolve_data, resolve_model, resolve_task
from .measure import (
    LayerTime,
    latency_inputs,
    layer_latency_share,
    measure_model,
    measure_run,
    score_of,
    zero_shot,
)
from .recipe import BASELINE_FILE, candidate_recipe, data_note
from .screen import Screened, maybe_sensitivity, screen
from .search import Evaluation, choose, judge, rung_limits, split_resource, successive_halving
from .sensitivity import Sensitivity

SCREEN_SAMPLES = 1000  # selection samples for the zero-shot screening and the per-layer scan


@dataclasses.dataclass
class AdviceResult:
    """What :func:`advise` found.

    Attributes:
        budget: the budget.
        baseline: the model as given, measured like the candidates (its score on the
            selection data).
        chosen: the best-scoring evaluation that meets the budget, or ``None``.
        closest: when nothing meets the budget, the evaluation closest to it.
        evaluations: every candidate run, in order.
        screened: the zero-shot screening of every generated candidate.
        latency_share: per-layer share of the eager forward time.
        out_dir: the output folder.
        recipe_path: the YAML recipe reproducing ``chosen`` (``None`` when nothing was chosen).
        report_md, report_json, plot: report files.
        seconds: wall time of the whole advice.
        settings: the search settings: ``selection_split`` (``"val"`` or ``"train-holdout"``)
            and ``selection`` (which samples), ``metric`` (name, headline, direction),
            ``recipe_notes`` (what the recipes name and what they cannot), ``sensitivity``.
        baseline_test_score: the baseline's score on the test data (``None`` without any).
        sensitivity: the per-layer sensitivity tables (``None`` when not measured).
        model: the chosen candidate's model as deployed (loaded from its artifact, or the run's
            own model when no file can rebuild the user's architecture); ``None`` when nothing
            was chosen.
    """

    budget: Budget
    baseline: Measurement
    chosen: Evaluation | None
    closest: Evaluation | None
    evaluations: list[Evaluation]
    screened: list[Screened]
    latency_share: list[LayerTime]
    out_dir: Path
    recipe_path: Path | None = None
    report_md: Path | None = None
    report_json: Path | None = None
    plot: Path | None = None
    seconds: float = 0.0
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    baseline_test_score: float | None = None
    sensitivity: Sensitivity | None = None
    model: nn.Module | None = None

    @property
    def message(self) -> str:
        """One line: what was chosen, or that nothing meets the budget and what came closest."""
        if self.chosen is not None:
            return f"chosen: {self.chosen.label} (meets the budget)"
        if self.closest is not None:
            return ("no candidate meets the budget; closest: "
                    f"{self.closest.label} ({'; '.join(self.closest.violations)})")  # fmt: skip
        return "no candidate meets the budget (none could be evaluated)"

    @property
    def headline(self) -> str:
        """The metric's headline key (``"top1"`` by default)."""
        return self.settings.get("metric", {}).get("headline", "top1")

    @property
    def higher_is_better(self) -> bool:
        """The metric's direction."""
        return bool(self.settings.get("metric", {}).get("higher_is_better", True))


def advise(
    model: nn.Module | str | os.PathLike,
    data: Any,
    budget: Budget,
    *,
    out_dir: str | os.PathLike,
    metric: Any = None,
    loss: Any = None,
    task: Task | None = None,
    trust_code: bool = False,
    seed: int = 0,
    progress: bool = True,
    limit: int | None = None,
    train_limit: int | None = None,
    batch_size: int | None = 64,
    data_root: str | None = None,
    epochs: int = 1,
    lr: float = 1e-3,
    max_candidates: int = 8,
    rungs: int = 3,
    eta: int = 3,
    extra_rungs: int = 2,
    val_size: int = VAL_SIZE,
    holdout: float = HOLDOUT,
    sensitivity: bool = True,
    device: str | None = None,
    amp: str | None = None,
    log=print,
) -> AdviceResult:
    """Choose compression methods for ``budget``: search, measure, report, emit a recipe.

    Args:
        model: the trained model: any ``nn.Module`` (never modified), or a reference (a
            checkpoint / ``.nns`` path, a zoo name, ``"package.module:callable"``, ``hf:DIR``).
        data: a built-in name (``"mnist"``, ...), a :class:`~nnshrink.data.DataBundle`,
            ``(train, test[, val])`` loaders, a factory ``"package.module:callable"``, a
            ``.pt`` / ``.npz`` file or a recipe ``data:`` mapping. Candidates are compared on
            its ``val`` batches when it has them, else on a held-back part of ``train`` (a
            built-in set's last ``val_size`` training samples, otherwise a ``holdout``
            fraction); never on ``test``, which measures the choice and the baseline once.
        budget: the limits (at least one of bytes, latency, MACs; ``max_drop`` in the metric's
            own units) and the search's time limit.
        out_dir: output folder (``advice.md``, ``advice.json``, ``pareto.png``, ``recipe.yaml``,
            ``baseline.safetensors`` and one run folder per evaluated candidate).
        metric: ``None`` (top-1), a callable ``(model, loader) -> dict`` with a headline value
            (see :class:`~nnshrink.train.task.Task`) or its ``"package.module:callable"``.
        loss: the training loss of the recovery stages (callable or reference; default
            cross-entropy).
        task: a ready :class:`~nnshrink.train.task.Task` instead of ``metric`` / ``loss``.
        trust_code: let a checkpoint given by path import the model factory it names.
        seed: recipe seed (and the held-back split).
        progress: show progress bars.
        limit: the first N selection and test samples for every score (``None``: all).
        train_limit: at most N training samples for recovery (``None``: all not held back).
        batch_size: training batch size of a built-in set or a factory taking ``batch_size``.
        data_root: data directory of a built-in set.
        epochs: epochs of each recovery stage.
        lr: Adam learning rate of the recovery stages.
        max_candidates: candidates in the first rung.
        rungs: successive-halving rungs (1 when ``budget.finetune`` is off).
        eta: keep a ``1/eta`` fraction per rung and give it ``eta`` times more data.
        extra_rungs: rungs after the whole data set, each with ``eta`` times more epochs, run
            only while the time limit allows.
        val_size: a built-in set's last ``val_size`` training samples are the selection data
            (recovery trains on the samples before them).
        holdout: the fraction of the training data held back for selection when the data
            have no ``val`` batches (seeded; recovery never trains on it).
        sensitivity: measure each layer's sensitivity zero-shot (bits, sparsity, channels,
            ranks, on the screening batches) and add candidates with per-layer settings
            allocated from it (``*-sens``), when the scan's estimated time is within 20 % of
            the time limit.
        device: where recovery stages train (``"cpu"``, ``"cuda"``, ``"auto"``; ``None``: the
            runner's default); measurements run on the CPU, as the budget deploys.
        amp: ``"bf16"`` / ``"fp16"`` mixed precision for recovery stages.
        log: one-line progress messages (``None`` for silence).

    Example:
        >>> from tests.usercode import error_rate, make_data, make_model
        >>> res = advise(make_model(), make_data(), Budget(max_macs=40_000, max_drop=0.05),
        ...              metric=error_rate, out_dir="advice/tiny")  # doctest: +SKIP
        >>> res.message, res.settings["selection_split"]  # doctest: +SKIP
        ('chosen: ...', 'train-holdout')
    """
    from ..metrics.latency import torch_threads

    with torch_threads(budget.threads):  # the caller's thread setting is restored afterwards
        return _Advisor(
            budget, out_dir=out_dir, seed=seed, progress=progress, epochs=epochs, lr=lr,
            max_candidates=max_candidates, rungs=rungs, eta=eta, extra_rungs=extra_rungs,
            sensitivity=sensitivity, device=device, amp=amp, log=log,
        ).run(model, data, metric=metric, loss=loss, task=task, trust_code=trust_code,
              limit=limit, train_limit=train_limit, batch_size=batch_size, data_root=data_root,
              val_size=val_size, holdout=holdout)  # fmt: skip


class _Advisor:
    """One advice: the settings of the search, then :meth:`run` on a model and its data."""

    def __init__(self, budget: Budget, *, out_dir, seed, progress, epochs, lr, max_candidates,
                 rungs, eta, extra_rungs, sensitivity, device, amp, log) -> None:  # fmt: skip
        self.budget, self.out, self.seed, self.progress = budget, Path(out_dir), seed, progress
        self.epochs, self.lr, self.max_candidates = epochs, lr, max_candidates
        self.rungs, self.eta, self.extra_rungs = rungs, eta, extra_rungs
        self.use_sensitivity, self.device, self.amp = sensitivity, device, amp
        self.say = log or (lambda _line: None)
        self.cache: dict[str, Measurement] = {}
        self.in_memory: dict[str, nn.Module] = {}  # final models no file can rebuild
        # Latency is set by the architecture, not by the weights, and noise only ever adds
        # time: each candidate keeps the lowest latency measured for its structure so far
        # (zero-shot and every rung), so one slow moment of a shared machine cannot drop it
        # (one ResNet-20 candidate measured 0.19 ms zero-shot and 0.39 ms after its first
        # rung; 0.12 ms alone).
        self.lowest_ms: dict[str, float] = {}

    # -- inputs -----------------------------------------------------------------------------
    def run(self, model, data, *, metric, loss, task, trust_code, limit, train_limit,
            batch_size, data_root, val_size, holdout) -> AdviceResult:  # fmt: skip
        from .report import write_report

        t_start = time.monotonic()
        budget, say = self.budget, self.say
        budget.require_limit()
        self.task, self.references, notes = resolve_task(metric, loss, task)
        if self.task.is_classification:
            budget.check_drop_units(self.task.headline)  # before any work
        self.data = resolve_data(data, seed=self.seed, limit=limit, train_limit=train_limit,
                                 batch_size=batch_size, data_root=data_root, val_size=val_size,
                                 holdout=holdout)  # fmt: skip
        self.model = resolve_model(model, self.data, trust_code=trust_code)
        if any(p.device.type != "cpu" for p in self.model.parameters()):
            self.model = copy.deepcopy(self.model).cpu()  # measured where the budget deploys
        self.out.mkdir(parents=True, exist_ok=True)
        # the candidate runs of an earlier advice in this folder are this advice's to replace
        # (the runner refuses to write over a run folder without --resume)
        shutil.rmtree(self.out / "candidates", ignore_errors=True)
        ckpt = self.out / BASELINE_FILE
        save_checkpoint(self.model, ckpt)
        self.recipe_model, model_note = recipe_model(self.model, BASELINE_FILE)
        self.factory = model_factory(self.model)
        self.notes = [model_note, data_note(self.data), *notes]
        self.notes += [f"{k}: {v}" for k, v in self.references.items()]
        self.calibration = first_batch(self.data.train, self.data.name)[0]
        self.screen_batches = ReplayBatches(Limited(self.data.selection, SCREEN_SAMPLES))

        what = self.task.headline if self.task.is_classification else f"metric {self.task.name}"
        say(f"measuring the baseline ({what} on {self.data.note})")
        self.baseline = measure_model(self.model, budget, self.calibration, artifact=ckpt,
                                      bytes_kind="checkpoint", loader=self.data.selection,
                                      task=self.task)  # fmt: skip
        budget.check_drop_units(self.task.headline)  # a user metric names its headline now
        self.hib = self.task.higher_is_better
        test = self.data.test
        baseline_test = None if test is None else score_of(self.task, self.model, test)
        share = layer_latency_share(self.model, latency_inputs(self.calibration,
                                                               budget.batch_size),
                                    threads=budget.threads)  # fmt: skip
        traits = model_traits(self.model, share, first_sample(self.calibration))

        say("choosing candidate strengths from zero-shot measurements (bytes, MACs, latency)")
        candidates = generate(budget, self.baseline, traits, epochs=self.epochs, lr=self.lr,
                              probe=self.probe)  # fmt: skip
        sens, sens_note = None, "off"
        if self.use_sensitivity:
            sens, sens_note = maybe_sensitivity(self.model, budget, self.screen_batches,
                                                self.calibration, self.task, self.data.note, say)  # fmt: skip
        if sens is not None:
            say("allocating per-layer settings from the sensitivity tables")
            extra = sensitivity_candidates(
                budget, self.baseline, sens, epochs=self.epochs, lr=self.lr, probe=self.probe,
                keep_fraction=_keep_fraction(budget, self.baseline),
            )  # fmt: skip
            names = {c.name for c in candidates}
            candidates += [c for c in extra if c.name not in names]
        say(f"screening {len(candidates)} candidates zero-shot")
        screened = screen(candidates, budget, self.baseline, self.zero_shot,
                          higher_is_better=self.hib, progress=self.progress)  # fmt: skip
        order = self.first_rung(screened)

        self.total = self.data.train_samples
        limits: list[int | None] = (
            rung_limits(self.total, self.rungs, self.eta, extra=self.extra_rungs)
            if budget.finetune else [None]
        )  # fmt: skip
        self.counter = iter(range(10**6))
        evaluations = successive_halving(order, self.evaluate, limits=limits, eta=self.eta,
                                         time_limit_s=budget.time_limit_s, start=t_start,
                                         progress=self.progress, higher_is_better=self.hib)  # fmt: skip
        if budget.max_latency_ms is not None and self.baseline.latency_ms and evaluations:
            evaluations = confirm(evaluations, self.model, self.baseline, budget,
                                  self.calibration, say, load=self.load,
                                  higher_is_better=self.hib)  # fmt: skip
        chosen, closest = choose(evaluations, self.hib)
        for e in (chosen, closest):
            if e is not None and test is not None:  # the only test measurements of the search
                e.test_score = self.test_score(e)
        result = AdviceResult(
            budget=budget, baseline=self.baseline, chosen=chosen, closest=closest,
            evaluations=evaluations, screened=screened, latency_share=share, out_dir=self.out,
            settings={
                "data": self.data.name, "selection_split": self.data.split,
                "selection": self.data.note, "limit": limit, "train_limit": train_limit,
                "train_samples": self.total, "seed": self.seed, "batch_size": batch_size,
                "epochs": self.epochs, "lr": self.lr, "rungs": limits, "eta": self.eta,
                "max_candidates": self.max_candidates, "sensitivity": sens_note,
                "metric": {"name": self.task.name, "headline": self.task.headline,
                           "higher_is_better": self.hib},
                "recipe_notes": self.notes, "has_test": test is not None,
            },
            baseline_test_score=baseline_test, sensitivity=sens,
        )  # fmt: skip
        if chosen is not None and chosen.artifact is not None:
            result.model = self.load(chosen)
        result.seconds = time.monotonic() - t_start
        write_report(result)
        say(result.message)
        return result

    # -- zero-shot ----------------------------------------------------------------------------
    def zero_shot(self, stages) -> Measurement:
        # training stages are skipped zero-shot: pipelines that differ only there (fine-tune vs
        # distillation) share one measurement, so latency noise cannot split them
        key = json.dumps([s for s in stages if next(iter(s)) not in TRAINING_STAGES],
                         sort_keys=True)  # fmt: skip
        if key not in self.cache:
            self.cache[key] = zero_shot(
                self.model, stages, self.budget, calibration=self.calibration,
                loader=self.screen_batches, task=self.task,
                latency=self.budget.max_latency_ms is not None,
            )  # fmt: skip
        return self.cache[key]

    def probe(self, stages) -> Measurement | None:
        try:
            return self.zero_shot(stages)
        except Exception:  # a pipeline that cannot be applied fits nothing
            return None

    def first_rung(self, screened: list[Screened]) -> list[Candidate]:
        kept = [s for s in screened if s.kept]
        scores = {s.candidate.name: goodness(s.measurement.score, self.hib) for s in kept}
        order = interleave([s.candidate for s in kept], scores)[: self.max_candidates]
        if not order:
            # nothing can fit: still run the closest two so the report shows real numbers
            near = sorted((s for s in screened if s.measurement is not None),
                          key=lambda s: judge(self.budget, s.measurement, self.baseline.score,
                                              self.hib)["excess"])  # fmt: skip
            order = [s.candidate for s in near[:2]]
            self.say("no candidate fits the budget even before training; running the closest ones")
        return order

    # -- candidate runs -------------------------------------------------------------------------
    def steady(self, candidate: Candidate, m: Measurement) -> Measurement:
        if m.latency_ms is None:
            return m
        seen = [m.latency_ms, self.lowest_ms.get(candidate.name, math.inf)]
        zero = self.probe(candidate.stages) if self.budget.max_latency_ms is not None else None
        if zero is not None and zero.latency_ms is not None:
            seen.append(zero.latency_ms)
        self.lowest_ms[candidate.name] = min(seen)
        return dataclasses.replace(m, latency_ms=self.lowest_ms[candidate.name])

    def evaluate(self, candidate: Candidate, rung: int, n: int | None) -> Evaluation:
        from ..io.record import architecture_of
        from ..recipes import parse_recipe, run_recipe
        from ..recipes.artifacts import is_runtime_module

        run_dir = self.out / "candidates" / f"{next(self.counter):02d}-{candidate.name}-r{rung}"
        n, factor = split_resource(n, self.total)  # past the data set, rungs add epochs
        source = candidate_recipe(
            candidate.with_epochs(factor), data=self.data.recipe_data(n), seed=self.seed,
            budget=self.budget, latency=False, model=self.recipe_model,
            references=self.references, device=self.device, amp=self.amp,
        )  # fmt: skip
        t0 = time.monotonic()
        measurement, artifact, error = None, None, None
        try:
            # the recipe names what can be named; the run gets the objects themselves, so the
            # search trains on exactly the batches it describes and never reloads the user's code
            result = run_recipe(parse_recipe(source, base_dir=self.out), run_dir, progress=False,
                                log=lambda _line: None, model=copy.deepcopy(self.model),
                                data=self.data.bundle(n), task=self.task)  # fmt: skip
            measurement, artifact = measure_run(result, self.budget, self.calibration)
            measurement = self.steady(candidate, measurement)
            if not is_runtime_module(result.model) and architecture_of(result.model) is None:
                self.in_memory[str(run_dir)] = result.model.cpu()
        except Exception as exc:  # a failing pipeline is a result of the search, not its end
            error = f"{type(exc).__name__}: {exc}"[:300]
        evaluation = Evaluation(
            candidate, rung, n, measurement, seconds=time.monotonic() - t0, out_dir=str(run_dir),
            recipe=source, artifact=None if artifact is None else str(artifact), error=error,
            **judge(self.budget, measurement, self.baseline.score, self.hib),
        )  # fmt: skip
        self.say(f"{evaluation.label}: " + (error or self.describe(measurement)))
        return evaluation

    def load(self, evaluation: Evaluation) -> nn.Module:
        """The evaluation's artifact from disk; the run's own model when no file can rebuild
        the user's architecture (a Python object without a factory)."""
        if evaluation.out_dir in self.in_memory:
            return self.in_memory[evaluation.out_dir]
        return load_artifact(evaluation, self.budget, factory=self.factory)

    def test_score(self, evaluation: Evaluation) -> float | None:
        """The metric on the test data of the evaluation's deployable artifact."""
        if evaluation.artifact is None:
            return None
        return score_of(self.task, self.load(evaluation), self.data.test)

    def describe(self, m: Measurement | None) -> str:
        from .report import format_drop, format_score

        if m is None:
            return "failed"
        h = self.task.headline
        drop = None if m.score is None or self.baseline.score is None else (
            self.task.drop({h: self.baseline.score}, {h: m.score}))  # fmt: skip
        return (
            f"{h} {format_score(m.score, h)} (drop {format_drop(drop, h)}), {m.bytes:,} B, "
            + (f"{m.latency_ms:.3f} ms, " if m.latency_ms is not None else "")
            + f"{m.macs:,} MACs"
        )
