"""Plan, check, apply: a planned edit is tried on a copy of the model before the model itself.

:func:`check_plan` applies a plan to a deep copy of the model and runs one forward pass on the
example inputs; the outputs must keep their shapes. A forward that breaks (a size written in
the code that no longer matches, an attribute nnshrink does not know) raises :class:`PlanError`
naming the innermost module that was running, so the user's model is never touched by an edit
that would break it. Models that cannot be deep-copied are checked in place inside a
:func:`nnshrink.core.transaction` that is always rolled back.

Tied parameters (a language model's output layer sharing the embedding matrix) are re-tied after
slicing by :func:`retie`, so that a tie survives pruning.

Example:
    >>> from torch import nn
    >>> ties(nn.Sequential(nn.Linear(2, 2)))
    []
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nnshrink.core import transaction

from .tracing import flat_tensors, no_fastpath, split_inputs

__all__ = ["PlanError", "check_plan", "retie", "ties"]


class PlanError(Exception):
    """A planned edit breaks the forward: ``module`` (qualified name) was running."""

    def __init__(self, module: str, kind: str, error: BaseException | str) -> None:
        self.module, self.kind, self.error = module, kind, error
        where = f"'{module}' ({kind})" if module else "the model's own forward"
        super().__init__(f"the pruned model fails in {where}: {error}")


class _Rollback(Exception):
    pass


def ties(model: nn.Module) -> list[list[tuple[str, str]]]:
    """``[(module, attribute), ...]`` of every parameter shared by several places."""
    where: dict[int, list[tuple[str, str]]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for attr, p in module._parameters.items():
            if p is not None:
                where.setdefault(id(p), []).append((name, attr))
    return [places for places in where.values() if len(set(places)) > 1]


def retie(model: nn.Module, tied: list[list[tuple[str, str]]]) -> None:
    """Share again the parameters of ``tied`` (from :func:`ties` before slicing).

    Raises:
        PlanError: the places of one tie were sliced differently.
    """
    for places in tied:
        tensors = [getattr(model.get_submodule(m), a) for m, a in places]
        first = tensors[0]
        if all(t is first for t in tensors):
            continue
        if any(t.shape != first.shape or not torch.equal(t.data, first.data) for t in tensors):
            names = ", ".join(f"{m}.{a}" for m, a in places)
            raise PlanError(places[0][0], "tied parameter",
                            f"the tied parameters {names} were sliced differently")  # fmt: skip
        for m, a in places[1:]:
            setattr(model.get_submodule(m), a, first)


def _run(model: nn.Module, example_inputs: Any) -> Any:
    """One eval / no-grad forward recording the module stack; :class:`PlanError` on failure."""
    stack: list[nn.Module] = []
    names = {id(m): n for n, m in model.named_modules()}
    handles = []

    def enter(module: nn.Module, args: Any) -> None:
        stack.append(module)

    def leave(module: nn.Module, args: Any, out: Any) -> None:  # returns None: output kept
        if stack:
            stack.pop()

    for module in model.modules():
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    modes = [(m, m.training) for m in model.modules()]
    args, kwargs = split_inputs(example_inputs)
    try:
        model.eval()
        with torch.no_grad(), no_fastpath():
            return model(*args, **kwargs)
    except Exception as exc:
        failing = stack[-1] if stack else model
        raise PlanError(names.get(id(failing), ""), type(failing).__name__,
                        f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes:
            m.training = mode


def check_plan(
    model: nn.Module,
    apply: Callable[[nn.Module], Any],
    example_inputs: Any,
    output_shapes: list[tuple[int, ...]] | None,
) -> None:
    """Apply the plan (``apply(root)``) to a copy of ``model`` and run it once.

    Args:
        model: the user's model (left untouched).
        apply: edits the model it is given (the plan, retargeted to it).
        example_inputs: inputs for the forward pass.
        output_shapes: the shapes the outputs must keep (``None``: not checked).

    Raises:
        PlanError: the edit or the forward failed, or an output changed shape.
    """
    try:
        work = copy.deepcopy(model)
    except Exception:  # noqa: BLE001 - not copyable: check in place, always rolled back
        work = None
    if work is not None:
        _apply_and_run(work, apply, example_inputs, output_shapes)
        return
    try:
        with transaction(model):
            _apply_and_run(model, apply, example_inputs, output_shapes)
            raise _Rollback
    except _Rollback:
        pass


def _apply_and_run(model, apply, example_inputs, output_shapes) -> None:
    try:
        apply(model)
    except PlanError:
        raise
    except Exception as exc:
        raise PlanError("", "slicing", f"{type(exc).__name__}: {exc}") from exc
    out = _run(model, example_inputs)
    shapes = [tuple(t.shape) for t in flat_tensors(out)]
    if output_shapes is not None and shapes != output_shapes:
        raise PlanError("", type(model).__name__,
                        f"the outputs changed shape: {output_shapes} -> {shapes}")  # fmt: skip
