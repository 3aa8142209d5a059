"""Recipe schema: YAML → validated dataclasses, with every error found before any work starts.

A recipe names a model, a data set and an ordered list of stages::

    name: lenet300-deep-compression
    model: {name: lenet300}            # or {checkpoint: path.safetensors}
    data: {name: mnist, batch_size: 64}
    seed: 0
    stages:
      - train: {epochs: 2, lr: 0.002, optimizer: adam}
      - prune: {type: magnitude-pruning, sparsity: 0.9}
      - finetune: {epochs: 1}
      - share: {type: weight-sharing, bits: 5}
      - encode: {}
      - export: {format: onnx}

``data`` may also hold ``limit`` (evaluation samples), ``train_limit`` (training samples),
``eval_split: test | val`` (default ``test``) and ``val_size`` (default 5000): with
``eval_split: val`` every top-1 is measured on the last ``val_size`` training samples and the
training / calibration data are the training samples before them (no overlap).

Technique stages (``prune``, ``quantize``, ``share``, ``decompose``, ``compact``) hold a technique
config: ``type`` is its registered kind and the other keys its fields, checked by
:meth:`nnshrink.core.Config.from_dict`. The other stages have their own small schemas below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from ..core.config import Config, ConfigError

TECHNIQUE_STAGES = ("prune", "quantize", "share", "decompose", "compact")
PRESET_DIR = Path(__file__).parent / "presets"


class RecipeError(ConfigError):
    """A recipe is invalid; the message names the stage, the field and what is allowed."""


@dataclasses.dataclass(frozen=True)
class TrainStage(Config):
    """``train`` / ``finetune``: run :func:`nnshrink.train.fit`.

    ``keep_zeros`` (default on for ``finetune``) keeps weights that are exactly zero at zero, so
    fine-tuning after unstructured pruning does not revive them. ``bn_l1`` adds network slimming's
    L1 penalty on BN scales (before ``structured-pruning`` with ``criterion: bn_scale``);
    ``input_group_lasso`` a group-lasso penalty on the input layer's columns (before
    ``input-pruning``).
    """

    kind: ClassVar[str] = "recipe-train"
    epochs: int = 1
    lr: float = 2e-3
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    weight_decay: float = 0.0
    momentum: float = 0.9
    keep_zeros: bool | None = None
    bn_l1: float = 0.0
    input_group_lasso: float = 0.0

    def validate(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}")
        if self.bn_l1 < 0 or self.input_group_lasso < 0:
            raise ConfigError("bn_l1 and input_group_lasso must be >= 0")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


@dataclasses.dataclass(frozen=True)
class DistillStage(Config):
    """``distill``: train the current model as a student of a teacher.

    ``teacher`` is ``"baseline"`` (the model before the first compression stage), or a
    checkpoint path.
    """

    kind: ClassVar[str] = "recipe-distill"
    teacher: str = "baseline"
    method: Literal["kd", "fitnets", "at", "sp", "rkd"] = "kd"
    epochs: int = 1
    lr: float = 2e-3
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    temperature: float = 4.0
    alpha: float = 0.9

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")


@dataclasses.dataclass(frozen=True)
class EncodeStage(Config):
    """``encode``: write the model as a compressed ``.nns`` file (sparse + codebook + Huffman)."""

    kind: ClassVar[str] = "recipe-encode"
    huffman: bool = True
    conv_index_bits: int = 4
    fc_index_bits: int = 5


@dataclasses.dataclass(frozen=True)
class ExportStage(Config):
    """``export``: write ``model.onnx`` and check it against PyTorch in ONNX Runtime."""

    kind: ClassVar[str] = "recipe-export"
    format: Literal["onnx"] = "onnx"


@dataclasses.dataclass(frozen=True)
class EvaluateStage(Config):
    """``evaluate``: measure the current model (every stage is measured anyway)."""

    kind: ClassVar[str] = "recipe-evaluate"


STAGE_SCHEMAS: dict[str, type[Config]] = {
    "train": TrainStage,
    "finetune": TrainStage,
    "distill": DistillStage,
    "encode": EncodeStage,
    "export": ExportStage,
    "evaluate": EvaluateStage,
}
ALL_STAGES = tuple(sorted((*STAGE_SCHEMAS, *TECHNIQUE_STAGES)))


@dataclasses.dataclass(frozen=True)
class Stage:
    """One validated stage: its name (``prune``, ``train``, ...) and its config."""

    name: str
    config: Config


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated recipe."""

    name: str
    model: dict[str, Any]
    data: dict[str, Any]
    stages: tuple[Stage, ...]
    seed: int = 0
    measure: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: dict[str, Any] = dataclasses.field(default_factory=dict)

    def fingerprint(self) -> str:
        """Hash of the recipe content: a resumed run must use the same recipe."""
        return hashlib.sha256(json.dumps(self.source, sort_keys=True).encode()).hexdigest()[:16]


_TOP_KEYS = {"name", "model", "data", "stages", "seed", "measure"}
_MODEL_KEYS = {"name", "checkpoint", "kwargs"}
_DATA_KEYS = {"name", "root", "batch_size", "limit", "train_limit", "eval_split", "val_size"}
EVAL_SPLITS = ("test", "val")
_MEASURE_KEYS = {"latency", "runs", "threads", "batch_size"}


def _check_keys(where: str, given: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _register_techniques() -> None:
    """Import every technique package so that their config kinds are known."""
    import importlib

    for name in (
        "pruning",
        "quantization",
        "sharing",
        "binary",
        "lowrank",
        "compact",
        "distill",
        "pipelines",
    ):
        importlib.import_module(f"nnshrink.{name}")


def parse_recipe(source: dict[str, Any], base_dir: str | os.PathLike | None = None) -> Recipe:
    """Validate a recipe dict (as loaded from YAML) and return a :class:`Recipe`.

    Args:
        source: the recipe mapping.
        base_dir: directory that relative checkpoint paths are resolved against.

    Raises:
        RecipeError: naming the stage index and name, the field and what is allowed.
    """
    from ..data import names as data_names
    from ..models import list_models

    _register_techniques()
    if not isinstance(source, dict):
        raise RecipeError("a recipe must be a mapping with model, data and stages")
    _check_keys("recipe", source, _TOP_KEYS)
    for key in ("model", "data", "stages"):
        if key not in source:
            raise RecipeError(f"recipe: missing required key {key!r}")
    model = source["model"]
    if not isinstance(model, dict):
        raise RecipeError("model: expected a mapping like {name: lenet300} or {checkpoint: PATH}")
    _check_keys("model", model, _MODEL_KEYS)
    if ("name" in model) == ("checkpoint" in model):
        raise RecipeError("model: give exactly one of 'name' or 'checkpoint'")
    model = dict(model)
    if "name" in model and model["name"] not in list_models():
        raise RecipeError(
            f"model.name: unknown model {model['name']!r}; choose from {list_models()}"
        )
    if "checkpoint" in model:
        path = Path(model["checkpoint"])
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise RecipeError(f"model.checkpoint: file {str(path)!r} does not exist")
        model["checkpoint"] = str(path)
    data = source["data"]
    if isinstance(data, str):
        data = {"name": data}
    if not isinstance(data, dict):
        raise RecipeError("data: expected a data set name or a mapping with 'name'")
    _check_keys("data", data, _DATA_KEYS)
    if data.get("name") not in data_names():
        raise RecipeError(f"data.name: {data.get('name')!r} is not one of {data_names()}")
    if data.get("eval_split", "test") not in EVAL_SPLITS:
        raise RecipeError(
            f"data.eval_split: expected one of {list(EVAL_SPLITS)} ('val': measure top-1 on the "
            f"last val_size training samples and train on the rest), got {data['eval_split']!r}"
        )
    if "val_size" in data and data.get("eval_split", "test") != "val":
        raise RecipeError("data.val_size: only used with eval_split: val (add it or drop val_size)")
    for key in ("batch_size", "limit", "train_limit", "val_size"):
        value = data.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise RecipeError(f"data.{key}: expected a positive integer, got {value!r}")
    measure = source.get("measure") or {}
    if not isinstance(measure, dict):
        raise RecipeError("measure: expected a mapping")
    _check_keys("measure", measure, _MEASURE_KEYS)
    seed = source.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise RecipeError(f"seed: expected an integer, got {seed!r}")
    raw_stages = source["stages"]
    if not isinstance(raw_stages, list) or not raw_stages:
        raise RecipeError("stages: expected a non-empty list")
    stages = tuple(_parse_stage(i, raw) for i, raw in enumerate(raw_stages))
    name = source.get("name") or (model.get("name") or Path(model["checkpoint"]).stem)
    return Recipe(
        name=str(name),
        model=model,
        data=dict(data),
        stages=stages,
        seed=seed,
        measure=dict(measure),
        source=source,
    )


def _parse_stage(index: int, raw: Any) -> Stage:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise RecipeError(
            f"stages[{index}]: each stage is a one-key mapping like '- prune: {{...}}'; "
            f"stages: {list(ALL_STAGES)}"
        )
    ((name, body),) = raw.items()
    where = f"stages[{index}] ({name})"
    if name not in ALL_STAGES:
        raise RecipeError(f"stages[{index}]: unknown stage {name!r}; allowed: {list(ALL_STAGES)}")
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise RecipeError(f"{where}: expected a mapping of parameters, got {body!r}")
    try:
        if name in TECHNIQUE_STAGES:
            if "type" not in body:
                raise RecipeError(
                    f"{where}: missing 'type' (the technique config kind, e.g. "
                    f"{_technique_kinds()[:6]})"
                )
            config = Config.from_dict(body)
            if config.kind.startswith("recipe-"):
                raise RecipeError(f"{where}: {config.kind!r} is not a technique config")
        else:
            schema = STAGE_SCHEMAS[name]
            if "type" in body:
                raise RecipeError(f"{where}: 'type' is only for technique stages")
            config = schema.from_dict({"type": schema.kind, **body})
    except RecipeError:
        raise
    except ConfigError as exc:
        raise RecipeError(f"{where}: {exc}") from None
    return Stage(name=name, config=config)


def _technique_kinds() -> list[str]:
    from ..core.config import config_types

    return sorted(k for k in config_types() if not k.startswith(("recipe-", "test-")))


def preset_names() -> list[str]:
    """Names of the recipes shipped with nnshrink (``nnshrink run NAME``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_recipe(path_or_preset: str | os.PathLike) -> Recipe:
    """Load and validate a recipe from a YAML file or a shipped preset name.

    Example:
        >>> load_recipe("deep-compression-lenet300").name  # doctest: +SKIP
        'deep-compression-lenet300'
    """
    path = Path(path_or_preset)
    if not path.is_file():
        preset = PRESET_DIR / f"{path_or_preset}.yaml"
        if not preset.is_file():
            raise RecipeError(
                f"{str(path_or_preset)!r} is neither a recipe file nor a preset; presets: "
                f"{preset_names()}"
            )
        path = preset
    try:
        source = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    return parse_recipe(source, base_dir=path.parent)
