"""``advise``: from a trained model, a data set and a budget to a measured, reproducible choice.

Steps: measure the baseline and where its time goes; generate candidate pipelines from the
rules of thumb (:mod:`.candidates`); measure each zero-shot and drop those whose structure cannot
meet the budget; run the rest as recipes under successive halving (:mod:`.search`); choose the
most accurate one that meets every limit, re-timed beside the baseline (:mod:`.confirm`); write
the report, the Pareto plot and the recipe that reproduces the choice (:mod:`.report`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import input_shape as data_input_shape
from ..data import load as load_dataset
from ..data import loader as make_loader
from ..data.datasets import VAL_SIZE
from ..io import load_checkpoint, save_checkpoint
from .allocation import sensitivity_candidates
from .budget import Budget, BudgetError, Measurement, resource_ok
from .candidates import (
    TRAINING_STAGES,
    Candidate,
    _keep_fraction,
    generate,
    interleave,
    model_traits,
)
from .confirm import confirm, load_artifact
from .measure import LayerTime, layer_latency_share, measure_model, measure_run, top1, zero_shot
from .search import Evaluation, choose, judge, rung_limits, split_resource, successive_halving
from .sensitivity import (
    SENS_BITS,
    SENS_CHANNELS,
    SENS_RANKS,
    SENS_SPARSITIES,
    Sensitivity,
    measure_sensitivity,
)

BASELINE_FILE = "baseline.safetensors"


@dataclasses.dataclass
class Screened:
    """A candidate measured zero-shot (technique stages only, no training)."""

    candidate: Candidate
    measurement: Measurement | None
    kept: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able)."""
        return {"candidate": self.candidate.to_dict(), "kept": self.kept, "reason": self.reason,
                "measurement": self.measurement.to_dict() if self.measurement else None}  # fmt: skip


@dataclasses.dataclass
class AdviceResult:
    """What :func:`advise` found.

    Attributes:
        budget: the budget.
        baseline: the trained model, measured like the candidates (top-1 on the selection
            split: validation, or test with ``val_size=0``).
        baseline_test_top1: the baseline's top-1 on the test split.
        chosen: the most accurate evaluation that meets the budget, or ``None``.
        closest: when nothing meets the budget, the evaluation closest to it.
        evaluations: every candidate run, in order.
        screened: the zero-shot screening of every generated candidate.
        latency_share: per-layer share of the eager forward time.
        out_dir: the output folder.
        recipe_path: the YAML recipe reproducing ``chosen`` (``None`` when nothing was chosen).
        report_md, report_json, plot: report files.
        seconds: wall time of the whole advice.
        settings: the search settings (``eval_split`` says where candidates were selected,
            ``sensitivity`` whether and how long the per-layer scan ran).
        sensitivity: the per-layer sensitivity tables (``None`` when not measured).
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
    baseline_test_top1: float | None = None
    sensitivity: Sensitivity | None = None

    @property
    def message(self) -> str:
        """One line: what was chosen, or that nothing meets the budget and what came closest."""
        if self.chosen is not None:
            return f"chosen: {self.chosen.label} (meets the budget)"
        if self.closest is not None:
            return ("no candidate meets the budget; closest: "
                    f"{self.closest.label} ({'; '.join(self.closest.violations)})")  # fmt: skip
        return "no candidate meets the budget (none could be evaluated)"


def candidate_recipe(
    candidate: Candidate,
    *,
    data: dict[str, Any],
    seed: int,
    budget: Budget,
    train_limit: int | None,
    latency: bool,
    checkpoint: str = BASELINE_FILE,
) -> dict[str, Any]:
    """The recipe (a dict, as YAML would load it) that runs ``candidate`` from the checkpoint.

    Args:
        candidate: the pipeline.
        data: ``{"name": ..., "batch_size": ..., "limit": ..., "root": ...}`` (``None`` values
            are left out).
        seed: recipe seed.
        budget: latency settings go into ``measure``.
        train_limit: training samples of the recovery stages (``None``: all).
        latency: measure latency at every stage of the run report.
        checkpoint: the trained model, relative to the recipe's folder or absolute.
    """
    data = {k: v for k, v in {**data, "train_limit": train_limit}.items() if v is not None}
    return {
        "name": f"advise-{candidate.name}",
        "model": {"checkpoint": checkpoint},
        "data": data,
        "seed": seed,
        "measure": {
            "latency": latency,
            "threads": budget.threads,
            "batch_size": budget.batch_size,
            "runs": 20,
        },
        "stages": [dict(s) for s in candidate.stages],
    }


def advise(
    model: nn.Module | str | os.PathLike,
    data_name: str,
    budget: Budget,
    *,
    out_dir: str | os.PathLike,
    seed: int = 0,
    progress: bool = True,
    limit: int | None = None,
    train_limit: int | None = None,
    batch_size: int = 64,
    data_root: str | None = None,
    epochs: int = 1,
    lr: float = 1e-3,
    max_candidates: int = 8,
    rungs: int = 3,
    eta: int = 3,
    extra_rungs: int = 2,
    val_size: int = VAL_SIZE,
    sensitivity: bool = True,
    log=print,
) -> AdviceResult:
    """Choose compression methods for ``budget``: search, measure, report, emit a recipe.

    Args:
        model: the trained model, or the path of its checkpoint.
        data_name: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.
        budget: the limits (at least one of bytes, latency, MACs) and the search's time limit.
        out_dir: output folder (``advice.md``, ``advice.json``, ``pareto.png``, ``recipe.yaml``,
            ``baseline.safetensors`` and one run folder per evaluated candidate).
        seed: recipe seed.
        progress: show progress bars.
        limit: evaluation samples for every accuracy, on the validation and on the test split
            (``None``: the whole split).
        train_limit: at most this many training samples for recovery (``None``: all those not
            held out for validation).
        batch_size: training batch size of the recovery stages.
        data_root: data directory.
        epochs: epochs of each recovery stage.
        lr: Adam learning rate of the recovery stages.
        max_candidates: candidates in the first rung.
        rungs: successive-halving rungs (1 when ``budget.finetune`` is off).
        eta: keep a ``1/eta`` fraction per rung and give it ``eta`` times more data.
        extra_rungs: rungs after the whole data set, each with ``eta`` times more epochs, run
            only while the time limit allows.
        val_size: the last ``val_size`` training samples are held out as a validation split:
            screening, successive halving and the choice compare top-1 on it (the baseline's
            too), recovery trains on the samples before it, and only the chosen / closest
            candidate and the baseline are measured on the test split, once, for the report.
            ``0``: select on the test split (the old behaviour; its accuracy is optimistic).
        sensitivity: measure each layer's sensitivity zero-shot (bits, sparsity, channels, on
            the screening batches) and add candidates with per-layer settings allocated from it
            (``*-sens``), when the scan's estimated time is within 20 % of the time limit.
        log: one-line progress messages (``None`` for silence).

    Example:
        >>> res = advise("lenet5.safetensors", "mnist", Budget(max_bytes=20_000, max_drop=0.3),
        ...              out_dir="advice/lenet5")  # doctest: +SKIP
        >>> res.message, res.recipe_path  # doctest: +SKIP
    """
    from ..metrics.latency import torch_threads

    with torch_threads(budget.threads):  # the caller's thread setting is restored afterwards
        return _advise(
            model, data_name, budget, out_dir=out_dir, seed=seed, progress=progress, limit=limit,
            train_limit=train_limit, batch_size=batch_size, data_root=data_root, epochs=epochs,
            lr=lr, max_candidates=max_candidates, rungs=rungs, eta=eta, extra_rungs=extra_rungs,
            val_size=val_size, sensitivity=sensitivity, log=log,
        )  # fmt: skip


def _advise(model, data_name, budget, *, out_dir, seed, progress, limit, train_limit, batch_size,
            data_root, epochs, lr, max_candidates, rungs, eta, extra_rungs, val_size,
            sensitivity, log) -> AdviceResult:  # fmt: skip
    from .report import write_report

    t_start = time.monotonic()
    say = log or (lambda _line: None)
    budget.require_limit()
    n_train = len(load_dataset(data_name, "train", root=data_root))
    if isinstance(val_size, bool) or not isinstance(val_size, int) or not 0 <= val_size < n_train:
        raise BudgetError(f"val_size must be an integer in [0, {n_train}) (training samples held "
                          f"out for selection; 0 selects on the test split), got {val_size!r}")  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not isinstance(model, nn.Module):
        model, _ = load_checkpoint(model)
    ckpt = out / BASELINE_FILE
    save_checkpoint(model, ckpt)
    shape = data_input_shape(data_name)
    # select on the validation split (the last val_size training samples), report on test
    split = "val" if val_size else "test"
    holdout = val_size if val_size else 0
    vsize = val_size or VAL_SIZE
    selection = make_loader(data_name, split, 1000, root=data_root, limit=limit, val_size=vsize)
    test = make_loader(data_name, "test", 1000, root=data_root, limit=limit)
    screen_n = min(limit or 1000, 1000)
    screen = make_loader(data_name, split, screen_n, root=data_root, limit=screen_n,
                         val_size=vsize)  # fmt: skip
    calibration = next(iter(make_loader(data_name, "train", batch_size, root=data_root,
                                        limit=train_limit, holdout=holdout)))[0]  # fmt: skip

    say(f"measuring the baseline (top-1 on the {'validation' if val_size else 'test'} split)")
    baseline = measure_model(model, budget, shape, artifact=ckpt, bytes_kind="checkpoint",
                             loader=selection)  # fmt: skip
    baseline_test = top1(model, test) if val_size else baseline.top1
    share = layer_latency_share(model, torch.zeros(budget.batch_size, *shape),
                                threads=budget.threads)  # fmt: skip
    traits = model_traits(model, share, calibration[:1])
    cache: dict[str, Measurement] = {}

    def measure_zero_shot(stages) -> Measurement:
        # training stages are skipped zero-shot: pipelines that differ only there (fine-tune vs
        # distillation) share one measurement, so latency noise cannot split them
        key = json.dumps([s for s in stages if next(iter(s)) not in TRAINING_STAGES],
                         sort_keys=True)  # fmt: skip
        if key not in cache:
            cache[key] = zero_shot(model, stages, budget, shape, calibration=calibration,
                                   loader=screen, latency=budget.max_latency_ms is not None)  # fmt: skip
        return cache[key]

    def probe(stages) -> Measurement | None:
        try:
            return measure_zero_shot(stages)
        except Exception:  # a pipeline that cannot be applied fits nothing
            return None

    say("choosing candidate strengths from zero-shot measurements (bytes, MACs, latency)")
    candidates = generate(budget, baseline, traits, epochs=epochs, lr=lr, probe=probe)
    sens, sens_note = None, "off"
    if sensitivity:
        sens, sens_note = _sensitivity(model, budget, screen, calibration, split, say)
    if sens is not None:
        say("allocating per-layer settings from the sensitivity tables")
        extra = sensitivity_candidates(budget, baseline, sens, epochs=epochs, lr=lr, probe=probe,
                                       keep_fraction=_keep_fraction(budget, baseline))  # fmt: skip
        names = {c.name for c in candidates}
        candidates += [c for c in extra if c.name not in names]
    say(f"screening {len(candidates)} candidates zero-shot")
    screened = _screen(candidates, budget, baseline, measure_zero_shot, progress)
    kept = [s for s in screened if s.kept]
    scores = {s.candidate.name: (s.measurement.top1 or 0.0) for s in kept}
    order = interleave([s.candidate for s in kept], scores)[:max_candidates]
    if not order:
        # nothing can fit: still run the closest two so the report shows real numbers
        near = sorted((s for s in screened if s.measurement is not None),
                      key=lambda s: judge(budget, s.measurement, baseline.top1)["excess"])  # fmt: skip
        order = [s.candidate for s in near[:2]]
        say("no candidate fits the budget even before training; running the closest ones")

    available = n_train - holdout
    total = min(train_limit, available) if train_limit else available
    limits: list[int | None] = (
        rung_limits(total, rungs, eta, extra=extra_rungs) if budget.finetune else [train_limit]
    )
    data = {"name": data_name, "batch_size": batch_size, "limit": limit, "root": data_root}
    if val_size:  # the recipe trains and measures exactly as the search did
        data.update(eval_split="val", val_size=val_size)
    counter = iter(range(10**6))
    # Latency is set by the architecture, not by the weights, and noise only ever adds time:
    # each candidate keeps the lowest latency measured for its structure so far (zero-shot and
    # every rung), so one slow moment of a shared machine cannot drop it (one ResNet-20
    # candidate measured 0.19 ms zero-shot and 0.39 ms after its first rung; 0.12 ms alone).
    lowest_ms: dict[str, float] = {}

    def steady(candidate: Candidate, m: Measurement) -> Measurement:
        if m.latency_ms is None:
            return m
        seen = [m.latency_ms, lowest_ms.get(candidate.name, math.inf)]
        zero = probe(candidate.stages) if budget.max_latency_ms is not None else None
        if zero is not None and zero.latency_ms is not None:
            seen.append(zero.latency_ms)
        lowest_ms[candidate.name] = min(seen)
        return dataclasses.replace(m, latency_ms=lowest_ms[candidate.name])

    def evaluate(candidate: Candidate, rung: int, n: int | None) -> Evaluation:
        from ..recipes import parse_recipe, run_recipe

        run_dir = out / "candidates" / f"{next(counter):02d}-{candidate.name}-r{rung}"
        n, factor = split_resource(n, total)  # past the data set, rungs add epochs
        source = candidate_recipe(candidate.with_epochs(factor), data=data, seed=seed,
                                  budget=budget, train_limit=n, latency=False)  # fmt: skip
        t0 = time.monotonic()
        measurement, artifact, error = None, None, None
        try:
            result = run_recipe(parse_recipe(source, base_dir=out), run_dir, progress=False,
                                log=lambda _line: None)  # fmt: skip
            measurement, artifact = measure_run(result, budget, shape)
            measurement = steady(candidate, measurement)
        except Exception as exc:  # a failing pipeline is a result of the search, not its end
            error = f"{type(exc).__name__}: {exc}"[:300]
        evaluation = Evaluation(
            candidate, rung, n, measurement, seconds=time.monotonic() - t0, out_dir=str(run_dir),
            recipe=source, artifact=None if artifact is None else str(artifact), error=error,
            **judge(budget, measurement, baseline.top1),
        )  # fmt: skip
        say(f"{evaluation.label}: " + (error or _describe(measurement, baseline)))
        return evaluation

    evaluations = successive_halving(order, evaluate, limits=limits, eta=eta,
                                     time_limit_s=budget.time_limit_s, start=t_start,
                                     progress=progress)  # fmt: skip
    if budget.max_latency_ms is not None and baseline.latency_ms and evaluations:
        evaluations = confirm(evaluations, model, baseline, budget, shape, say)
    chosen, closest = choose(evaluations)
    for e in (chosen, closest):
        if e is not None:  # the only test-split measurements of the search
            e.test_top1 = _test_top1(e, test, budget) if val_size else e.measurement.top1
    result = AdviceResult(
        budget=budget, baseline=baseline, chosen=chosen, closest=closest, evaluations=evaluations,
        screened=screened, latency_share=share, out_dir=out,
        settings={"data": data_name, "limit": limit, "train_limit": train_limit, "seed": seed,
                  "batch_size": batch_size, "epochs": epochs, "lr": lr, "rungs": limits,
                  "eta": eta, "max_candidates": max_candidates, "eval_split": split,
                  "val_size": val_size, "sensitivity": sens_note},
        baseline_test_top1=baseline_test, sensitivity=sens,
    )  # fmt: skip
    result.seconds = time.monotonic() - t_start
    write_report(result)
    say(result.message)
    return result


def _sensitivity(model, budget: Budget, screen, calibration, split: str, say):
    """The per-layer scans the budget needs, if their estimated time fits; ``(tables, note)``."""
    storage = budget.max_bytes is not None
    speed = budget.max_macs is not None or budget.max_latency_ms is not None
    scans = {
        "bits": SENS_BITS if storage else (),
        "sparsities": SENS_SPARSITIES if storage and budget.finetune else (),
        "channels": SENS_CHANNELS if speed and budget.finetune else (),
        "ranks": SENS_RANKS if speed else (),
    }
    per_layer = sum(len(v) for v in scans.values())
    if not per_layer:
        return None, "skipped: no per-layer setting applies to this budget"
    t0 = time.monotonic()
    top1(model, screen)
    layers = sum(1 for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear))
    estimate = (time.monotonic() - t0) * per_layer * layers
    if estimate > 0.2 * budget.time_limit_s:
        return None, (f"skipped: the scan would take ~{estimate:.0f} s, more than 20 % of the "
                      "time limit")  # fmt: skip
    say(
        f"measuring per-layer sensitivity ({layers} layers x {per_layer} settings, ~{estimate:.0f} s)"
    )
    sens = measure_sensitivity(model, screen, calibration, **scans)
    return sens, f"measured in {sens.seconds:.1f} s on {sens.samples} {split} samples"


def _test_top1(evaluation: Evaluation, test, budget: Budget) -> float | None:
    """Top-1 on the test split of the evaluation's deployable artifact, loaded back from disk."""
    if evaluation.artifact is None:
        return None
    return top1(load_artifact(evaluation, budget), test)


def _describe(m: Measurement | None, base: Measurement) -> str:
    if m is None:
        return "failed"
    drop = 100 * ((base.top1 or 0) - (m.top1 or 0))
    return (
        f"top-1 {100 * (m.top1 or 0):.2f}% (drop {drop:+.2f} pt), {m.bytes:,} B, "
        + (f"{m.latency_ms:.3f} ms, " if m.latency_ms is not None else "")
        + f"{m.macs:,} MACs"
    )


def _screen(candidates, budget, baseline, measure, progress):
    """Zero-shot measurement of every candidate; keep those whose structure fits the budget.

    The bytes of a pruned-and-shared model barely move during its fine-tunes, so they must fit
    with a 3 % margin; latency is noisy and gets 10 % slack; MACs are exact.
    """
    from .search import _bar

    relaxed = dataclasses.replace(
        budget,
        max_bytes=None if budget.max_bytes is None else max(1, int(budget.max_bytes * 0.97)),
        max_latency_ms=None if budget.max_latency_ms is None else budget.max_latency_ms * 1.1,
    )  # fmt: skip
    out = []
    with _bar(progress, "zero-shot screening", len(candidates)) as advance:
        for cand in candidates:
            try:
                m = measure(cand.stages)
            except Exception as exc:  # an inapplicable technique rules the candidate out
                out.append(Screened(cand, None, False, f"{type(exc).__name__}: {exc}"[:300]))
                advance()
                continue
            fits = resource_ok(relaxed, m)
            reason = "" if fits else "; ".join(
                str(v) for v in judge(relaxed, m, baseline.top1)["violations"]
                if not v.startswith("drop")
            )  # fmt: skip
            out.append(Screened(cand, m, fits, reason))
            advance()
    return out
