"""Model zoo: classic compression benchmarks, written here (torchvision is not required)."""

from . import bert, lenet, mobilenet, resnet, squeezenet, vgg, vit  # noqa: F401  (registers)
from .factory import ModelReferenceError, from_reference, parse_reference
from .registry import create, input_kind, list_models, register_model, spec_of

__all__ = [
    "ModelReferenceError",
    "create",
    "from_reference",
    "input_kind",
    "list_models",
    "parse_reference",
    "register_model",
    "spec_of",
]
