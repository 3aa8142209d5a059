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
from ..utils.references import is_reference

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
    checkpoint path. ``method`` is one of :data:`nnshrink.distill.METHODS`; ``features`` pairs
    student and teacher layers (``{student: teacher}``; found automatically when empty),
    ``hint_epochs`` is FitNets' hint stage, ``beta``/``gamma`` weigh attention transfer and
    similarity preservation.
    """

    kind: ClassVar[str] = "recipe-distill"
    teacher: str = "baseline"
    method: str = "kd"
    epochs: int = 1
    lr: float = 2e-3
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    temperature: float = 4.0
    alpha: float | None = None
    beta: float = 1000.0
    gamma: float = 3000.0
    weight_decay: float = 0.0
    features: dict[str, str] = dataclasses.field(default_factory=dict)
    hint_epochs: int | None = None

    def validate(self) -> None:
        from ..distill import METHODS

        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.method not in METHODS:
            raise ConfigError(
                f"recipe-distill.method: {self.method!r} is not one of {list(METHODS)}"
            )


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
class FinalizeStage(Config):
    """``finalize``: make training-time forms final (:func:`nnshrink.finalize`): masks baked in,
    shared / binary / QAT layers made plain, e.g. before ``ptq`` of a QAT-trained model."""

    kind: ClassVar[str] = "recipe-finalize"


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
    "finalize": FinalizeStage,
}
ALL_STAGES = tuple(sorted((*STAGE_SCHEMAS, *TECHNIQUE_STAGES)))


@dataclasses.dataclass(frozen=True)
class Stage:
    """One validated stage: its name (``prune``, ``train``, ...) and its config."""

    name: str
    config: Config


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated recipe.

    ``model`` has one of ``name`` (zoo), ``checkpoint`` (a ``.safetensors`` or ``.nns`` file),
    ``factory`` (``"package.module:callable"``, with ``kwargs``) or ``hf`` (a local Hugging Face
    model folder), and optionally ``trust_code`` (let a checkpoint import the factory it names).
    ``data`` has one of ``name``, ``factory``, ``file`` or ``image_dir`` (see
    :mod:`nnshrink.data.source`). ``metric`` / ``loss`` name the user's metric and training loss;
    ``device`` is ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; ``amp`` is
    ``bf16`` or ``fp16`` mixed precision for training stages.
    """

    name: str
    model: dict[str, Any] | None
    data: dict[str, Any] | None
    stages: tuple[Stage, ...]
    seed: int = 0
    measure: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    metric: str | None = None
    loss: str | None = None
    device: str = "auto"
    amp: str | None = None

    def fingerprint(self) -> str:
        """Hash of the recipe content: a resumed run must use the same recipe."""
        return hashlib.sha256(json.dumps(self.source, sort_keys=True).encode()).hexdigest()[:16]


_TOP_KEYS = {
    "name",
    "model",
    "data",
    "stages",
    "seed",
    "measure",
    "metric",
    "loss",
    "device",
    "amp",
}
MODEL_SOURCES = ("name", "checkpoint", "factory", "hf")
_MODEL_KEYS = {*MODEL_SOURCES, "kwargs", "trust_code"}
_DATA_KEYS = {"name", "factory", "file", "image_dir", "kwargs", "root", "batch_size", "limit",
              "train_limit", "eval_split", "val_size", "image_size"}  # fmt: skip
EVAL_SPLITS = ("test", "val")
_MEASURE_KEYS = {"latency", "runs", "threads", "batch_size"}
AMP_MODES = ("bf16", "fp16")


def _check_keys(where: str, given: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _register_techniques() -> None:
    """Import every technique package so that their config kinds are known."""
    import importlib

    for name in ("pruning", "quantization", "sharing", "binary", "lowrank", "compact", "distill",
                 "pipelines"):  # fmt: skip
        importlib.import_module(f"nnshrink.{name}")


class _Errors:
    """Collects every problem of a recipe so that one message lists them all (as pydantic does)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def check(self, fn, *args):
        try:
            return fn(*args)
        except RecipeError as exc:
            self.messages.append(str(exc))
        except ConfigError as exc:
            self.messages.append(str(exc))
        return None

    def raise_if_any(self) -> None:
        if len(self.messages) == 1:
            raise RecipeError(self.messages[0])
        if self.messages:
            listed = "\n".join(f"  - {m}" for m in self.messages)
            raise RecipeError(f"{len(self.messages)} problems in the recipe:\n{listed}")


def parse_recipe(source: dict[str, Any], base_dir: str | os.PathLike | None = None) -> Recipe:
    """Validate a recipe dict (as loaded from YAML) and return a :class:`Recipe`.

    Args:
        source: the recipe mapping.
        base_dir: directory that relative checkpoint / data paths are resolved against.

    Raises:
        RecipeError: listing every problem, each naming the stage index and name, the field and
            what is allowed.
    """
    _register_techniques()
    if not isinstance(source, dict):
        raise RecipeError("a recipe must be a mapping with model, data and stages")
    errors = _Errors()
    errors.check(_check_keys, "recipe", source, _TOP_KEYS)
    # model and data may be left out when a Python caller passes them to run_recipe
    if "stages" not in source:
        errors.messages.append("recipe: missing required key 'stages'")
    model = errors.check(_parse_model, source.get("model"), base_dir) if "model" in source else None
    data = errors.check(_parse_data, source.get("data"), base_dir) if "data" in source else None
    measure = source.get("measure") or {}
    if not isinstance(measure, dict):
        errors.messages.append("measure: expected a mapping")
        measure = {}
    errors.check(_check_keys, "measure", measure, _MEASURE_KEYS)
    seed = source.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        errors.messages.append(f"seed: expected an integer, got {seed!r}")
    for key in ("metric", "loss"):
        value = source.get(key)
        if value is not None and not is_reference(value):
            errors.messages.append(f"{key}: expected 'package.module:callable', got {value!r}")
    device = source.get("device", "auto")
    errors.check(_check_device, device)
    amp = source.get("amp")
    if amp is not None and amp not in AMP_MODES:
        errors.messages.append(f"amp: expected one of {list(AMP_MODES)}, got {amp!r}")
    stages: list[Stage] = []
    raw_stages = source.get("stages")
    if "stages" in source and (not isinstance(raw_stages, list) or not raw_stages):
        errors.messages.append("stages: expected a non-empty list")
    elif isinstance(raw_stages, list):
        for i, raw in enumerate(raw_stages):
            stage = errors.check(_parse_stage, i, raw)
            if stage is not None:
                stages.append(stage)
    errors.raise_if_any()
    name = source.get("name") or (_default_name(model) if model else "run")
    return Recipe(
        name=str(name), model=model, data=data, stages=tuple(stages), seed=seed,
        measure=dict(measure), source=source, metric=source.get("metric"),
        loss=source.get("loss"), device=str(device), amp=amp,
    )  # fmt: skip


def _default_name(model: dict[str, Any]) -> str:
    if "name" in model:
        return model["name"]
    if "checkpoint" in model:
        return Path(model["checkpoint"]).stem
    if "hf" in model:
        return Path(model["hf"]).name
    return model["factory"].rpartition(":")[2]


def _check_device(device: Any) -> None:
    from ..utils.device import DEVICE_HELP, parse_device

    try:
        parse_device(device)
    except ValueError:
        raise RecipeError(f"device: {DEVICE_HELP}, got {device!r}") from None


def _parse_model(model: Any, base_dir) -> dict[str, Any]:
    from ..models import list_models

    if not isinstance(model, dict):
        raise RecipeError(
            "model: expected a mapping like {name: resnet20}, {checkpoint: PATH}, "
            "{factory: 'package.module:callable', kwargs: {...}} or {hf: DIR}"
        )
    _check_keys("model", model, _MODEL_KEYS)
    given = [k for k in MODEL_SOURCES if k in model]
    if len(given) != 1:
        raise RecipeError(
            f"model: give exactly one of {list(MODEL_SOURCES)}, got {given or 'none'}"
        )
    model = dict(model)
    if "name" in model and model["name"] not in list_models():
        raise RecipeError(
            f"model.name: unknown model {model['name']!r}; choose from {list_models()} (or name "
            "your own with factory: 'package.module:callable')"
        )
    if "factory" in model and not is_reference(model["factory"]):
        raise RecipeError(
            f"model.factory: expected 'package.module:callable', got {model['factory']!r}"
        )
    if "kwargs" in model and not isinstance(model["kwargs"], dict):
        raise RecipeError("model.kwargs: expected a mapping of keyword arguments")
    if "trust_code" in model and not isinstance(model["trust_code"], bool):
        raise RecipeError("model.trust_code: expected true/false")
    for key in ("checkpoint", "hf"):
        if key in model:
            path = _resolve(model[key], base_dir)
            exists = path.is_file() if key == "checkpoint" else path.is_dir()
            if not exists:
                what = "file" if key == "checkpoint" else "folder"
                raise RecipeError(f"model.{key}: {what} {str(path)!r} does not exist")
            model[key] = str(path)
    return model


def _resolve(value: Any, base_dir) -> Path:
    path = Path(str(value))
    if not path.is_absolute() and base_dir is not None and not path.exists():
        path = Path(base_dir) / path
    return path


def _parse_data(data: Any, base_dir) -> dict[str, Any]:
    from ..data import names as data_names
    from ..data.source import SOURCE_KEYS

    if isinstance(data, str):
        data = {"factory": data} if is_reference(data) else {"name": data}
    if not isinstance(data, dict):
        raise RecipeError("data: expected a data set name or a mapping with one of "
                          f"{list(SOURCE_KEYS)}")  # fmt: skip
    _check_keys("data", data, _DATA_KEYS)
    given = [k for k in SOURCE_KEYS if k in data]
    if len(given) != 1:
        raise RecipeError(f"data: give exactly one of {list(SOURCE_KEYS)}, got {given or 'none'}")
    data = dict(data)
    if "name" in data and data["name"] not in data_names():
        raise RecipeError(
            f"data.name: {data.get('name')!r} is not one of {data_names()} (or give factory: "
            "'package.module:callable', file: PATH.pt|.npz or image_dir: DIR)"
        )
    if "factory" in data and not is_reference(data["factory"]):
        raise RecipeError(
            f"data.factory: expected 'package.module:callable', got {data['factory']!r}"
        )
    for key in ("file", "image_dir"):
        if key in data:
            path = _resolve(data[key], base_dir)
            if not (path.is_file() if key == "file" else path.is_dir()):
                raise RecipeError(f"data.{key}: {str(path)!r} does not exist")
            data[key] = str(path)
    if data.get("eval_split", "test") not in EVAL_SPLITS:
        raise RecipeError(
            f"data.eval_split: expected one of {list(EVAL_SPLITS)} ('val': measure top-1 on the "
            f"last val_size training samples and train on the rest), got {data['eval_split']!r}"
        )
    if "val_size" in data and data.get("eval_split", "test") != "val":
        raise RecipeError("data.val_size: only used with eval_split: val (add it or drop val_size)")
    for key in ("batch_size", "limit", "train_limit", "val_size", "image_size"):
        value = data.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise RecipeError(f"data.{key}: expected a positive integer, got {value!r}")
    return data


def _parse_stage(index: int, raw: Any) -> Stage:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise RecipeError(
            f"stages[{index}]: each stage is a one-key mapping like '- prune: {{...}}'; "
            f"stages: {list(ALL_STAGES)} or a technique kind {_technique_kinds()[:6]}..."
        )
    ((name, body),) = raw.items()
    where = f"stages[{index}] ({name})"
    kinds = _technique_kinds()
    if name not in ALL_STAGES and name not in kinds:
        raise RecipeError(
            f"stages[{index}]: unknown stage {name!r}; allowed: {list(ALL_STAGES)} or a technique "
            f"kind {kinds}"
        )
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise RecipeError(f"{where}: expected a mapping of parameters, got {body!r}")
    try:
        if name in kinds:  # the technique's own name as the stage: - structured-pruning: {...}
            if "type" in body and body["type"] != name:
                raise RecipeError(f"{where}: 'type' is the stage name already; drop it")
            config = Config.from_dict({**body, "type": name})
        elif name in TECHNIQUE_STAGES:
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


def is_technique_stage(stage: Stage) -> bool:
    """Whether a stage applies a technique through ``compress_`` (not train/distill/encode/...)."""
    return stage.name not in STAGE_SCHEMAS


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
