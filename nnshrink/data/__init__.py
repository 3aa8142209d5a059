"""Data: built-in sets from local files (never downloaded), and the user's own data (factories,
tensor files, image folders) as one :class:`DataBundle`."""

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
from .source import Limited, open_data
from .user import (
    DataBundle,
    DataError,
    first_batch,
    from_factory,
    from_image_folder,
    from_tensor_file,
    holdout_split,
)

__all__ = [
    "DataBundle",
    "DataError",
    "Limited",
    "first_batch",
    "from_factory",
    "from_image_folder",
    "from_tensor_file",
    "holdout_split",
    "open_data",
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
