"""ONNX forms of the int8 Linear layers: what they become under ``torch.onnx.export``.

Each function is an autograd ``Function`` whose ``forward`` gives the traced shape (a float
reference computation) and whose ``symbolic`` writes the integer ONNX nodes with the layer's own
codes, so the exported graph runs the same integers as the PyTorch layer:

* :func:`dynamic_int8_matmul`: ``DynamicQuantizeLinear(x) → MatMulInteger(x_q, W_q) → Cast →
  Mul(x_scale · w_scale) → Add(bias)``, the pattern ONNX Runtime's ``quantize_dynamic`` writes
  and fuses into one ``DynamicQuantizeMatMul`` kernel at session creation. It also covers 2-D
  inputs, where ``quantize_dynamic`` leaves ``Gemm`` in float.
* :func:`matmul_nbits`: ONNX Runtime's ``com.microsoft.MatMulNBits`` (int8 / int4 weights in
  blocks, float activations). Per-channel codes use one block spanning the whole input (the
  next power of two, zero-padded).

Export with ``custom_opsets={"com.microsoft": 1}`` (``export_fp32_onnx`` does).
"""

from __future__ import annotations

import numpy as np
import torch

_FLOAT = 1  # onnx.TensorProto.FLOAT


class _DynamicInt8MatMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_t, scale, bias):  # noqa: D102
        y = x @ (w_t.float() * scale)
        return y if bias is None else y + bias

    @staticmethod
    def symbolic(g, x, w_t, scale, bias):  # noqa: D102
        x_q, x_scale, x_zero = g.op("DynamicQuantizeLinear", x, outputs=3)
        acc = g.op("MatMulInteger", x_q, w_t, x_zero)
        y = g.op("Mul", g.op("Cast", acc, to_i=_FLOAT), g.op("Mul", x_scale, scale))
        return y if bias is None else g.op("Add", y, bias)


def dynamic_int8_matmul(
    x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Dynamic int8 ``x @ W.T + b`` for export (``codes`` (out, in) int8, ``scales`` (out, 1)).

    Example:
        >>> y = dynamic_int8_matmul(torch.ones(1, 2), torch.ones(3, 2, dtype=torch.int8),
        ...                         torch.full((3, 1), 0.5), None)
        >>> y.tolist()
        [[1.0, 1.0, 1.0]]
    """
    return _DynamicInt8MatMul.apply(x, codes.t().contiguous(), scales.reshape(-1), bias)


def nbits_layout(
    codes: torch.Tensor, scales: torch.Tensor, bits: int, in_f: int, out_f: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``MatMulNBits`` inputs from symmetric codes: ``(B uint8 (N, blocks, blob), scales, block)``.

    Codes are stored with the operator's default zero point ``2^(bits-1)``; two int4 codes per
    byte, the even index in the low nibble. Sizes are passed as ints (under tracing, tensor
    shapes are traced values).
    """
    if group_size == 0:
        block = max(16, 1 << (in_f - 1).bit_length())  # per channel: one block over all inputs
    else:
        block = group_size
    blocks = -(-in_f // block)
    # numpy, not torch: under the exporter's tracer torch ops on buffers would become graph
    # nodes; these values must be constants of the graph
    q = codes.detach().cpu().numpy().astype(np.int32)
    q = np.pad(q, ((0, 0), (0, blocks * block - in_f))) + (1 << (bits - 1))
    q = q.astype(np.uint8).reshape(out_f, blocks, block)
    if bits == 4:
        q = q[..., 0::2] | (q[..., 1::2] << 4)
    flat = scales.detach().cpu().numpy().astype(np.float32).reshape(-1)
    return torch.from_numpy(np.ascontiguousarray(q)), torch.from_numpy(flat.copy()), block


class _MatMulNBits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, packed, scales, weight, bias, k, n, bits, block):  # noqa: D102
        y = x @ weight.t()
        return y if bias is None else y + bias

    @staticmethod
    def symbolic(g, x, packed, scales, weight, bias, k, n, bits, block):  # noqa: D102
        y = g.op("com.microsoft::MatMulNBits", x, packed, scales, K_i=k, N_i=n, bits_i=bits,
                 block_size_i=block)  # fmt: skip
        return y if bias is None else g.op("Add", y, bias)


def matmul_nbits(
    x: torch.Tensor,
    codes: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    weight: torch.Tensor,
    group_size: int,
) -> torch.Tensor:
    """Weight-only ``x @ W.T + b`` for export as ``MatMulNBits``.

    Args:
        x: input (..., in).
        codes: int8 codes (out, in).
        scales: (out, groups).
        bias: (out,) or None.
        bits: 8 or 4.
        weight: the dequantized weight (the traced reference computation).
        group_size: inputs per scale (0: per channel).
    """
    out_f, in_f = (int(v) for v in weight.shape)
    packed, flat_scales, block = nbits_layout(codes, scales, bits, in_f, out_f, group_size)
    return _MatMulNBits.apply(x, packed, flat_scales, weight, bias, in_f, out_f, bits, block)
