"""Model zoo: classic compression benchmarks, written here (torchvision is not required)."""

from . import (  # noqa: F401  (registers the builders)
    gpt,
    lenet,
    minilm,
    mobilenet,
    resnet,
    squeezenet,
    vgg,
)
from .registry import create, input_kind, list_models, register_model, spec_of

__all__ = ["create", "input_kind", "list_models", "register_model", "spec_of"]
