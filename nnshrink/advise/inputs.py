"""What the advisor works on: the user's model, data and metric, resolved once.

* **data**: a built-in name, a recipe ``data:`` mapping (what the CLI builds from ``--data``,
  ``--data-dir``, ...), a ``"package.module:callable"`` factory, a ``.pt`` / ``.npz`` file, a
  :class:`~nnshrink.data.DataBundle` or ``(train, test[, val])`` loaders. The advisor selects
  on the data's own ``val`` batches when it has them, otherwise on a held-back part of the
  training data that recovery never trains on (:func:`~nnshrink.data.holdout_split`; for a
  built-in set its last ``val_size`` training samples), and never on ``test``, which is used
  once, for the report (:class:`AdviceData`).
* **model**: any ``nn.Module``, or a reference (a checkpoint / ``.nns`` file, a zoo name, a
  factory, ``hf:DIR``) built as recipes build it.
* **metric**: a :class:`~nnshrink.train.task.Task`, or a metric / loss given as callables or
  ``"package.module:callable"`` references (default: top-1 classification).

What came by reference is named in the recipes the advisor writes; what came as a Python object
is not (a recipe cannot name an object), and the recipe says so.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..core.sensitivity import ReplayBatches
from ..data import DataBundle, DataError, Limited, first_batch, holdout_split, open_data
from ..data import load as load_builtin
from ..data import names as builtin_names
from ..data.datasets import VAL_SIZE
from ..train.task import Task, loss_criterion, task_from_references
from ..utils.references import is_reference

HOLDOUT = 0.1  # fraction of the training data held back for selection when there is no val


@dataclasses.dataclass
class AdviceData:
    """The advisor's data: training batches, the selection batches and the test batches.

    Attributes:
        name: a label for reports.
        train: training batches for recovery (never overlapping ``selection``).
        selection: where candidates are measured and compared (``val``, or held back).
        test: measured once, for the chosen candidate and the baseline (``None``: no test data).
        split: ``"val"`` (the data's own validation batches) or ``"train-holdout"``.
        note: one sentence saying which samples the selection uses.
        train_samples: training samples available to recovery (after ``train_limit``).
        spec: the recipe ``data:`` mapping when the data came by reference, else ``None``.
        exact: whether ``recipe_data`` reproduces the search's training and selection data
            (``False`` for a held-back part of a factory's training data: no recipe key holds
            it back).
        num_classes: number of classes when the data says (zoo models are built with it).
    """

    name: str
    train: Iterable[Any]
    selection: Iterable[Any]
    test: Iterable[Any] | None
    split: str
    note: str
    train_samples: int
    spec: dict[str, Any] | None = None
    exact: bool = True
    num_classes: int | None = None
    _train_for: Callable[[int | None], Iterable[Any]] | None = None

    def train_for(self, samples: int | None) -> Iterable[Any]:
        """The training batches of one run: the first ``samples`` (``None``: all)."""
        if self._train_for is not None:
            return self._train_for(samples)
        if samples is None or samples >= self.train_samples:
            return self.train
        return Limited(self.train, samples)

    def bundle(self, samples: int | None) -> DataBundle:
        """What a candidate's recipe run gets: training batches, measured on the selection."""
        return DataBundle(self.train_for(samples), self.selection, self.selection, name=self.name,
                          num_classes=self.num_classes)  # fmt: skip

    def recipe_data(self, samples: int | None) -> dict[str, Any] | None:
        """The recipe ``data:`` mapping of a run on ``samples`` training samples (``None``
        when the data came as Python objects)."""
        if self.spec is None:
            return None
        data = dict(self.spec)
        if samples is not None and self.exact:
            data["train_limit"] = samples
        return {k: v for k, v in data.items() if v is not None}


def count_samples(batches: Iterable[Any]) -> int:
    """Samples in an iterable of ``(inputs, targets)`` batches (read once when it cannot tell).

    Example:
        >>> import torch
        >>> count_samples([(torch.zeros(4, 2), torch.zeros(4)), (torch.zeros(3, 2), torch.zeros(3))])
        7
    """
    if isinstance(batches, Limited):
        return min(batches.limit, count_samples(batches.batches))
    labels = getattr(batches, "labels", None)  # nnshrink's in-memory loaders
    if labels is not None and hasattr(labels, "__len__"):
        return len(labels)
    dataset = getattr(batches, "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__"):
        return len(dataset)
    return sum(len(batch[1]) for batch in batches)


def data_spec_of(data: str | os.PathLike) -> dict[str, Any]:
    """The recipe ``data:`` mapping a string names: a built-in set, a factory, a file, a folder.

    Example:
        >>> data_spec_of("tests.usercode:make_data")
        {'factory': 'tests.usercode:make_data'}
    """
    text = os.fspath(data)
    if text in builtin_names():
        return {"name": text}
    if Path(text).suffix in (".pt", ".pth", ".npz") and Path(text).is_file():
        return {"file": text}
    if Path(text).is_dir():
        return {"image_dir": text}
    if is_reference(text):
        return {"factory": text}
    raise DataError(
        f"data {text!r}: not a built-in set ({', '.join(builtin_names())}), a "
        "'package.module:callable' factory, a .pt/.npz file or an image folder"
    )


def resolve_data(
    data: Any,
    *,
    seed: int = 0,
    limit: int | None = None,
    train_limit: int | None = None,
    batch_size: int | None = None,
    data_root: str | None = None,
    val_size: int = VAL_SIZE,
    holdout: float = HOLDOUT,
) -> AdviceData:
    """Resolve ``data`` into training, selection and test batches (see the module docstring).

    Args:
        data: a name, a mapping, a file, a factory reference, a DataBundle or loaders.
        seed: shuffling and the held-back split.
        limit: the first N selection and test samples (``None``: all).
        train_limit: at most N training samples for recovery.
        batch_size: training batch size of a built-in set or a factory that takes one.
        data_root: folder of a built-in set's files.
        val_size: a built-in set's last N training samples are the selection data.
        holdout: fraction of the training data held back for selection when the data has no
            validation batches.

    Raises:
        DataError: unreadable data, or no way to select without touching test.
    """
    if isinstance(data, DataBundle | tuple | list):
        bundle = data if isinstance(data, DataBundle) else DataBundle(*data, name="user data")
        bundle = dataclasses.replace(bundle)
        if train_limit and bundle.train is not None:
            bundle.train = Limited(bundle.train, train_limit)
        return _from_bundle(bundle, None, limit=limit, seed=seed, holdout=holdout)
    spec = dict(data) if isinstance(data, Mapping) else data_spec_of(data)
    for key in ("eval_split", "val_size"):  # the advisor decides where it selects
        spec.pop(key, None)
    if data_root and "name" in spec:
        spec.setdefault("root", data_root)
    for key, value in (("batch_size", batch_size), ("limit", limit),
                       ("train_limit", train_limit)):  # fmt: skip
        if value is not None:
            spec[key] = value
    if "name" in spec:
        return _builtin(spec, seed, val_size)
    bundle = open_data(spec, seed=seed)
    return _from_bundle(bundle, spec, limit=None, seed=seed, holdout=holdout)


def _builtin(spec: dict[str, Any], seed: int, val_size: int) -> AdviceData:
    name = spec["name"]
    total = len(load_builtin(name, "train", root=spec.get("root")))
    if isinstance(val_size, bool) or not isinstance(val_size, int) or not 0 < val_size < total:
        raise DataError(
            f"val_size must be an integer in (0, {total}): the last val_size training samples "
            "of a built-in set are where candidates are compared (advise never selects on "
            f"test), got {val_size!r}"
        )
    spec = {**spec, "eval_split": "val", "val_size": val_size}
    cap = spec.pop("train_limit", None)
    available = total - val_size
    samples = min(cap, available) if cap else available

    def train_for(n: int | None) -> Iterable[Any]:
        # the same call the recipe runner makes for `train_limit: n`, so a recipe reproduces it
        n = samples if n is None else min(n, samples)
        return open_data({**spec, "train_limit": n}, seed=seed).train

    selection = open_data(spec, seed=seed).val
    test_spec = {k: spec[k] for k in ("name", "root", "limit") if spec.get(k) is not None}
    test = open_data(test_spec, seed=seed).test
    if cap:
        spec["train_limit"] = cap
    return AdviceData(
        name=name, train=train_for(None), selection=selection, test=test, split="train-holdout",
        note=f"the last {val_size:,} training samples of {name}, held out from training",
        train_samples=samples, spec=spec, exact=True, num_classes=10, _train_for=train_for,
    )  # fmt: skip


def _from_bundle(
    bundle: DataBundle, spec: dict[str, Any] | None, *, limit: int | None, seed: int,
    holdout: float,
) -> AdviceData:  # fmt: skip
    if bundle.train is None:
        raise DataError(f"{bundle.name}: advise needs training batches (calibration, recovery, "
                        "and a held-back part to select on when there is no val)")  # fmt: skip
    first_batch(bundle.train, f"{bundle.name} (train)")
    test = bundle.test
    if limit and test is not None:
        test = ReplayBatches(Limited(test, limit))  # keeps .dataset for a user's metric
    if bundle.val is not None:
        selection = ReplayBatches(Limited(bundle.val, limit)) if limit else bundle.val
        return AdviceData(
            name=bundle.name, train=bundle.train, selection=selection, test=test, split="val",
            note=f"the validation batches of {bundle.name}", train_samples=count_samples(
                bundle.train), spec=None if spec is None else {**spec, "eval_split": "val"},
            num_classes=bundle.num_classes,
        )  # fmt: skip
    if not 0 < holdout < 1:
        raise DataError(f"holdout must be a fraction in (0, 1), got {holdout!r}")
    train, held = holdout_split(bundle.train, holdout, seed=seed)
    held_n = count_samples(held)
    selection = ReplayBatches(Limited(held, limit)) if limit else held
    return AdviceData(
        name=bundle.name, train=train, selection=selection, test=test, split="train-holdout",
        note=(f"a held-back {holdout:.0%} of the training data of {bundle.name} ({held_n:,} "
              f"samples, seed {seed}), never trained on; {bundle.name} has no validation "
              "batches"),
        train_samples=count_samples(train), spec=spec, exact=False,
        num_classes=bundle.num_classes,
    )  # fmt: skip


# -- model ------------------------------------------------------------------------------------


def model_spec_of(model: str | os.PathLike, trust_code: bool = False) -> dict[str, Any]:
    """The recipe ``model:`` mapping a string names (file, ``hf:DIR``, factory, zoo name).

    Example:
        >>> model_spec_of("tests.usercode:make_model")
        {'factory': 'tests.usercode:make_model'}
    """
    from ..models import list_models
    from ..models.factory import ModelReferenceError

    text = os.fspath(model)
    if Path(text).is_file():
        return {"checkpoint": text, **({"trust_code": True} if trust_code else {})}
    if text.startswith("hf:"):
        return {"hf": text[3:]}
    if is_reference(text):
        return {"factory": text}
    if text in list_models():
        return {"name": text}
    raise ModelReferenceError(
        f"model {text!r}: not a file, a zoo model ({', '.join(list_models())}), a "
        "'package.module:callable' factory or hf:DIR"
    )


def resolve_model(
    model: nn.Module | str | os.PathLike | Mapping[str, Any],
    data: AdviceData,
    *,
    trust_code: bool = False,
) -> nn.Module:
    """The model to advise on: ``model`` itself, or the module its reference builds.

    Args:
        model: a module, a reference string or path, or a recipe ``model:`` mapping.
        data: zoo models take their input shape and classes from its first batch.
        trust_code: let a checkpoint import the factory it names.
    """
    if isinstance(model, nn.Module):
        return model
    from ..recipes.models import build_model

    spec = dict(model) if isinstance(model, Mapping) else model_spec_of(model, trust_code)
    return build_model(spec, data.bundle(None))


def recipe_model(model: nn.Module, checkpoint: str) -> tuple[dict[str, Any] | None, str]:
    """The recipe ``model:`` mapping that rebuilds ``model`` from its snapshot ``checkpoint``,
    and a note for the recipe's header (``None`` and a note when no file can rebuild it).

    Example:
        >>> recipe_model(nn.Sequential(nn.Linear(2, 2)), "baseline.safetensors")[0]
        {'checkpoint': 'baseline.safetensors'}
    """
    from ..io.record import architecture_of

    record = architecture_of(model)
    if record is None:
        return None, (
            f"model: a Python object whose architecture no file can rebuild; {checkpoint} holds "
            f"its weights. Run with run_recipe(recipe, out, model=m, data=...) where m is your "
            f"module with load_checkpoint('{checkpoint}', model=m) applied"
        )
    spec: dict[str, Any] = {"checkpoint": checkpoint}
    kind, body = next(iter(record.items()))
    if kind == "factory":
        spec["trust_code"] = True
        return spec, (f"model: {checkpoint}, built by your factory {body['ref']} (trust_code: "
                      "the recipe imports it)")  # fmt: skip
    return spec, f"model: {checkpoint} (the baseline the search started from)"


def model_factory(model: nn.Module) -> str | None:
    """The factory reference a model was built by (zoo and files need none), or ``None``."""
    from ..models.registry import spec_of

    spec = spec_of(model) or {}
    return spec.get("factory")


# -- metric -----------------------------------------------------------------------------------


def resolve_task(
    metric: Any = None, loss: Any = None, task: Task | None = None
) -> tuple[Task, dict[str, str], list[str]]:
    """The :class:`Task`, the recipe keys naming it (``metric`` / ``loss`` references) and notes.

    Args:
        metric: ``None`` (top-1), a ``"package.module:callable"`` or a callable
            ``(model, loader) -> dict``.
        loss: ``None`` (cross-entropy), a reference or a callable (``(outputs, targets)`` or
            ``(model, x, y) -> (loss, outputs)``).
        task: a ready Task (then ``metric`` and ``loss`` must be left out).

    Example:
        >>> task, keys, notes = resolve_task("tests.usercode:error_rate")
        >>> task.name, keys
        ('tests.usercode:error_rate', {'metric': 'tests.usercode:error_rate'})
    """
    from ..core import ConfigError

    if task is not None:
        if metric is not None or loss is not None:
            raise ConfigError("give task= or metric= / loss=, not both")
        return task, {}, ["metric: a Python Task object; pass task= to run_recipe"]
    keys = {k: v for k, v in (("metric", metric), ("loss", loss)) if isinstance(v, str)}
    out = task_from_references(keys.get("metric"), keys.get("loss"))
    notes = []
    if callable(metric):
        out = dataclasses.replace(Task(metric=metric), criterion=out.criterion)
        notes.append("metric: a Python callable; pass task=Task(metric=...) to run_recipe")
    if callable(loss):
        out.criterion = loss if _positional(loss) == 3 else loss_criterion(loss)
        notes.append("loss: a Python callable; pass task=Task(criterion=...) to run_recipe")
    return out, keys, notes


def _positional(fn: Callable[..., Any]) -> int:
    """Positional parameters of ``fn``: 3 for a criterion ``(model, x, y)``, 2 for a loss."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
