"""Model zoo: classic compression benchmarks, written here (torchvision is not required)."""

from . import (  # noqa: F401  (registers the builders)
    bert,
    gpt,
    lenet,
    minilm,
    mobilenet,
    resnet,
    squeezenet,
    vgg,
    vit,
)
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
