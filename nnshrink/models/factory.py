"""Models named by reference: a zoo name, ``"module.path:callable"`` or ``"hf:DIR"``.

One string names every model the CLI, recipes and files deal with (the uvicorn/gunicorn
``module:attr`` convention for user code, Hugging Face's local directories for transformers):

* ``"resnet20"``: a zoo model, ``nnshrink.models.create(name, **kwargs)``;
* ``"mypkg.nets:build"``: imports ``mypkg.nets`` (the user named it), calls ``build(**kwargs)``
  and checks that it returns an ``nn.Module``;
* ``"hf:/path/to/dir"``: ``transformers``' class from the directory's ``config.json``
  (``architectures[0]``, looked up in the ``transformers`` package only, never remote code),
  loaded with ``from_pretrained(DIR, local_files_only=True)``.

The built model remembers its reference (``nnshrink_spec``), so checkpoints and ``.nns`` files
record it and rebuild the model later. A reference read from a *file* is only imported when the
user opts in (``trust_code=True``); see :mod:`nnshrink.io.record`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from .registry import SPEC_ATTR, create, list_models

HF_PREFIX = "hf:"


class ModelReferenceError(ValueError):
    """A model reference does not resolve; the one-line message names the fix."""


def parse_reference(ref: Any) -> tuple[str, str]:
    """Split a reference into ``(kind, target)``: ``zoo``, ``factory`` or ``hf``; imports nothing.

    Args:
        ref: ``"resnet20"``, ``"pkg.mod:callable"`` or ``"hf:DIR"``.

    Example:
        >>> parse_reference("mypkg.nets:build")
        ('factory', 'mypkg.nets:build')
    """
    if not isinstance(ref, str) or not ref:
        raise ModelReferenceError(
            f"a model reference is a non-empty string, got {ref!r}; use a zoo name, "
            "'module.path:callable' or 'hf:DIR'"
        )
    if ref.startswith(HF_PREFIX):
        directory = ref[len(HF_PREFIX) :]
        if not directory:
            raise ModelReferenceError("'hf:' needs a directory: hf:/path/to/model")
        return "hf", directory
    if ":" in ref:
        module, _, attr = ref.partition(":")
        dotted = (module, attr)
        if not all(part and all(p.isidentifier() for p in part.split(".")) for part in dotted):
            raise ModelReferenceError(
                f"{ref!r} is not 'module.path:callable' (dotted Python names on both sides of "
                "one ':'), e.g. 'mypkg.nets:build'"
            )
        return "factory", ref
    if ref not in list_models():
        raise ModelReferenceError(
            f"unknown model {ref!r}; use a zoo name ({', '.join(list_models())}), "
            "'module.path:callable' for your own code, or 'hf:DIR' for a Hugging Face directory"
        )
    return "zoo", ref


def import_factory(ref: str) -> Any:
    """Import ``"module.path:callable"`` and return the callable (the user named the module).

    Example:
        >>> import_factory("nnshrink.models:create").__name__
        'create'
    """
    kind, _ = parse_reference(ref)
    if kind != "factory":
        raise ModelReferenceError(f"{ref!r} is not a 'module.path:callable' reference")
    from ..utils.references import ReferenceError_, import_reference

    try:
        obj = import_reference(ref, "model")
    except ReferenceError_ as exc:
        raise ModelReferenceError(str(exc)) from None
    if not callable(obj):
        raise ModelReferenceError(
            f"{ref!r} is a {type(obj).__name__}, not a callable; name a function or class that "
            "returns an nn.Module"
        )
    return obj


def _json_kwargs(ref: str, kwargs: Any) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ModelReferenceError(
            f"kwargs for model {ref!r} must be a dict with string keys, got {kwargs!r}"
        )
    return dict(kwargs)


def from_reference(
    ref: str, kwargs: dict[str, Any] | None = None, *, trust_code: bool = True
) -> nn.Module:
    """Build the model a reference names (a zoo name, ``module.path:callable`` or ``hf:DIR``).

    Args:
        ref: ``"resnet20"`` (kwargs go to :func:`nnshrink.models.create`), ``"pkg.mod:fn"``
            (imported and called with ``kwargs``; must return an ``nn.Module``) or ``"hf:DIR"``
            (a local Hugging Face model directory; needs ``transformers``, takes no kwargs).
        kwargs: keyword arguments for the builder (JSON-able ones are recorded with the model).
        trust_code: allow importing the module a ``module:callable`` reference names. ``True``
            for references the user typed; file readers pass ``False`` unless the user opted in.

    Returns:
        The model, with its reference recorded for checkpoints and ``.nns`` files.

    Raises:
        ModelReferenceError: the reference does not parse, import, call or return a module;
            the message names the fix.

    Example:
        >>> from_reference("lenet300").nnshrink_spec["name"]
        'lenet300'
        >>> from_reference("nnshrink.models:create", {"name": "mlp"}).nnshrink_spec["factory"]
        'nnshrink.models:create'
    """
    kind, target = parse_reference(ref)
    kwargs = _json_kwargs(ref, kwargs)
    if kind == "zoo":
        try:
            return create(target, **kwargs)
        except (KeyError, TypeError) as exc:
            raise ModelReferenceError(f"zoo model {ref!r}: {exc}") from exc
    if kind == "hf":
        if kwargs:
            raise ModelReferenceError(
                f"{ref!r}: Hugging Face directories take no kwargs (got {sorted(kwargs)}); edit "
                "the directory's config.json instead"
            )
        return hf_model(target, pretrained=True)
    if not trust_code:
        raise ModelReferenceError(
            f"{ref!r} names code to import; pass trust_code=True (CLI: --trust-code) only if "
            "you trust it, or build the model yourself and pass model=..."
        )
    fn = import_factory(ref)
    try:
        model = fn(**kwargs)
    except Exception as exc:
        raise ModelReferenceError(
            f"{ref}(**{kwargs}) raised {type(exc).__name__}: {exc}; check the kwargs "
            "(CLI: --model-kwargs)"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelReferenceError(
            f"{ref} returned a {type(model).__name__}, not an nn.Module; make the factory return "
            "the model itself"
        )
    setattr(model, SPEC_ATTR, {"factory": ref, "kwargs": kwargs})
    return model


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ModelReferenceError(
            "hf: models need the transformers package; pip install 'nnshrink[transformers]'"
        ) from None
    return transformers


def hf_class(directory: str | Path) -> tuple[type[nn.Module], Any]:
    """The ``transformers`` model class and config of a local Hugging Face model directory.

    The class is ``config.architectures[0]`` looked up in the ``transformers`` package only;
    ``trust_remote_code`` is never set, so no code from the directory runs.

    Args:
        directory: a folder with ``config.json`` (as written by ``save_pretrained``).

    Example:
        >>> cls, config = hf_class("models/bert-tiny")  # doctest: +SKIP
    """
    path = Path(directory)
    if not (path / "config.json").is_file():
        raise ModelReferenceError(
            f"{path} is not a Hugging Face model directory (no config.json); pass the folder "
            "written by save_pretrained"
        )
    try:
        # json first: refuse configs that are not plain objects before transformers reads them
        config_data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelReferenceError(f"{path}/config.json is not readable JSON ({exc})") from None
    if not isinstance(config_data, dict):
        raise ModelReferenceError(f"{path}/config.json is not a JSON object")
    transformers = _transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False
        )
    except Exception as exc:
        raise ModelReferenceError(
            f"{path}: transformers cannot read config.json ({type(exc).__name__}: {exc}); models "
            "that need remote code are not supported"
        ) from None
    names = getattr(config, "architectures", None) or []
    name = names[0] if names else None
    cls = (
        getattr(transformers, name, None) if isinstance(name, str) and name.isidentifier() else None
    )
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ModelReferenceError(
            f"{path}/config.json names architecture {name!r}, which is not a model class of the "
            "installed transformers; set 'architectures' to one (e.g. 'BertModel')"
        )
    return cls, config


def hf_model(directory: str | Path, *, pretrained: bool = True) -> nn.Module:
    """Build a local Hugging Face model: its weights (``pretrained``) or a fresh init from config.

    Args:
        directory: the model folder (``config.json``, and weights when ``pretrained``).
        pretrained: ``from_pretrained(DIR, local_files_only=True)``; ``False`` builds the
            architecture only (``cls(config)``), as file readers do before loading weights.

    Example:
        >>> model = hf_model("models/bert-tiny")  # doctest: +SKIP
    """
    cls, config = hf_class(directory)
    try:
        if pretrained:
            model = cls.from_pretrained(str(directory), local_files_only=True)
        else:
            model = cls(config)
    except Exception as exc:
        raise ModelReferenceError(
            f"{directory}: {cls.__name__} cannot be built ({type(exc).__name__}: {exc})"
        ) from exc
    setattr(model, SPEC_ATTR, {"hf": str(directory)})
    return model
