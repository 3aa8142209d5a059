"""The recipe's ``model:`` as a module: a zoo name, a checkpoint, the user's factory or an HF folder."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..data import DataBundle


def build_model(spec: dict[str, Any], data: DataBundle | None = None) -> nn.Module:
    """Build the model a recipe names.

    Zoo models get ``in_channels`` / ``input_size`` / ``num_classes`` from the data's first
    batch when it holds images (``(N, C, H, W)``), unless the recipe's ``kwargs`` set them.

    Args:
        spec: the recipe's ``model`` mapping (``name``, ``checkpoint``, ``factory`` or ``hf``).
        data: the run's data (for the zoo's input shape).
    """
    from .. import models

    kwargs = dict(spec.get("kwargs") or {})
    if "name" in spec:
        shape = data.sample_shape() if data is not None else None
        if shape is not None and len(shape) == 3:
            kwargs.setdefault("in_channels", shape[0])
            kwargs.setdefault("input_size", shape[1])
        if data is not None and data.num_classes:
            kwargs.setdefault("num_classes", data.num_classes)
        return models.create(spec["name"], **kwargs)
    if "checkpoint" in spec:
        from .artifacts import load_model_file

        return load_model_file(
            spec["checkpoint"], trust_code=bool(spec.get("trust_code")), factory=spec.get("factory")
        )
    reference = spec["factory"] if "factory" in spec else f"hf:{spec['hf']}"
    return models.from_reference(reference, kwargs)
