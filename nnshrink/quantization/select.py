"""Which layers int8 quantization touches, and the transformer layouts it must respect.

:func:`quantizable_layers` applies the config's ``include`` / ``exclude`` / ``per_layer`` to the
model's Conv / Linear layers (and Hugging Face GPT-2 ``Conv1D``), and names every layer it leaves
in float with the reason, e.g. the projections of ``nn.MultiheadAttention``: its forward computes
them inside ``F.multi_head_attention_forward`` from ``in_proj_weight`` and ``out_proj.weight``
and never calls ``out_proj`` (a ``NonDynamicallyQuantizableLinear`` for exactly that reason), so a
swapped-in layer would never run.

:func:`disable_fused_fast_paths` turns off the fused inference kernels of
``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder`` whose Linear layers were replaced: the
fused kernel reads ``linear1.weight`` & co. directly instead of calling the layers, so it would
either fail (no float ``weight``) or silently compute in float.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..core import ConfigError, SelectedLayer
from .int8_linear import is_conv1d

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def quantizable_layers(
    model: nn.Module,
    config: Any,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    *,
    convs: bool = True,
) -> tuple[list[SelectedLayer], dict[str, str]]:
    """The layers to quantize (in module order, with ``per_layer`` overrides) and those skipped.

    Args:
        model: the model.
        config: a config with :class:`~nnshrink.core.LayerSelection` fields (``PTQ``).
        filter_fn: ``(module, name) -> bool`` from ``compress_``.
        convs: consider Conv1d/2d/3d too (static int8); else Linear / ``Conv1D`` only.

    Returns:
        ``(selected, {skipped name: reason})``.

    Example:
        >>> from nnshrink.quantization import PTQ
        >>> mha = nn.MultiheadAttention(8, 2)
        >>> model = nn.ModuleDict({"attn": mha, "fc": nn.Linear(8, 2)})
        >>> layers, skipped = quantizable_layers(model, PTQ(), convs=False)
        >>> [layer.name for layer in layers], list(skipped)
        (['fc'], ['attn.out_proj'])
    """
    attention_children = {
        f"{name}.{child}" if name else child
        for name, module in model.named_modules()
        if isinstance(module, nn.MultiheadAttention)
        for child, _ in module.named_children()
    }
    # layers inside an already-quantized wrapper (QuantizedLayer.layer) are not candidates
    wrapped = [n + "." for n, m in model.named_modules() if getattr(m, "quantized_wrapper", False)]
    types = (nn.Linear, *CONV_TYPES) if convs else (nn.Linear,)
    candidates = []
    skipped: dict[str, str] = {}
    for name, module in model.named_modules():
        if not (isinstance(module, types) or is_conv1d(module)):
            continue
        if any(name.startswith(prefix) for prefix in wrapped):
            continue
        if name in attention_children:
            skipped[name] = (
                "nn.MultiheadAttention computes its projections from in_proj_weight / "
                "out_proj.weight inside F.multi_head_attention_forward; they stay float"
            )
            continue
        candidates.append((name, module))
    chosen = config.select(candidates, filter_fn=filter_fn, amount_field="bits")
    kept = {layer.name for layer in chosen}
    for name, _ in candidates:
        if name not in kept:
            skipped[name] = "excluded by include/exclude/per_layer/filter_fn"
    return chosen, skipped


def layer_bits(layer: SelectedLayer, config: Any, allowed: tuple[int, ...]) -> int:
    """The layer's bit width (its ``per_layer`` override or ``config.bits``), checked.

    Raises:
        ConfigError: naming the layer when the width has no kernel on this backend.
    """
    bits = layer.get("bits", config.bits)
    if bits not in allowed:
        raise ConfigError(
            f"ptq.per_layer gives {layer.name!r} bits={bits!r}, but mode={config.mode!r} with "
            f"backend={config.backend!r} runs {list(allowed)}-bit kernels; use backend='fake' "
            "to simulate other widths"
        )
    return bits


def disable_fused_fast_paths(model: nn.Module, replaced: list[str]) -> list[str]:
    """Switch off the fused transformer kernels above the ``replaced`` layers; return their names.

    ``TransformerEncoderLayer`` takes its fused path only when ``activation_relu_or_gelu`` is
    set; ``TransformerEncoder`` only when ``use_nested_tensor`` is. Clearing them leaves the
    ordinary path, which calls ``linear1`` / ``linear2`` (and ``self.activation``, unchanged).
    """
    touched = []
    prefixes = [name + "." for name in replaced]
    for name, module in model.named_modules():
        inside = any(p.startswith(name + ".") or not name for p in prefixes)
        if not inside:
            continue
        if isinstance(module, nn.TransformerEncoderLayer) and module.activation_relu_or_gelu:
            module.activation_relu_or_gelu = 0
            touched.append(name)
        elif isinstance(module, nn.TransformerEncoder) and module.use_nested_tensor:
            module.use_nested_tensor = False
            touched.append(name)
    return touched


def layer_type(module: nn.Module) -> str:
    """``"Conv1D"`` for GPT-2's transposed layer, else the class name."""
    return "Conv1D" if is_conv1d(module) else type(module).__name__
