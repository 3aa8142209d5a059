"""What reads each conv's output: found on the autograd graph of one forward pass.

A CReLU block may replace a conv only when a ReLU follows it, directly or through one
BatchNorm, and nothing else reads the conv's (or the BN's) output. And when the fitted block
produces the conv's channels in a different order, that order can be moved into the layers that
read the ReLU's output if those are plain convs. Both questions are about the model's data flow,
whatever its classes are called, so we answer them from the graph autograd records during one
eval-mode forward pass on ``example_inputs``: forward hooks tie each conv's and BN's output to
its autograd node, and walking the graph back from the model outputs tells every node's
consumers. This reaches any model that runs (no symbolic tracing), as Torch-Pruning does.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> uses = conv_uses(model, torch.zeros(1, 1, 8, 8))
    >>> uses["0"].batchnorm, uses["0"].relu, uses["0"].readers, uses["3"].relu
    ('1', True, ['3'], False)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from ..core import as_input_tuple, eval_mode

# autograd nodes of ops that act on each channel separately: a channel order passes through them
_PER_CHANNEL = {
    "ReluBackward0",
    "MaxPool2DWithIndicesBackward0",
    "AvgPool2DBackward0",
}
_RELU = {"ReluBackward0"}


@dataclasses.dataclass
class ConvUse:
    """How one conv's output is used.

    Attributes:
        calls: how many times the conv ran in the forward pass.
        batchnorm: name of the BatchNorm module that is the only reader of the conv's output
            (and itself ran once), or ``None``.
        relu: the only reader of that output (the BN's, or else the conv's) is a ReLU.
        readers: when ``relu``, the plain ``groups=1`` convs (each run once) that read the
            ReLU's output through per-channel ops only (ReLU, max/avg pooling), with nothing else
            reading it; ``None`` when anything else does (an addition, a flatten, the output).
    """

    calls: int
    batchnorm: str | None = None
    relu: bool = False
    readers: list[str] | None = None


def conv_uses(model: nn.Module, example_inputs: Any) -> dict[str, ConvUse]:
    """``{name: ConvUse}`` for every ``nn.Conv2d`` of ``model`` that runs on ``example_inputs``.

    Args:
        model: the model (run once in eval mode with gradients on; its mode is restored and
            no gradient is accumulated).
        example_inputs: a tensor or tuple of positional inputs.
    """
    conv_nodes: dict[str, list[Any]] = {}
    bn_nodes: dict[str, list[tuple[Any, Any]]] = {}
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):

            def conv_hook(mod, args, out, name=name):
                conv_nodes.setdefault(name, []).append(out.grad_fn)

            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):

            def bn_hook(mod, args, out, name=name):
                bn_nodes.setdefault(name, []).append((args[0].grad_fn, out.grad_fn))

            handles.append(module.register_forward_hook(bn_hook))
    inputs = tuple(
        t.detach().clone().requires_grad_(True)
        if isinstance(t, torch.Tensor) and t.is_floating_point()
        else t
        for t in as_input_tuple(example_inputs)
    )
    try:
        with torch.enable_grad(), eval_mode(model):
            output = model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    roots = [t.grad_fn for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
    consumers = _consumers([r for r in roots if r is not None])

    bn_of_input = {
        id(calls[0][0]): (name, calls[0][1])
        for name, calls in bn_nodes.items()
        if len(calls) == 1 and calls[0][0] is not None
    }
    conv_of_node = {id(nodes[0]): name for name, nodes in conv_nodes.items() if len(nodes) == 1}
    uses = {}
    for name, nodes in conv_nodes.items():
        use = ConvUse(calls=len(nodes))
        uses[name] = use
        if len(nodes) != 1 or nodes[0] is None:
            continue
        node = nodes[0]
        readers = consumers.get(id(node), [])
        if len(readers) == 1 and id(node) in bn_of_input and readers[0][0] is not None:
            bn_name, bn_node = bn_of_input[id(node)]
            if readers[0][0] is bn_node:
                use.batchnorm = bn_name
                node = bn_node
                readers = consumers.get(id(node), [])
        if len(readers) == 1 and type(readers[0][0]).__name__ in _RELU:
            use.relu = True
            use.readers = _channel_readers(readers[0][0], consumers, conv_of_node, convs)
    return uses


def _consumers(roots: list[Any]) -> dict[int, list[tuple[Any, int]]]:
    """``{id(node): [(consumer node or None for a model output, input slot), ...]}``."""
    consumers: dict[int, list[tuple[Any, int]]] = {}
    for root in roots:
        consumers.setdefault(id(root), []).append((None, 0))
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for slot, (child, _) in enumerate(node.next_functions):
            if child is None:
                continue
            consumers.setdefault(id(child), []).append((node, slot))
            stack.append(child)
    return consumers


def _channel_readers(
    start: Any,
    consumers: dict[int, list[tuple[Any, int]]],
    conv_of_node: dict[int, str],
    convs: dict[str, nn.Conv2d],
) -> list[str] | None:
    """The convs reading ``start``'s channels through per-channel ops only, else ``None``."""
    found: list[str] = []
    stack, seen = [start], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for reader, slot in consumers.get(id(node), []):
            if reader is None:
                return None  # a model output: its channel order is fixed
            name = conv_of_node.get(id(reader))
            if name is not None:
                conv = convs[name]
                if slot != 0 or conv.groups != 1 or type(conv) is not nn.Conv2d:
                    return None
                found.append(name)
            elif type(reader).__name__ in _PER_CHANNEL:
                stack.append(reader)
            else:
                return None
    return found
