"""Model zoo: classic compression benchmarks, written here (torchvision is not required)."""

from . import lenet, mobilenet, resnet, squeezenet, vgg  # noqa: F401  (registers the builders)
from .factory import ModelReferenceError, from_reference, parse_reference
from .registry import create, list_models, register_model, spec_of

__all__ = [
    "ModelReferenceError",
    "create",
    "from_reference",
    "list_models",
    "parse_reference",
    "register_model",
    "spec_of",
]
