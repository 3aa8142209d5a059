"""YAML recipes: validated stage lists run with checkpoints, resume, reports and plots."""

from .artifacts import load_model_file, write_model
from .render import render_markdown
from .runner import RunResult, run_recipe
from .schema import (
    ALL_STAGES,
    TECHNIQUE_STAGES,
    DistillStage,
    EncodeStage,
    EvaluateStage,
    ExportStage,
    Recipe,
    RecipeError,
    Stage,
    TrainStage,
    load_recipe,
    parse_recipe,
    preset_names,
)

__all__ = [
    "ALL_STAGES",
    "TECHNIQUE_STAGES",
    "DistillStage",
    "EncodeStage",
    "EvaluateStage",
    "ExportStage",
    "Recipe",
    "RecipeError",
    "RunResult",
    "Stage",
    "TrainStage",
    "load_model_file",
    "load_recipe",
    "parse_recipe",
    "preset_names",
    "render_markdown",
    "run_recipe",
    "write_model",
]
