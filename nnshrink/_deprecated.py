"""Deprecated names, all in one place, each with the version that removes it.

Old import paths and names keep working with a :class:`DeprecationWarning` that names the new
spelling. Modules that moved expose their old names through :func:`module_getattr`; renamed
config fields go through :func:`renamed_fields`.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     from nnshrink.quantization import WeightSharing
    >>> "nnshrink.sharing" in str(caught[0].message)
    True
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

REMOVED_IN = "0.6"

_PRUNING_SUMMARIES = {
    "BlockPruningResult": "nnshrink.pruning.depth:BlockPruningSummary",
    "InputPruningResult": "nnshrink.pruning.inputs:InputPruningSummary",
}

# old module -> {old name: "new.module:name"}
MOVED_NAMES: dict[str, dict[str, str]] = {
    "nnshrink.pruning": {
        **_PRUNING_SUMMARIES,
        # prune_(model, cfg) duplicated compress_(model, MagnitudePruning(...))
        "prune_": "nnshrink.core:compress_",
    },
    "nnshrink.pruning.depth": {"BlockPruningResult": _PRUNING_SUMMARIES["BlockPruningResult"]},
    "nnshrink.pruning.inputs": {"InputPruningResult": _PRUNING_SUMMARIES["InputPruningResult"]},
    "nnshrink.pruning.unstructured": {"prune_": "nnshrink.core:compress_"},
    "nnshrink.quantization": {
        **{
            name: f"nnshrink.sharing:{name}"
            for name in (
                "WeightSharing",
                "share_weights",
                "strip_sharing",
                "codebook_of",
                "Hashing",
                "HashedLinear",
                "Circulant",
                "CirculantLinear",
            )
        },  # fmt: skip
        **{
            name: f"nnshrink.binary:{name}"
            for name in (
                "BinaryWeights",
                "Ternary",
                "BinaryConv2d",
                "BinaryLinear",
                "TernaryConv2d",
                "TernaryLinear",
                "strip_low_bit",
            )
        },  # fmt: skip
        **{
            name: f"nnshrink.storage.packbits:{name}"
            for name in ("PackedTensor", "pack_bits", "unpack_bits")
        },
        "PTQResult": "nnshrink.quantization.ptq:PTQSummary",
    },
    # compress_(PTQ) returns a CompressResult; its summary is a PTQSummary (no .model)
    "nnshrink.quantization.ptq": {"PTQResult": "nnshrink.quantization.ptq:PTQSummary"},
}

# old module path -> new module path (``import nnshrink.quantization.kmeans`` and the like)
MOVED_MODULES: dict[str, str] = {
    "nnshrink.quantization.kmeans": "nnshrink.sharing.kmeans",
    "nnshrink.quantization.clustering": "nnshrink.sharing.clustering",
    "nnshrink.quantization.hashing": "nnshrink.sharing.hashing",
    "nnshrink.quantization.circulant": "nnshrink.sharing.circulant",
    "nnshrink.quantization.binary": "nnshrink.binary.layers",
    "nnshrink.quantization.binary_config": "nnshrink.binary.config",
    "nnshrink.quantization.binary_ops": "nnshrink.binary.ops",
    "nnshrink.quantization.packbits": "nnshrink.storage.packbits",
}


def warn(old: str, new: str, stacklevel: int = 3) -> None:
    """Emit the one deprecation warning format: ``old`` is deprecated, use ``new``."""
    warnings.warn(
        f"{old} is deprecated and will be removed in nnshrink {REMOVED_IN}; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def module_getattr(module_name: str) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` resolving the moved names of ``module_name`` with a warning."""
    table = MOVED_NAMES.get(module_name, {})

    def __getattr__(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        new_module, _, attr = target.partition(":")
        warn(f"{module_name}.{name}", f"{new_module}.{attr}")
        return getattr(importlib.import_module(new_module), attr)

    return __getattr__


def renamed_fields(
    kind: str, data: Mapping[str, Any], renames: Mapping[str, str | Callable[[Any], dict]]
) -> dict[str, Any]:
    """Translate deprecated config keys in ``data`` to their new names, warning once per key.

    Args:
        kind: the config kind, for the message.
        data: keyword arguments or a recipe mapping.
        renames: ``{old: new}``, or ``{old: fn(value) -> {new: value, ...}}`` for keys whose
            meaning maps onto several new fields. A returned value may be an *edit*, a callable
            ``edit(current) -> value`` that receives what an earlier deprecated key of the same
            call set for that field (``None`` if none did): several old keys (``keep_first``,
            ``keep_last``) can then share one new field (``exclude``). Or ``{old: fn(value, data) -> {...}}``
            merges the old key into new fields that ``data`` (the other keys) may also give.

    Example:
        >>> import warnings
        >>> warnings.simplefilter("ignore")
        >>> renamed_fields("demo", {"ratio": 0.5}, {"ratio": "sparsity"})
        {'sparsity': 0.5}
    """
    out = dict(data)
    produced: set[str] = set()
    for old, new in renames.items():
        if old not in out:
            continue
        value = out.pop(old)
        merges = callable(new) and _positional_params(new) >= 2
        mapped = new(value, out) if merges else new(value) if callable(new) else {new: value}
        for key, new_value in mapped.items():
            current = out.get(key)
            # an old field folded into a mapping (fc_bits -> per_layer["@linear"]) merges with it
            folds = isinstance(current, Mapping) and isinstance(new_value, Mapping)
            if key in out and key not in produced and not merges and not folds:
                from .core.config import ConfigError

                raise ConfigError(f"{kind}: give {key!r} or its deprecated name {old!r}, not both")
            if callable(new_value):  # an edit of what an earlier deprecated key set
                out[key] = new_value(current)
            elif folds:  # entries given under the new name keep precedence
                out[key] = {**current, **{k: v for k, v in new_value.items() if k not in current}}
            else:
                out[key] = new_value
            produced.add(key)
        warn(f"{kind}.{old}", f"{kind}.{', '.join(mapped)}", stacklevel=4)
    return out


def _positional_params(fn: Callable) -> int:
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


class _MovedModuleFinder:
    """Import hook so that ``import nnshrink.quantization.kmeans`` still finds the moved module."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):  # noqa: D102
        new = MOVED_MODULES.get(fullname)
        if new is None:
            return None
        import importlib.util

        warn(f"module {fullname}", new, stacklevel=2)
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


class _AliasLoader:
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):  # noqa: D102
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:  # noqa: D102
        pass


def install_module_aliases() -> None:
    """Register :class:`_MovedModuleFinder` once (called from ``nnshrink/__init__``)."""
    import sys

    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())


install_module_aliases()
