"""Data sets from local files (never downloaded), held in memory as tensors."""

from .datasets import (
    VAL_SIZE,
    Dataset,
    TensorLoader,
    augment,
    input_shape,
    load,
    loader,
    names,
    normalization,
)
from .readers import DataNotFoundError, read_cifar10, read_fashion_mnist, read_idx, read_mnist

__all__ = [
    "VAL_SIZE",
    "DataNotFoundError",
    "Dataset",
    "TensorLoader",
    "augment",
    "input_shape",
    "load",
    "loader",
    "names",
    "normalization",
    "read_cifar10",
    "read_fashion_mnist",
    "read_idx",
    "read_mnist",
]
