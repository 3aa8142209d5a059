"""The architecture record that checkpoints and ``.nns`` files store, and the safe rebuild.

A record has exactly one key, saying how the base model is built, plus its structural edits
(:func:`nnshrink.io.diff.tree_diff`)::

    {"zoo":     {"name": "resnet20", "kwargs": {...}, "edits": {...}}}
    {"factory": {"ref": "pkg.mod:build", "kwargs": {...}, "edits": {...}}}
    {"hf":      {"dir": "/models/bert-tiny", "edits": {...}}}
    {"module":  <nnshrink.io.describe tree>}        # any tree of registered layers

Rebuilding never imports what a file names on its own: zoo names, ``hf`` directories (classes
of the ``transformers`` package only) and module trees (the allow-list) need no trust; a
``factory`` record is imported only when the user names the factory again (``factory=``) or
opts in with ``trust_code=True``. The architecture is first built on the meta device and
compared with the stored tensors (:mod:`nnshrink.io.shapes`), then built for real.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from torch import nn

from ..models.factory import ModelReferenceError, from_reference, hf_model, parse_reference
from ..models.registry import SPEC_ATTR, create, list_models, spec_of
from .arch import ArchitectureError, ConstructorError, build, describe
from .diff import apply_diff, tree_diff
from .plain import PlainValueError, check_json
from .shapes import Signature, check_build, checked_build

KINDS = ("zoo", "factory", "hf", "module")
Factory = str | Callable[..., nn.Module]


class UntrustedCodeError(ArchitectureError):
    """The file names user code to import and the user has not named it or opted in."""


def _base_spec(model: nn.Module) -> dict[str, Any] | None:
    spec = spec_of(model)
    if spec is None:
        return None
    if "name" in spec:
        return {"zoo": {"name": spec["name"], "kwargs": spec["kwargs"]}}
    if "factory" in spec:
        return {"factory": {"ref": spec["factory"], "kwargs": spec["kwargs"]}}
    return {"hf": {"dir": spec["hf"]}}


def _fresh(record: dict[str, Any], factory: Factory | None = None) -> Callable[[], nn.Module]:
    """A function building the record's base model (fresh weights, no edits)."""
    kind, body = next(iter(record.items()))
    kwargs = dict(body.get("kwargs", {}))
    if factory is not None:
        if callable(factory):
            return lambda: _call_user_factory(factory, kwargs)
        return lambda: from_reference(factory, kwargs, trust_code=True)
    if kind == "zoo":
        return lambda: create(body["name"], **kwargs)
    if kind == "factory":
        return lambda: from_reference(body["ref"], kwargs, trust_code=True)
    return lambda: hf_model(body["dir"], pretrained=False)


def _call_user_factory(fn: Callable[..., nn.Module], kwargs: dict[str, Any]) -> nn.Module:
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelReferenceError(
            f"factory {fn!r} returned a {type(model).__name__}, not an nn.Module"
        )
    return model


def architecture_of(model: nn.Module) -> dict[str, Any] | None:
    """The record to store for ``model``, or ``None`` when it cannot be described.

    Models with a reference (zoo, factory, hf) are stored as that reference plus the edits
    against a fresh build of it (built on the meta device, so saving allocates nothing); other
    modules built only from registered layers as their whole tree.

    Example:
        >>> architecture_of(nn.Sequential(nn.Linear(2, 2)))["module"]["class"]
        'torch.nn.modules.container.Sequential'
    """
    record = _base_spec(model)
    if record is not None:
        try:
            json.dumps(record, allow_nan=False)
            (body,) = record.values()
            try:  # the reference build only serves the comparison: keep it on the meta device
                reference = check_build(_fresh(record), max_modules=1 << 30)
            except ConstructorError:
                reference = _fresh(record)()  # needs real data (or the user's code needs a CPU)
            body["edits"] = tree_diff(reference, model)
            json.dumps(record, allow_nan=False)
            return record
        except (ArchitectureError, ModelReferenceError, TypeError, ValueError, KeyError):
            pass  # not JSON-able, or edited beyond what a reference + edits can express
    try:
        return {"module": describe(model)}
    except ArchitectureError:
        return None


def legacy_spec(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The record as ``spec_of`` spells references, plus ``edits`` (``None`` for module trees).

    Example:
        >>> legacy_spec({"zoo": {"name": "mlp", "kwargs": {}, "edits": {}}})["name"]
        'mlp'
    """
    if not record or "module" in record:
        return None
    kind, body = next(iter(record.items()))
    edits = body.get("edits", {})
    if kind == "zoo":
        return {"name": body["name"], "kwargs": body.get("kwargs", {}), "edits": edits}
    if kind == "factory":
        return {"factory": body["ref"], "kwargs": body.get("kwargs", {}), "edits": edits}
    return {"hf": body["dir"], "edits": edits}


def check_record(record: Any) -> dict[str, Any] | None:
    """Validate a record read from a file (types, names, plain kwargs); returns it.

    Raises:
        ArchitectureError: anything malformed; nothing is imported or built here.
    """
    if record is None:
        return None
    if not isinstance(record, dict) or len(record) != 1 or next(iter(record)) not in KINDS:
        raise ArchitectureError(
            f"the architecture record must have one key of {KINDS}; this file was written by a "
            "newer nnshrink or is corrupted"
        )
    kind, body = next(iter(record.items()))
    if kind == "module":
        if not isinstance(body, dict):
            raise ArchitectureError("the stored module tree is not a description")
        return record
    allowed = {"zoo": {"name", "kwargs", "edits"}, "factory": {"ref", "kwargs", "edits"},
               "hf": {"dir", "edits"}}[kind]  # fmt: skip
    if not isinstance(body, dict) or not set(body) <= allowed:
        raise ArchitectureError(f"the {kind!r} record has unknown fields; newer nnshrink?")
    if not isinstance(body.get("edits", {}), dict):
        raise ArchitectureError(f"the {kind!r} record's edits are not a mapping")
    try:
        check_json(body.get("kwargs", {}), f"{kind} kwargs")
    except PlainValueError as exc:
        raise ArchitectureError(str(exc)) from None
    if not isinstance(body.get("kwargs", {}), dict):
        raise ArchitectureError(f"the {kind!r} record's kwargs are not a mapping")
    if kind == "zoo":
        if body.get("name") not in list_models():
            raise ArchitectureError(
                f"unknown architecture {body.get('name')!r:.80}; this nnshrink knows "
                f"{list_models()} (upgrade nnshrink, or pass model=/factory=)"
            )
    elif kind == "factory":
        ref = body.get("ref")
        try:
            ok = isinstance(ref, str) and parse_reference(ref)[0] == "factory"
        except ModelReferenceError:
            ok = False
        if not ok:
            raise ArchitectureError(f"the stored factory {ref!r:.80} is not 'module.path:callable'")
    elif not isinstance(body.get("dir"), str) or not body["dir"]:
        raise ArchitectureError("the 'hf' record names no directory")
    return record


def rebuild(
    record: dict[str, Any] | None,
    stored: Signature,
    *,
    budget_bytes: int,
    factory: Factory | None = None,
    trust_code: bool = False,
) -> nn.Module:
    """Build the recorded architecture with fresh weights, checked against ``stored`` first.

    Args:
        record: a record from :func:`architecture_of` (as read from a file).
        stored: ``{name: (shape, dtype)}`` of the file's tensors.
        budget_bytes: the most the model's tensors may take (see :mod:`nnshrink.io.shapes`).
        factory: a reference string or a callable that builds the base model instead of the
            recorded one (called with the recorded kwargs); the user's word wins.
        trust_code: allow importing the factory the file names.

    Raises:
        UntrustedCodeError: the file names a factory and neither ``factory`` nor ``trust_code``
            was given.
        ArchitectureError: any other problem (malformed record, unknown class, shapes that do
            not fit the stored tensors, too large).

    Example:
        >>> from nnshrink.io.shapes import signature
        >>> rec = architecture_of(nn.Sequential(nn.Linear(2, 2)))
        >>> rebuild(rec, signature(nn.Sequential(nn.Linear(2, 2))), budget_bytes=100)[0]
        Linear(in_features=2, out_features=2, bias=True)
    """
    record = check_record(record)
    if record is None and factory is None:
        raise ArchitectureError(
            "the file stores no architecture (the model had unregistered custom modules); load "
            "it into your module, load(path, model=MyModel()), or name its builder, "
            "factory='pkg.mod:build' (CLI: --model pkg.mod:build)"
        )
    if record is None:
        record = {"factory": {"kwargs": {}}}
    kind, body = next(iter(record.items()))
    if kind == "factory" and factory is None and not trust_code:
        ref = body["ref"]
        raise UntrustedCodeError(
            f"this file was saved from a model built by {ref!r}; pass factory={ref!r} "
            f"(CLI: --model {ref}) or trust_code=True (CLI: --trust-code)"
        )
    trusted = factory is not None or kind == "factory"  # code the user named or opted into
    if kind == "module" and factory is None:
        tree = body
        make: Callable[[], nn.Module] = lambda: build(tree)  # noqa: E731
    else:
        base = _fresh(record, factory)
        edits = body.get("edits", {})
        make = lambda: apply_diff(base(), edits)  # noqa: E731
    try:
        model = checked_build(make, stored, budget_bytes=budget_bytes, trusted=trusted)
    except ModelReferenceError as exc:
        if factory is not None:
            raise  # the user's own reference: their error to fix, not the file's
        raise ArchitectureError(str(exc)) from None
    _remember(model, record, factory)
    return model


def _remember(model: nn.Module, record: dict[str, Any], factory: Factory | None) -> None:
    """Record the reference on the rebuilt model, so that saving it again stores the same one."""
    kind, body = next(iter(record.items()))
    kwargs = dict(body.get("kwargs", {}))
    if isinstance(factory, str):
        kind, target = parse_reference(factory)
        body = {"name": target, "ref": target, "dir": target}
    elif callable(factory) and "ref" not in body and kind == "factory":
        return  # an anonymous callable over a file without a reference: nothing to remember
    if kind == "zoo":
        setattr(model, SPEC_ATTR, {"name": body["name"], "kwargs": kwargs})
    elif kind == "factory":
        setattr(model, SPEC_ATTR, {"factory": body["ref"], "kwargs": kwargs})
    elif kind == "hf":
        setattr(model, SPEC_ATTR, {"hf": body["dir"]})
