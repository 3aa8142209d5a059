"""Dense equivalents of the sharing layers, for runtimes that know only plain layers (ONNX).

k-means layers become plain layers holding the shared values (what :func:`nnshrink.finalize`
does too). Hashed and circulant layers are *not* training-time forms: their few stored values are
the compressed model, and ``finalize`` leaves them alone. An exporter that needs plain layers
expands them here into ``nn.Linear`` with the full ``in * out`` matrix (same outputs, the
storage saving is gone).

Example:
    >>> from torch import nn
    >>> from nnshrink.sharing.hashing import HashedLinear
    >>> model = nn.Sequential(HashedLinear(8, 4, buckets=6))
    >>> plain = dense_equivalent(model)
    >>> type(plain[0]).__name__, type(model[0]).__name__
    ('Linear', 'HashedLinear')
"""

from __future__ import annotations

import copy

from torch import nn

from ..core import set_submodule
from .circulant import CirculantLinear
from .hashing import HashedLinear
from .layers import is_shared, strip_sharing

__all__ = ["dense_equivalent"]


def dense_equivalent(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """``model`` with every shared, hashed and circulant layer replaced by a plain layer.

    Args:
        model: any module.
        inplace: edit ``model`` itself instead of a copy.

    Returns:
        The edited copy (or ``model``); the outputs are the same up to float rounding (circulant
        layers compute with an FFT, their dense form with a matmul).
    """
    out = model if inplace else copy.deepcopy(model)
    if isinstance(out, HashedLinear | CirculantLinear):
        return out.to_linear()
    if is_shared(out):
        return strip_sharing(out)
    for name, module in list(out.named_modules()):
        if isinstance(module, HashedLinear | CirculantLinear):
            set_submodule(out, name, module.to_linear())
    strip_sharing(out)
    return out
