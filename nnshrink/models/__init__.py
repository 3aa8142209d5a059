"""Model zoo: classic compression benchmarks, written here (torchvision is not required)."""

from . import bert, lenet, mobilenet, resnet, squeezenet, vgg, vit  # noqa: F401  (registers)
from .registry import create, input_kind, list_models, register_model, spec_of

__all__ = ["create", "input_kind", "list_models", "register_model", "spec_of"]
