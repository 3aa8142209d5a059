"""Knowledge distillation: pure losses, feature hooks, a Distiller and a one-call trainer."""

from .distiller import METHODS, TRANSFORMER_METHODS, Distiller, auto_feature_pairs, feature_shapes
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
from .transformer import TransformerLayout, TransformerTerms, find_layout, resolve_layer_map
from .transformer_losses import (
    attention_relation,
    attention_score_mse,
    attention_scores,
    hidden_state_loss,
    last_layer_map,
    output_loss,
    relation_kl_loss,
    uniform_layer_map,
)

__all__ = [
    "METHODS",
    "TRANSFORMER_METHODS",
    "TransformerLayout",
    "TransformerTerms",
    "attention_relation",
    "attention_score_mse",
    "attention_scores",
    "find_layout",
    "hidden_state_loss",
    "last_layer_map",
    "output_loss",
    "relation_kl_loss",
    "resolve_layer_map",
    "uniform_layer_map",
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
