"""Model zoo: classic compression benchmarks, written here (torchvision is not required)."""

from . import lenet, mobilenet, resnet, squeezenet, vgg  # noqa: F401  (registers the builders)
from .registry import create, list_models, register_model, spec_of

__all__ = ["create", "list_models", "register_model", "spec_of"]
