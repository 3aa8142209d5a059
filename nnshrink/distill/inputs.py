"""Model inputs and outputs in the forms transformers use: tensors, tuples, keyword dicts.

A batch ``x`` is a tensor (``model(x)``), a tuple or list of positional inputs
(``model(*x)``) or a dict of keyword inputs (``model(**x)``, as tokenizers return them). The
attention mask, when the batch has one, is the ``"attention_mask"`` entry of a dict, or the
positional input at the place of the model's ``attention_mask`` argument (Hugging Face's
``forward(input_ids, attention_mask, ...)`` order).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a dict, ``model(*inputs)`` for a tuple/list, else ``model(inputs)``.

    Example:
        >>> call_model(nn.Identity(), torch.ones(2)).tolist()
        [1.0, 1.0]
    """
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def output_tensor(output: Any) -> torch.Tensor:
    """The main tensor of a model output: itself, the first of a tuple, ``.logits`` or
    ``.last_hidden_state`` (Hugging Face ``ModelOutput``).

    Example:
        >>> output_tensor((torch.zeros(1), torch.ones(1))).tolist()
        [0.0]
    """
    if isinstance(output, torch.Tensor):
        return output
    for attr in ("logits", "last_hidden_state"):
        value = getattr(output, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"cannot read a tensor from a model output of type {type(output).__name__}; return a "
        f"tensor, a tuple starting with one, or an object with .logits / .last_hidden_state"
    )


def find_attention_mask(model: nn.Module, inputs: Any) -> torch.Tensor | None:
    """The ``(N, T)`` attention mask in a batch, or ``None`` (see the module docstring).

    Example:
        >>> class Encoder(nn.Module):
        ...     def forward(self, input_ids, attention_mask=None):
        ...         return input_ids
        >>> ids, mask = torch.zeros(1, 3, dtype=torch.long), torch.tensor([[1, 1, 0]])
        >>> find_attention_mask(Encoder(), (ids, mask)).tolist()
        [[1, 1, 0]]
    """
    if isinstance(inputs, Mapping):
        return inputs.get("attention_mask")
    if not isinstance(inputs, tuple | list):
        return None
    try:
        params = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return None
    if "attention_mask" in params:
        index = params.index("attention_mask")
        if index < len(inputs) and isinstance(inputs[index], torch.Tensor):
            return inputs[index]
    return None
