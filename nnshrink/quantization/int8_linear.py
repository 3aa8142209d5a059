"""Int8 Linear layers that run real integer kernels in PyTorch (and export to ONNX as such).

* :class:`Int8DynamicLinear`: int8 weights (per output channel), activations quantized at run
  time (per tensor, uint8 affine, range from the batch) and multiplied in int8 by PyTorch's
  fbgemm kernel (``quantized::linear_dynamic``). Exported to ONNX it becomes
  ``DynamicQuantizeLinear → MatMulInteger → scale`` (fused by ONNX Runtime into
  ``DynamicQuantizeMatMul``) with the *same* weight codes.
* :class:`WeightOnlyLinear`: int8 or int4 weight codes, float activations. PyTorch runs
  ``_weight_int8pack_mm`` (int8, per channel) or ``_weight_int4pack_mm_for_cpu`` (int4, groups of
  32..256); exported to ONNX it becomes ONNX Runtime's ``MatMulNBits`` with the same codes.

Both replace ``nn.Linear`` and Hugging Face GPT-2 ``Conv1D`` (weight stored transposed; read
through :func:`linear_parts`). Weight codes are symmetric (zero point 0, range ±(2^(b-1)-1)) with
the min-max scale of :func:`~nnshrink.quantization.primitives.minmax_qparams`, so the in-place
PyTorch layer and the ONNX graph hold identical integers.

``fbgemm`` multiplies uint8 activations by int8 weights. On CPUs without VNNI (AVX2,
AVX-512 without VNNI) its int16 intermediate sums can saturate; ``reduce_range`` (7-bit
activations, torch.ao's choice for every CPU) avoids that. With VNNI there is no saturation, so we
keep all 8 bits there (``reduce_range=None`` decides from the CPU flags): on MiniLM that is the
difference between 0.98 and 0.994 embedding cosine.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..io import register_module
from ..utils.env import cpu_info
from .primitives import minmax_qparams, quantize

INT4_KERNEL_GROUPS = (32, 64, 128, 256)


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a Hugging Face ``Conv1D`` (GPT-2): ``y = x @ W + b``, W is (in, out).

    Matched by class name and shape so that transformers is never imported here.
    """
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and isinstance(weight, torch.Tensor)
        and weight.dim() == 2
        and hasattr(module, "nf")
    )


def linear_parts(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(weight (out, in), bias)`` of an ``nn.Linear`` or a GPT-2 ``Conv1D`` (detached).

    Example:
        >>> w, b = linear_parts(nn.Linear(3, 2)); tuple(w.shape), tuple(b.shape)
        ((2, 3), (2,))
    """
    weight = module.weight.detach()
    if is_conv1d(module):
        weight = weight.t()
    bias = None if module.bias is None else module.bias.detach()
    return weight.contiguous(), bias


@functools.lru_cache(maxsize=1)
def cpu_has_vnni() -> bool:
    """Whether this CPU has an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI or AMX)."""
    isa = cpu_info().get("cpu_isa", [])
    return any(flag in isa for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def weight_codes(
    weight: torch.Tensor, bits: int = 8, group_size: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric integer codes of a (out, in) weight: per output channel, or per group of inputs.

    Args:
        weight: float weight (out, in).
        bits: 8 or 4 (any 2..8 works).
        group_size: 0 for one scale per output channel; else ``in`` is split into groups of this
            many inputs (the last group zero-padded), each with its own scale.

    Returns:
        ``(codes int8 (out, in), scales float32 (out, groups))``.

    Example:
        >>> codes, scales = weight_codes(torch.randn(4, 64), bits=4, group_size=32)
        >>> codes.dtype, tuple(scales.shape), int(codes.abs().max()) <= 7
        (torch.int8, (4, 2), True)
    """
    out_f, in_f = weight.shape
    if group_size == 0:
        scale, zp = minmax_qparams(weight.float(), bits, True, axis=0)
        codes = quantize(weight.float(), scale, zp, bits, True, axis=0)
        return codes, scale.reshape(out_f, 1)
    groups = -(-in_f // group_size)
    padded = F.pad(weight.float(), (0, groups * group_size - in_f)).reshape(out_f * groups, -1)
    scale, zp = minmax_qparams(padded, bits, True, axis=0)
    codes = quantize(padded, scale, zp, bits, True, axis=0).reshape(out_f, -1)[:, :in_f]
    return codes.contiguous(), scale.reshape(out_f, groups)


def dequantize_codes(
    codes: torch.Tensor, scales: torch.Tensor, group_size: int = 0
) -> torch.Tensor:
    """Float weight (out, in) from :func:`weight_codes` output (inverse up to rounding).

    Args:
        codes: (out, in) integer codes.
        scales: (out, groups) scales.
        group_size: the group size the codes were made with (0: one scale per row).
    """
    return _dequantize(codes, scales, int(codes.shape[1]), group_size)


def _dequantize(
    codes: torch.Tensor, scales: torch.Tensor, in_f: int, group_size: int
) -> torch.Tensor:
    size = group_size if group_size else in_f
    with torch.no_grad():
        expanded = scales.repeat_interleave(size, dim=1)[:, :in_f]
        return codes.float() * expanded


class _Int8Base(nn.Module):
    """Shared state: int8 codes and scales as buffers (the state dict), kernels built lazily."""

    def __init__(self, in_features: int, out_features: int, bias: bool, groups: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8)
        )
        self.register_buffer("weight_scale", torch.ones(out_features, groups))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._kernel: Any = None  # packed weights: a cache rebuilt from the buffers

    def _set(self, codes: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight_int8 = codes.to(torch.int8).contiguous()
        self.weight_scale = scales.float().contiguous()
        if bias is not None:
            self.bias = bias.float().clone()
        self._kernel = None

    @property
    def weight(self) -> torch.Tensor:
        """The float weight (out, in) this layer computes with (dequantized, read-only copy)."""
        return dequantize_codes(self.weight_int8, self.weight_scale, getattr(self, "group_size", 0))

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._kernel = None

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:
        self._kernel = None  # .to() / .float() may replace the buffers
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_kernel"] = None  # packed kernels do not pickle or deep-copy
        return state

    def macs(self, inputs: Any, output: torch.Tensor) -> int:
        """Multiply-accumulates of one call (read by ``nnshrink.metrics``), as for ``nn.Linear``."""
        return output.numel() * self.in_features

    @torch.no_grad()
    def represented_params(self) -> dict[str, int]:
        """The weights this layer holds as int8 codes, as ``nnshrink.metrics`` counts them.

        Its codes are buffers (not ``nn.Parameter`` s), yet each stands for one weight.

        Example:
            >>> Int8DynamicLinear(4, 2, bias=True, groups=1).represented_params()["params"]
            10
        """
        bias = self.bias if self.bias is not None else torch.zeros(0)
        params = self.weight_int8.numel() + bias.numel()
        nonzero = int((self.weight_int8 != 0).sum()) + int((bias != 0).sum())
        return {"params": params, "nonzero_params": nonzero}

    def weight_bytes(self) -> int:
        """Bytes of the weight codes and scales (int4 codes count half a byte each)."""
        bits = getattr(self, "bits", 8)
        return self.weight_int8.numel() * bits // 8 + self.weight_scale.numel() * 4


class Int8DynamicLinear(_Int8Base):
    """Linear with int8 weights and activations quantized at run time (fbgemm kernel).

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        per_channel: one weight scale per output channel (else one for the tensor).
        reduce_range: 7-bit activations (``None``: only on CPUs without VNNI, see module docs).

    Example:
        >>> lin = nn.Linear(16, 8)
        >>> q = Int8DynamicLinear.from_float(lin)
        >>> x = torch.randn(4, 16)
        >>> bool((q(x) - lin(x)).abs().max() < 0.05), q.weight_int8.dtype
        (True, torch.int8)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        per_channel: bool = True,
        reduce_range: bool | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, 1)
        self.per_channel = per_channel
        self.reduce_range = (not cpu_has_vnni()) if reduce_range is None else reduce_range

    @classmethod
    def from_float(
        cls, layer: nn.Module, per_channel: bool = True, reduce_range: bool | None = None
    ) -> Int8DynamicLinear:
        """Quantize an ``nn.Linear`` / ``Conv1D``'s weight to int8 codes."""
        weight, bias = linear_parts(layer)
        q = cls(weight.shape[1], weight.shape[0], bias is not None, per_channel, reduce_range)
        if per_channel:
            codes, scales = weight_codes(weight, 8, 0)
        else:
            scale, zp = minmax_qparams(weight.float(), 8, True)
            codes = quantize(weight.float(), scale, zp, 8, True)
            scales = scale.expand(weight.shape[0], 1)
        q._set(codes, scales, bias)
        return q

    def _packed(self) -> Any:
        if self._kernel is None:
            scale = self.weight_scale.reshape(-1).double()
            zero = torch.zeros(self.out_features, dtype=torch.long)
            with warnings.catch_warnings():
                # the packing API takes a quantized tensor, whose creation functions PyTorch
                # has deprecated; the kernel itself is what torch.ao's dynamic Linear runs
                warnings.simplefilter("ignore", UserWarning)
                if self.per_channel:
                    qweight = torch._make_per_channel_quantized_tensor(
                        self.weight_int8, scale, zero, 0
                    )
                else:
                    qweight = torch._make_per_tensor_quantized_tensor(
                        self.weight_int8, float(scale[0]), 0
                    )
                self._kernel = torch.ops.quantized.linear_prepack(qweight, self.bias)
        return self._kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if torch.onnx.is_in_onnx_export():
            from .backends.onnx_ops import dynamic_int8_matmul

            return dynamic_int8_matmul(x, self.weight_int8, self.weight_scale, self.bias)
        dtype = x.dtype
        y = torch.ops.quantized.linear_dynamic(x.float(), self._packed(), self.reduce_range)
        return y.to(dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, per_channel={self.per_channel}, "
            f"reduce_range={self.reduce_range}"
        )


class WeightOnlyLinear(_Int8Base):
    """Linear with int8 / int4 weight codes and float activations.

    PyTorch kernels: ``_weight_int8pack_mm`` for int8 per channel (``group_size=0``),
    ``_weight_int4pack_mm_for_cpu`` for int4 in groups of 32, 64, 128 or 256 inputs. Other
    layouts (e.g. int8 in groups, for ONNX Runtime's ``MatMulNBits``) have no PyTorch kernel and
    compute with the dequantized weight (:attr:`has_kernel` is then False).

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        bits: 8 or 4.
        group_size: 0 (per output channel) or the number of inputs sharing a scale.

    Example:
        >>> lin = nn.Linear(64, 8)
        >>> q = WeightOnlyLinear.from_float(lin, bits=4, group_size=32)
        >>> q.has_kernel, bool((q(torch.randn(2, 64)) - lin(torch.randn(2, 64))).abs().max() < 5)
        (True, True)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bits: int = 8,
        group_size: int = 0,
    ) -> None:
        groups = 1 if group_size == 0 else -(-in_features // group_size)
        super().__init__(in_features, out_features, bias, groups)
        self.bits = bits
        self.group_size = group_size

    @classmethod
    def from_float(cls, layer: nn.Module, bits: int = 8, group_size: int = 0) -> WeightOnlyLinear:
        """Quantize an ``nn.Linear`` / ``Conv1D``'s weight to ``bits``-bit codes."""
        weight, bias = linear_parts(layer)
        q = cls(weight.shape[1], weight.shape[0], bias is not None, bits, group_size)
        q._set(*weight_codes(weight, bits, group_size), bias)
        return q

    @property
    def has_kernel(self) -> bool:
        """Whether PyTorch has an integer kernel for this layout (else dequantize + matmul)."""
        if self.bits == 8:
            return self.group_size == 0
        return (
            self.bits == 4
            and self.group_size in INT4_KERNEL_GROUPS
            and self.in_features % self.group_size == 0
            and self.out_features % 16 == 0
        )

    def _int4_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._kernel is None:
            # kernel convention: w = (q - 8) * scale + zero with q in 0..15; symmetric codes
            # c in -7..7 are q = c + 8 and zero = 0
            q = (self.weight_int8.to(torch.int32) + 8).contiguous()
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
            scale = self.weight_scale.t().contiguous()  # (groups, out)
            scales_zeros = torch.stack([scale, torch.zeros_like(scale)], dim=-1).contiguous()
            self._kernel = (packed, scales_zeros)
        return self._kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if torch.onnx.is_in_onnx_export():
            from .backends.onnx_ops import matmul_nbits

            weight = _dequantize(self.weight_int8, self.weight_scale, self.in_features,
                                 self.group_size)  # fmt: skip
            return matmul_nbits(x, self.weight_int8, self.weight_scale, self.bias, self.bits,
                                weight, self.group_size)  # fmt: skip
        dtype = x.dtype
        x2 = x.float().reshape(-1, self.in_features)
        if not self.has_kernel:
            y = F.linear(x2, self.weight)
        elif self.bits == 8:
            y = torch.ops.aten._weight_int8pack_mm(
                x2.contiguous(), self.weight_int8, self.weight_scale.reshape(-1)
            )
        else:
            packed, scales_zeros = self._int4_kernel()
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(
                x2.contiguous(), packed, self.group_size, scales_zeros
            )
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, bits={self.bits}, group_size={self.group_size}"
        )


def _dynamic_kwargs(m: Int8DynamicLinear) -> dict[str, Any]:
    return {"in_features": m.in_features, "out_features": m.out_features,
            "bias": m.bias is not None, "per_channel": m.per_channel,
            "reduce_range": m.reduce_range}  # fmt: skip


def _weight_only_kwargs(m: WeightOnlyLinear) -> dict[str, Any]:
    return {"in_features": m.in_features, "out_features": m.out_features,
            "bias": m.bias is not None, "bits": m.bits, "group_size": m.group_size}  # fmt: skip


register_module(Int8DynamicLinear, _dynamic_kwargs)
register_module(WeightOnlyLinear, _weight_only_kwargs)
