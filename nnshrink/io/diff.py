"""Structural edits of a model against a fresh build: record them, re-apply them on load.

:func:`tree_diff` walks the edited model beside a fresh build of the same reference and lists,
by dotted path, what differs:

* a submodule of another class or other constructor kwargs: ``{"class": ..., "kwargs": ...}``,
  the full :func:`nnshrink.io.arch.describe` description of the new submodule (outermost only);
* plain attributes that changed on a module that is otherwise the same (``num_heads``,
  ``head_dim``, ``all_head_size`` after head pruning): ``{"attrs": {name: value}}``.

:func:`apply_diff` re-applies both, checking every path, class and attribute first: a path must
name an existing submodule, a class must be on the allow-list, an attribute must be a plain value
that does not shadow a method, parameter or submodule.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .arch import ArchitectureError, _lookup_kwargs, build, describe
from .plain import PlainValueError, decode_attr, encode_attr, is_plain_attr

_MISSING = object()
_SKIP_ATTRS = frozenset({"training"})


def _plain_attrs(module: nn.Module) -> dict[str, Any]:
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and name not in _SKIP_ATTRS and is_plain_attr(value)
    }


def _same_value(a: Any, b: Any) -> bool:
    return type(a) is type(b) and encode_attr(a) == encode_attr(b)


def attr_changes(reference: nn.Module, edited: nn.Module) -> dict[str, Any]:
    """Plain attributes of ``edited`` that differ from (or are missing on) ``reference``.

    Example:
        >>> a, b = nn.Dropout(0.1), nn.Dropout(0.1)
        >>> b.p = 0.3
        >>> attr_changes(a, b)
        {'p': 0.3}
    """
    before = vars(reference)
    return {
        name: encode_attr(value)
        for name, value in _plain_attrs(edited).items()
        if not _same_value(before.get(name, _MISSING), value)
    }


def tree_diff(reference: nn.Module, edited: nn.Module) -> dict[str, dict[str, Any]]:
    """What differs between ``edited`` and ``reference``: ``{path: description | {"attrs": ...}}``.

    Only the outermost differing submodules are described (a replaced block is described whole);
    attribute changes are listed for modules whose class and kwargs are unchanged. The root's
    path is ``""``.

    Example:
        >>> ref = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        >>> new = nn.Sequential(nn.Linear(4, 2), nn.ReLU())
        >>> sorted(tree_diff(ref, new))
        ['0']
    """
    out: dict[str, dict[str, Any]] = {}

    def same(a: nn.Module, b: nn.Module) -> bool:
        if type(a) is not type(b):
            return False
        fn = _lookup_kwargs(a)
        return fn is None or fn(a) == fn(b)

    def walk(prefix: str, ref: nn.Module, new: nn.Module) -> None:
        if not same(ref, new):
            out[prefix] = describe(new)
            return
        ref_children = dict(ref.named_children())
        new_children = dict(new.named_children())
        if set(ref_children) != set(new_children):
            if not prefix:
                raise ArchitectureError("the model's top-level children changed; save it whole")
            out[prefix] = describe(new)
            return
        attrs = attr_changes(ref, new)
        if attrs:
            out[prefix] = {"attrs": attrs}
        for name, child in new_children.items():
            walk(f"{prefix}.{name}" if prefix else name, ref_children[name], child)

    walk("", reference, edited)
    return out


def _submodule(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path``, following only registered children (never ``getattr``)."""
    module = model
    for part in path.split(".") if path else []:
        child = module._modules.get(part) if isinstance(part, str) else None
        if child is None:
            raise ArchitectureError(f"edit names {path!r}, which is not a submodule of the model")
        module = child
    return module


def _set_attrs(module: nn.Module, attrs: Any, path: str) -> None:
    if not isinstance(attrs, dict):
        raise ArchitectureError(f"edit {path!r}: 'attrs' must map names to values")
    own = vars(module)
    for name, raw in attrs.items():
        if not (isinstance(name, str) and name.isidentifier() and not name.startswith("_")):
            raise ArchitectureError(f"edit {path!r}: {name!r:.80} is not a public attribute name")
        taken = name in module._parameters or name in module._buffers or name in module._modules
        shadows = name not in own and hasattr(type(module), name)  # a method or property
        if name in _SKIP_ATTRS or taken or shadows:
            raise ArchitectureError(
                f"edit {path!r}: attribute {name!r} of {type(module).__name__} is not a plain value"
            )
        if name in own and not is_plain_attr(own[name]):
            raise ArchitectureError(f"edit {path!r}: {name!r} holds a non-plain value; refused")
        try:
            value = decode_attr(raw, f"edit {path!r} attribute {name!r}")
        except PlainValueError as exc:
            raise ArchitectureError(str(exc)) from None
        setattr(module, name, value)


def apply_diff(model: nn.Module, diff: dict[str, dict[str, Any]]) -> nn.Module:
    """Re-apply :func:`tree_diff`'s edits; returns the (possibly new) root.

    Replacements are applied outermost first, then attribute changes. Every path, class and
    attribute is checked (see the module docstring); a bad one raises before the next edit.

    Example:
        >>> ref = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        >>> apply_diff(ref, tree_diff(ref, nn.Sequential(nn.Linear(4, 2), nn.ReLU())))[0]
        Linear(in_features=4, out_features=2, bias=True)
    """
    if not isinstance(diff, dict) or not all(isinstance(p, str) for p in diff):
        raise ArchitectureError("edits must map dotted module paths to descriptions")
    patches = []
    for path in sorted(diff, key=lambda p: (p.count(".") + bool(p), p)):
        entry = diff[path]
        if isinstance(entry, dict) and set(entry) == {"attrs"}:
            patches.append((path, entry["attrs"]))
            continue
        new = build(entry, _where=path or "model")
        if path == "":
            model = new
            continue
        parent_path, _, name = path.rpartition(".")
        parent = _submodule(model, parent_path)
        if name not in parent._modules:
            raise ArchitectureError(f"edit names {path!r}, which is not a submodule of the model")
        setattr(parent, name, new)
    for path, attrs in patches:
        _set_attrs(_submodule(model, path), attrs, path)
    return model
