"""Int8 Linear layers against a float64 reference, within the error bound of int8 rounding.

Bound for ``y_i = sum_j x_j w_ij`` with activations on a grid of step ``s_x`` and weights on
grids of step ``s_w,i`` (or ``s_w,ig`` per group): writing ``x = x^ + d``, ``w = w^ + e``,

    |y_i - y^_i| <= sum_j |d_j| |w_ij| + sum_j |x^_j| |e_ij|
                 <= s_x * ||w_i||_1 + sum_j (|x_j| + s_x) * s_w,ij / 2.

|e| <= s_w / 2 (round to nearest, the range covers every weight). For dynamically quantized
activations the grid covers the batch's range, but the zero point is rounded to an integer, which
can shift the grid by half a step: |d| <= s_x (not s_x / 2). Weight-only layers have d = 0.
"""

import copy
import pickle

import pytest
import torch
from torch import nn

from nnshrink.quantization.int8_linear import (
    Int8DynamicLinear,
    WeightOnlyLinear,
    cpu_has_vnni,
    dequantize_codes,
    linear_parts,
    weight_codes,
)

# Without an int8 dot product (VNNI / AMX), fbgemm with 8-bit activations and ONNX Runtime's
# u8 x s8 kernels add pairs of products in int16, which saturates: the error bounds below then
# fail. On such CPUs PyTorch dynamic int8 keeps 7-bit activations (reduce_range=None); the ONNX
# Runtime graphs still use 8 bits everywhere (an open defect: they need 7-bit weights there).
# Tests of those forms are expected to fail on such a CPU, and must pass on one with VNNI.
saturates_without_vnni = pytest.mark.xfail(
    not cpu_has_vnni(),
    reason="int16 sums of u8 x s8 products saturate on a CPU without VNNI",
    strict=False,
)


def bound(x, weight, w_scales, s_x):
    """Per-output bound of the docstring; ``w_scales`` (out, in) expanded to every weight."""
    x, weight, w_scales = x.double(), weight.double(), w_scales.double()
    act = s_x * weight.abs().sum(1)
    wgt = (x.abs() + s_x) @ (w_scales / 2).t()
    return act + wgt + 1e-5


def expanded_scales(layer):
    group = getattr(layer, "group_size", 0)
    return dequantize_codes(torch.ones_like(layer.weight_int8), layer.weight_scale, group).double()


def test_weight_codes_round_trip():
    torch.manual_seed(0)
    w = torch.randn(6, 40)
    for bits, group in ((8, 0), (4, 16), (4, 32)):
        codes, scales = weight_codes(w, bits, group)
        back = dequantize_codes(codes, scales, group)
        qmax = 2 ** (bits - 1) - 1
        assert codes.dtype == torch.int8 and int(codes.abs().max()) == qmax
        steps = dequantize_codes(torch.ones_like(codes), scales, group)
        assert bool(((w - back).abs() <= steps / 2 + 1e-7).all())


@pytest.mark.parametrize("reduce_range", [pytest.param(False, marks=saturates_without_vnni), True])
def test_dynamic_linear_within_int8_bound(reduce_range):
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    x = torch.randn(16, 64) * 2 + 0.5
    q = Int8DynamicLinear.from_float(lin, reduce_range=reduce_range)
    ref = (x.double() @ lin.weight.double().t()) + lin.bias.double()
    levels = 127 if reduce_range else 255
    s_x = float(x.max().clamp(min=0) - x.min().clamp(max=0)) / levels
    err = (q(x).double() - ref).abs()
    limit = bound(x, lin.weight.detach(), expanded_scales(q), s_x)
    assert bool((err <= limit).all()), float((err / limit).max())
    assert err.max() > 0  # it really is quantized
    assert q.weight_int8.dtype == torch.int8 and q.reduce_range is reduce_range


def test_dynamic_linear_default_reduce_range_follows_cpu():
    assert Int8DynamicLinear(4, 2).reduce_range is (not cpu_has_vnni())


@pytest.mark.parametrize("bits,group", [(8, 0), (4, 32), (4, 64), (8, 16)])
def test_weight_only_linear_within_bound(bits, group):
    torch.manual_seed(0)
    lin = nn.Linear(128, 32)
    x = torch.randn(3, 5, 128)
    q = WeightOnlyLinear.from_float(lin, bits=bits, group_size=group)
    assert q.has_kernel is (bits == 4 or group == 0)
    ref = x.double() @ lin.weight.double().t() + lin.bias.double()
    err = (q(x).double() - ref).abs()
    limit = bound(x.reshape(-1, 128), lin.weight.detach(), expanded_scales(q), 0.0)
    assert bool((err.reshape(-1, 32) <= limit).all())
    assert q(x).shape == (3, 5, 32)
    # the kernel computes exactly with the codes: same as a float matmul of the dequantized weight
    assert torch.allclose(q(x), nn.functional.linear(x, q.weight, lin.bias), atol=1e-4)


def test_state_dict_copy_and_pickle():
    torch.manual_seed(0)
    x = torch.randn(4, 32)
    for q in (Int8DynamicLinear.from_float(nn.Linear(32, 16)),
              WeightOnlyLinear.from_float(nn.Linear(32, 16), bits=4, group_size=32)):  # fmt: skip
        ref = q(x)
        for clone in (copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
            assert torch.equal(clone(x), ref)
        extra = {"bits": 4, "group_size": 32} if isinstance(q, WeightOnlyLinear) else {}
        fresh = type(q)(32, 16, True, **extra)
        fresh.load_state_dict(q.state_dict())
        assert torch.equal(fresh(x), ref)
        assert q.weight_bytes() < 32 * 16 * 4 / 3  # int8 / int4 codes, not fp32


def test_conv1d_weights_are_transposed():
    transformers = pytest.importorskip("transformers")
    conv1d = transformers.pytorch_utils.Conv1D(12, 8)
    torch.manual_seed(0)
    nn.init.normal_(conv1d.weight)
    weight, _ = linear_parts(conv1d)
    assert weight.shape == (12, 8)
    x = torch.randn(2, 8)
    for q in (Int8DynamicLinear.from_float(conv1d), WeightOnlyLinear.from_float(conv1d)):
        assert torch.allclose(q(x), conv1d(x), atol=0.1)
