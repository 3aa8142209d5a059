"""Knowledge distillation: pure losses, feature hooks, a Distiller and a one-call trainer."""

from .distiller import METHODS, Distiller, auto_feature_pairs, feature_shapes
from .hooks import FeatureCapture
from .losses import (
    at_loss,
    attention_map,
    hint_loss,
    kd_loss,
    rkd_distance_loss,
    similarity_matrix,
    sp_loss,
)
from .trainer import DistillResult, distill

__all__ = [
    "METHODS",
    "DistillResult",
    "Distiller",
    "FeatureCapture",
    "at_loss",
    "attention_map",
    "auto_feature_pairs",
    "distill",
    "feature_shapes",
    "hint_loss",
    "kd_loss",
    "rkd_distance_loss",
    "similarity_matrix",
    "sp_loss",
]
