"""Check an architecture against a file's tensors before allocating it.

A reader first builds the model with every tensor on the ``meta`` device (no memory), compares
every state-dict name, shape and dtype with what the file stores, and checks the total size
against what the file can justify. Only then is the model built for real. A crafted header
asking for ``nn.Linear(10**6, 10**6)`` is thus refused before a byte is allocated, and a builder
that loops on a crafted count is stopped by a cap on the number of submodules it may create.

Two adjustments make constructors run on ``meta``: random initialisers are skipped (values do
not matter there), and a tensor made from a Python scalar or a short list (``torch.tensor(7)``)
is made on the CPU, so that constructors that derive a constant from it (``int(mix32(...))``, as
the hashing layers do) still work. PyTorch's fake tensors would too, but their first use imports
``torch._dynamo`` and sympy (seconds, hundreds of modules).

A constructor that needs real data (TTQ's scale initialisation selects weights above a
threshold) cannot run on ``meta``; it is then built for real with every tensor factory call
(``torch.empty``, ``zeros``, ``arange``, ...; where constructors make their tensors) counted
against the budget *before* it allocates, so the bound still holds.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.module import register_module_module_registration_hook
from torch.overrides import TorchFunctionMode

from .arch import ArchitectureError, ConstructorError

Signature = dict[str, tuple[tuple[int, ...], torch.dtype]]
MIN_MODULES = 512  # submodules any checked build may create, plus MODULES_PER_TENSOR per tensor
MODULES_PER_TENSOR = 16


def signature(model: nn.Module) -> Signature:
    """``{state-dict name: (shape, dtype)}`` of a model (works on meta and fake tensors).

    Example:
        >>> signature(nn.Linear(3, 2))["weight"]
        ((2, 3), torch.float32)
    """
    return {
        name: (tuple(int(s) for s in t.shape), t.dtype)
        for name, t in model.state_dict(keep_vars=True).items()
    }


def state_bytes(model: nn.Module) -> int:
    """Bytes of every distinct parameter and buffer, non-persistent buffers included.

    Example:
        >>> state_bytes(nn.Linear(3, 2))
        32
    """
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _compatible(a: torch.dtype, b: torch.dtype) -> bool:
    # A float tensor loads into a float parameter of another width (load_state_dict casts);
    # integer and bool tensors (indices, masks, counters) must match exactly.
    return a == b or (a.is_floating_point and b.is_floating_point)


def compare(model: Signature, stored: Signature, where: str = "model") -> None:
    """Raise unless the stored tensors fit the model: same names, shapes, compatible dtypes.

    Args:
        model: :func:`signature` of the architecture.
        stored: the same for the file's tensors.
        where: prefix for the message.

    Example:
        >>> compare(signature(nn.Linear(3, 2)), signature(nn.Linear(3, 2)))
    """
    missing = sorted(set(model) - set(stored))
    unexpected = sorted(set(stored) - set(model))
    shapes = sorted(k for k in set(model) & set(stored) if model[k][0] != stored[k][0])
    dtypes = sorted(
        k for k in set(model) & set(stored) if not _compatible(model[k][1], stored[k][1])
    )
    if missing or unexpected:
        raise ArchitectureError(
            f"{where}: weights do not match the architecture (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); the file may come from another model or nnshrink version"
        )
    if shapes:
        key = shapes[0]
        raise ArchitectureError(
            f"{where}: {key}: stored shape {stored[key][0]} != model shape {model[key][0]}"
            + (f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else "")
        )
    if dtypes:
        key = dtypes[0]
        raise ArchitectureError(
            f"{where}: {key}: stored dtype {stored[key][1]} does not fit model dtype "
            f"{model[key][1]}"
        )


def match_float_dtype(model: nn.Module, stored: Signature) -> nn.Module:
    """Cast a fresh build to the file's float dtype when the file holds one other float dtype.

    A model saved after ``.half()`` then comes back in half precision, not as float32 copies.
    """
    own = {t.dtype for t in model.state_dict(keep_vars=True).values() if t.is_floating_point()}
    theirs = {dtype for _, dtype in stored.values() if dtype.is_floating_point}
    if len(own) == 1 and len(theirs) == 1 and own != theirs:
        model = model.to(next(iter(theirs)))
    return model


_RANDOM_FILLS = frozenset(
    [getattr(torch.Tensor, name) for name in ("normal_", "uniform_", "bernoulli_", "random_",
     "exponential_", "cauchy_", "log_normal_", "geometric_")]
    + [getattr(nn.init, name) for name in ("normal_", "uniform_", "trunc_normal_",
       "kaiming_normal_", "kaiming_uniform_", "xavier_normal_", "xavier_uniform_",
       "orthogonal_", "sparse_")]
)  # fmt: skip


_SMALL_DATA = 64  # elements of literal data a check build creates on the CPU
_LITERAL_FACTORIES = frozenset([torch.tensor, torch.as_tensor, torch.scalar_tensor])


def _small_literal(data: object) -> bool:
    if isinstance(data, (bool, int, float)):
        return True
    return (
        isinstance(data, (list, tuple))
        and len(data) <= _SMALL_DATA
        and all(isinstance(v, (bool, int, float)) for v in data)
    )


class _CheckMode(TorchFunctionMode):
    """Random initialisers become no-ops (their meta kernels import torch._dynamo on first use,
    and values do not matter here); small literal tensors are made on the CPU (see above)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RANDOM_FILLS:
            return args[0] if args else kwargs.get("tensor")
        if func in _LITERAL_FACTORIES and args and kwargs.get("device") is None:
            if _small_literal(args[0]):
                kwargs["device"] = "cpu"
        return func(*args, **kwargs)


_SIZED = frozenset([torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn])
_FILLED = frozenset([torch.full])
_NEW = frozenset([torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones,
                  torch.Tensor.new_full])  # fmt: skip


def _numel(size: object) -> int:
    dims = list(size) if isinstance(size, (list, tuple, torch.Size)) else [size]
    total = 1
    for d in dims:
        total *= max(int(d), 0)
    return total


def _factory_numel(func, args, kwargs) -> int | None:
    """Elements a tensor factory call will allocate (``None`` for other functions)."""
    if func in _NEW:
        args = args[1:]  # drop self
    if func in _FILLED or func is torch.Tensor.new_full:
        args = args[:1]  # (size, fill_value)
    if func in _SIZED or func in _NEW or func in _FILLED:
        size = args[0] if len(args) == 1 and not isinstance(args[0], int) else args
        return _numel(kwargs.get("size", size))
    if func is torch.randint:
        return _numel(next((a for a in args if isinstance(a, (tuple, list, torch.Size))), ()))
    if func is torch.arange:
        nums = [float(a) for a in args if isinstance(a, (int, float))]
        start, end, step = (
            (0.0, nums[0], 1.0)
            if len(nums) == 1
            else (*nums[:2], nums[2] if len(nums) > 2 else 1.0)
        )
        return max(int((end - start) / step) + 1, 0) if step else 0
    if func in (torch.linspace, torch.logspace):
        return int(args[2] if len(args) > 2 else kwargs.get("steps", 0))
    if func is torch.eye:
        return int(args[0]) * int(
            args[1] if len(args) > 1 and isinstance(args[1], int) else args[0]
        )
    if func is torch.randperm:
        return int(args[0])
    return None


class _FactoryBudget(TorchFunctionMode):
    """Refuse a tensor factory call before it allocates beyond what is left of the budget."""

    def __init__(self, budget: int, where: str) -> None:
        super().__init__()
        self.budget, self.left, self.where = budget, budget, where

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        count = _factory_numel(func, args, kwargs)
        if count is not None:
            self.left -= count * 8  # the widest element: every dtype counts as 8 bytes
            if self.left < 0:
                raise ArchitectureError(
                    f"{self.where}: building the architecture would allocate more than the file "
                    f"justifies ({self.budget:,} bytes); the file is crafted or corrupted"
                )
        return func(*args, **kwargs)


@contextlib.contextmanager
def module_limit(max_modules: int, where: str = "model") -> Iterator[None]:
    """Refuse (ArchitectureError) once this thread registers more than ``max_modules`` submodules."""
    count = 0
    thread = threading.get_ident()

    def hook(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
        nonlocal count
        if threading.get_ident() != thread:
            return
        count += 1
        if count > max_modules:
            raise ArchitectureError(
                f"{where}: the architecture creates more than {max_modules} submodules, more "
                "than the file's tensors justify; the file is crafted or corrupted"
            )

    handle = register_module_module_registration_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def check_build(
    fn: Callable[[], nn.Module], *, max_modules: int, where: str = "model"
) -> nn.Module:
    """Run ``fn()`` with every tensor on the ``meta`` device (see the module docstring).

    Raises:
        ConstructorError: a constructor (or builder) fails there; it may need real data.
        ArchitectureError: a policy refusal (unknown class, malformed description, more than
            ``max_modules`` submodules).

    Example:
        >>> check_build(lambda: nn.Linear(10**6, 10**6), max_modules=10).weight.device.type
        'meta'
    """
    try:
        with module_limit(max_modules, where), torch.device("meta"), _CheckMode():
            model = fn()
    except ArchitectureError:
        raise
    except Exception as exc:
        raise ConstructorError(
            f"{where}: the architecture cannot be checked before allocation "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    if not isinstance(model, nn.Module):
        raise ArchitectureError(f"{where}: the builder returned {type(model).__name__}")
    return model


def budgeted_build(
    fn: Callable[[], nn.Module], *, max_modules: int, budget_bytes: int, where: str = "model"
) -> nn.Module:
    """Run ``fn()`` for real, refusing any tensor factory call beyond ``budget_bytes`` in total.

    For constructors that cannot run on ``meta`` (they compute from real values).

    Example:
        >>> budgeted_build(lambda: nn.Linear(10**6, 10**6), max_modules=10, budget_bytes=1 << 20)
        Traceback (most recent call last):
        ...
        nnshrink.io.arch.ArchitectureError: model: building the architecture would allocate ...
    """
    try:
        with module_limit(max_modules, where), _FactoryBudget(budget_bytes, where):
            model = fn()
    except ArchitectureError:
        raise
    except Exception as exc:
        raise ConstructorError(
            f"{where}: cannot build the architecture ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    if not isinstance(model, nn.Module):
        raise ArchitectureError(f"{where}: the builder returned {type(model).__name__}")
    return model


def checked_build(
    fn: Callable[[], nn.Module],
    stored: Signature,
    *,
    budget_bytes: int,
    where: str = "model",
    trusted: bool = False,
) -> nn.Module:
    """Build ``fn()`` for real only after a meta build matched ``stored`` within ``budget_bytes``.

    Args:
        fn: builds the (edited) architecture with fresh weights.
        stored: :func:`signature` of the tensors the file holds.
        budget_bytes: the most the model's tensors may take (non-persistent buffers included).
        where: prefix for messages.
        trusted: ``fn`` runs code the user named; if it cannot be checked (meta device, then
            the budgeted real build) it is built for real directly, and still compared before
            any weight is loaded.

    Example:
        >>> checked_build(lambda: nn.Linear(3, 2), signature(nn.Linear(3, 2)), budget_bytes=64)
        Linear(in_features=3, out_features=2, bias=True)
    """
    max_modules = MIN_MODULES + MODULES_PER_TENSOR * len(stored)
    model: nn.Module | None = None
    try:
        probe = check_build(fn, max_modules=max_modules, where=where)
    except ConstructorError:
        # needs real data: build for real, every tensor factory call within the budget
        try:
            model = budgeted_build(
                fn, max_modules=max_modules, budget_bytes=budget_bytes, where=where
            )
        except ArchitectureError:
            if not trusted:
                raise
        probe = None
    if probe is not None:
        probe = match_float_dtype(probe, stored)
        compare(signature(probe), stored, where)
        need = state_bytes(probe)
        if need > budget_bytes:
            raise ArchitectureError(
                f"{where}: the architecture needs {need:,} bytes of tensors, more than the file "
                f"justifies ({budget_bytes:,}); the file is crafted or corrupted"
            )
    if model is None:
        try:
            model = fn()
        except ArchitectureError:
            raise
        except Exception as exc:
            if not trusted:
                raise ArchitectureError(
                    f"{where}: {type(exc).__name__}: {str(exc)[:200]}"
                ) from None
            raise
    model = match_float_dtype(model, stored)
    compare(signature(model), stored, where)
    return model


MAX_EXPANSION = 1024  # tensor bytes a reader allocates per file byte, at most (see budget_for)
MIN_BUDGET = 16 << 20  # ... or this many bytes, for small files


def budget_for(file_bytes: int, max_expansion: float = MAX_EXPANSION) -> int:
    """The most tensor memory a reader allocates for a file: ``max(expansion x size, 16 MiB)``.

    Dense tensors take their own size in a file; compressed ones (sparse, codebooks, Huffman,
    hashing's virtual weights) expand, the real ones by well under 1024x (Deep Compression's
    best is ~50x; HashedNets' index buffers ~200x at 1/64). A header claiming more is crafted.

    Args:
        file_bytes: the file's size.
        max_expansion: the factor (raise it for an unusual but trusted file).

    Example:
        >>> budget_for(1 << 20) == 1024 << 20
        True
    """
    if not max_expansion > 0:
        raise ValueError(f"max_expansion must be > 0, got {max_expansion!r}")
    return int(max(file_bytes * max_expansion, MIN_BUDGET))
