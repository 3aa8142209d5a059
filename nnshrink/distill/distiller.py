"""Distiller: a frozen teacher, a trainable student and the loss that ties them.

The distiller is an ``nn.Module`` holding the student and any FitNets regressors as submodules;
the teacher is kept outside the module tree, so ``distiller.parameters()`` is exactly what should
be optimized and ``distiller.state_dict()`` never carries the teacher. The teacher always runs in
eval mode under ``torch.no_grad()``, so its parameters never receive gradients.

Use it with :func:`nnshrink.train.fit` (``fit(distiller, loader, criterion=distiller.criterion)``)
or in your own loop (``loss = distiller.loss(x, y)``).

Transformer methods (``"tinybert"``, ``"minilm"``) pair blocks through a layer map and add
hidden-state, attention and value-relation terms (:mod:`nnshrink.distill.transformer`); their
batches may be tensors, tuples or keyword dicts (``{"input_ids", "attention_mask"}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core import as_input_tuple, eval_mode, forward_with_hooks, model_device
from .hooks import FeatureCapture
from .inputs import call_model, find_attention_mask, output_tensor
from .losses import at_loss, hint_loss, kd_loss, rkd_distance_loss, sp_loss
from .transformer import TransformerTerms
from .transformer_losses import OUTPUT_LOSSES, output_loss

#: every distillation method, in one list (the CLI and recipes take their choices from it)
METHODS = ("kd", "fitnets", "at", "sp", "rkd", "tinybert", "minilm")
TRANSFORMER_METHODS = ("tinybert", "minilm")
STAGES = ("joint", "hint", "kd")
# weight of Hinton's soft-target term when not given: KD-based methods lean on the teacher's
# soft targets, feature methods are used with plain cross-entropy in their papers; TinyBERT's
# prediction layer uses soft targets only, MiniLM distills attention alone
_DEFAULT_ALPHA = {
    "kd": 0.9, "fitnets": 0.9, "at": 0.0, "sp": 0.0, "rkd": 0.0, "tinybert": 1.0, "minilm": 0.0
}  # fmt: skip
# TinyBERT: every student block learns a teacher block (uniform map), hidden states + attention
# scores (MSE); MiniLM: the last block only, attention distributions + value relations (KL)
_TRANSFORMER_DEFAULTS = {
    "tinybert": {"layer_map": "uniform", "hidden_weight": 1.0, "attention_loss": "mse"},
    "minilm": {"layer_map": "last", "hidden_weight": 0.0, "attention_loss": "kl"},
}


@torch.no_grad()
def feature_shapes(model: nn.Module, names: list[str], example_inputs: Any) -> dict[str, tuple]:
    """Output shape of each named submodule on ``example_inputs`` (one eval-mode pass)."""
    with eval_mode(model), FeatureCapture(model, names) as cap:
        model(*as_input_tuple(example_inputs))
    return {n: tuple(cap[n].shape) for n in names}


@torch.no_grad()
def _last_module_per_resolution(model: nn.Module, example_inputs: Any) -> dict[tuple, str]:
    """``{(H, W): name}`` of the last module to finish with a 4-D output at each resolution."""
    found: dict[tuple, str] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod, args, out, name=name):
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2:].numel() > 1:
                found.pop(tuple(out.shape[-2:]), None)  # re-insert: keep execution order
                found[tuple(out.shape[-2:])] = name

        handles.append(module.register_forward_hook(hook))
    forward_with_hooks(model, example_inputs, handles)
    return found


def auto_feature_pairs(
    teacher: nn.Module, student: nn.Module, example_inputs: Any
) -> dict[str, str]:
    """Pair the last student and teacher modules at each spatial resolution both models reach.

    For CIFAR ResNets this gives the stage outputs (``layer1``/``2``/``3``), as in attention
    transfer; for VGG-style nets, the last activation before each pooling.

    Returns:
        ``{student_name: teacher_name}``, highest resolution first.

    Example:
        >>> from nnshrink.models import create  # doctest: +SKIP
        >>> auto_feature_pairs(create("resnet56"), create("resnet20"), x)  # doctest: +SKIP
        {'layer1': 'layer1', 'layer2': 'layer2', 'layer3': 'layer3'}
    """
    s_map = _last_module_per_resolution(student, example_inputs)
    t_map = _last_module_per_resolution(teacher, example_inputs)
    return {s_map[r]: t_map[r] for r in s_map if r in t_map}


def _regressor(s_shape: tuple, t_shape: tuple, name: str) -> nn.Module:
    if len(s_shape) == 4 and len(t_shape) == 4:
        if s_shape[-2:] != t_shape[-2:]:
            raise ValueError(
                f"FitNets pair {name!r}: student map {s_shape[-2:]} and teacher map "
                f"{t_shape[-2:]} differ in size; pair layers at the same resolution"
            )
        return nn.Conv2d(s_shape[1], t_shape[1], 1, bias=False)
    if len(s_shape) == 2 and len(t_shape) == 2:
        return nn.Linear(s_shape[1], t_shape[1], bias=False)
    raise ValueError(
        f"FitNets pair {name!r}: unsupported feature shapes student {s_shape}, teacher {t_shape} "
        f"(both (N, C, H, W) or both (N, D))"
    )


class Distiller(nn.Module):
    """Train ``student`` to mimic a frozen ``teacher``.

    Loss (``stage="joint"``, the default)::

        (1 - alpha) * CE(student, y) + alpha * KD_T(student, teacher) + feature terms

    with feature terms per method: ``"fitnets"`` hint_weight * MSE(regressor(s), t);
    ``"at"`` attention transfer (beta); ``"sp"`` similarity preserving (gamma); ``"rkd"`` RKD
    distance (rkd_weight); ``"kd"`` none. ``stage="hint"`` uses the feature terms alone (FitNets
    stage 1, TinyBERT's intermediate-layer stage); ``stage="kd"`` drops them (FitNets stage 2,
    TinyBERT's prediction-layer stage).

    Transformer methods, for models with a stack of blocks with separate query/key Linear
    layers (:func:`~nnshrink.distill.transformer.find_layout`; the student may have fewer
    blocks, fewer heads or narrower layers than the teacher, e.g. after pruning)::

        (1 - alpha) * CE + alpha * output_loss + sum over paired blocks of
        hidden_weight * MSE(W_h h_s, h_t) + attention_weight * attention term
        (+ attention_weight * value-relation KL for "minilm")

    ``"tinybert"`` (Jiao et al. 2020): every student block paired by ``layer_map="uniform"``,
    hidden states and attention scores (``attention_loss="mse"``), soft targets (alpha 1).
    ``"minilm"`` (Wang et al. 2020): the last blocks only, attention distributions and value
    relations by KL, no output term (alpha 0). Attention maps are computed from the captured
    query/key projections, split into ``relation_heads`` (MiniLMv2), so head counts may differ.
    Padded tokens (the batch's ``attention_mask``) are left out of every term.

    Args:
        teacher: the trained model (left untouched apart from being put in eval mode).
        student: the model to train (any architecture with the same classes).
        method: one of ``"kd"``, ``"fitnets"``, ``"at"``, ``"sp"``, ``"rkd"``.
        features: ``{student_module_name: teacher_module_name}`` pairs for feature methods;
            chosen by :func:`auto_feature_pairs` when ``None`` (needs ``example_inputs``).
            FitNets defaults to the middle pair only (its "guided"/"hint" layers).
        example_inputs: a small batch, used to pick pairs, build FitNets regressors and check
            shapes up front (required for ``"fitnets"`` and for automatic pairs).
        temperature: Hinton's T (language models usually distill at 1).
        alpha: weight of the soft-target term (default 0.9 for kd/fitnets, 1 for tinybert, 0
            otherwise).
        beta, gamma, hint_weight, rkd_weight: weights of the AT, SP, hint and RKD terms.
        layer_map: transformer methods: ``"uniform"``, ``"last"`` or ``{student_block:
            teacher_block}`` (0-based, negative from the end); default per method.
        hidden_weight: transformer methods: weight of the hidden-state MSE (tinybert 1,
            minilm 0). A learned projection is added where the hidden widths differ.
        attention_weight: transformer methods: weight of the attention (and value) terms.
        attention_loss: ``"kl"`` or ``"mse"`` (default: minilm kl, tinybert mse).
        relation_heads: heads the attention maps are split into (default: the teacher's).
        output_loss: transformer methods: ``"kd"`` (soft targets; per token for LM logits),
            ``"mse"``, ``"cosine"`` (for sentence embeddings) or ``"none"``.

    Example:
        >>> d = Distiller(teacher, student, "at", example_inputs=x[:2])  # doctest: +SKIP
        >>> fit(d, loader, epochs=5, criterion=d.criterion)  # doctest: +SKIP
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        method: str = "kd",
        features: Mapping[str, str] | None = None,
        *,
        example_inputs: Any = None,
        temperature: float = 4.0,
        alpha: float | None = None,
        beta: float = 1000.0,
        gamma: float = 3000.0,
        hint_weight: float = 1.0,
        rkd_weight: float = 25.0,
        layer_map: str | Mapping[int, int] | None = None,
        hidden_weight: float | None = None,
        attention_weight: float = 1.0,
        attention_loss: str | None = None,
        relation_heads: int | None = None,
        output_loss: str = "kd",
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown distillation method {method!r}; choose from {METHODS}")
        if teacher is student:
            raise ValueError("teacher and student must be different modules (copy the model)")
        self.method = method
        self.student = student
        self.__dict__["_teacher"] = teacher.eval()  # not a submodule: not trained, not saved
        self.temperature = temperature
        self.alpha = _DEFAULT_ALPHA[method] if alpha is None else alpha
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        self.beta, self.gamma = beta, gamma
        self.hint_weight, self.rkd_weight = hint_weight, rkd_weight
        self.stage = "joint"
        self.regressors = nn.ModuleDict()
        self.last_terms: dict[str, torch.Tensor] = {}
        self.features: dict[str, str] = {}
        self.transformer: TransformerTerms | None = None
        if output_loss not in OUTPUT_LOSSES:
            raise ValueError(f"output_loss must be one of {OUTPUT_LOSSES}, got {output_loss!r}")
        self.output_loss = output_loss
        if method in TRANSFORMER_METHODS:
            if features:
                raise ValueError(f"method {method!r} pairs blocks by layer_map; drop `features`")
            if example_inputs is None:
                raise ValueError(
                    f"method {method!r} needs example_inputs (a batch as the models take it) to "
                    f"find the blocks, check shapes and build projections"
                )
            defaults = _TRANSFORMER_DEFAULTS[method]
            self.transformer = TransformerTerms.from_models(
                teacher,
                student,
                example_inputs,
                layer_map=defaults["layer_map"] if layer_map is None else layer_map,
                hidden_weight=defaults["hidden_weight"] if hidden_weight is None else hidden_weight,
                attention_weight=attention_weight,
                value_weight=attention_weight if method == "minilm" else 0.0,
                attention_loss=attention_loss or defaults["attention_loss"],
                relation_heads=relation_heads,
            )
            return
        if method == "kd":
            if features:
                raise ValueError(
                    "method 'kd' uses logits only; drop `features` or pick a feature method"
                )
            return
        self.features = _resolve_pairs(teacher, student, method, features, example_inputs)
        if example_inputs is None:
            if method == "fitnets":
                raise ValueError("method 'fitnets' needs example_inputs to build its regressors")
            return
        s_shapes = feature_shapes(student, list(self.features), example_inputs)
        t_shapes = feature_shapes(teacher, list(self.features.values()), example_inputs)
        for s_name, t_name in self.features.items():
            s_shape, t_shape = s_shapes[s_name], t_shapes[t_name]
            if method == "fitnets":
                self.regressors[_key(s_name)] = _regressor(s_shape, t_shape, s_name)
            elif method == "at" and (len(s_shape) != 4 or s_shape[-2:] != t_shape[-2:]):
                raise ValueError(
                    f"attention transfer pair {s_name!r}->{t_name!r}: shapes {s_shape} and "
                    f"{t_shape} need the same (H, W)"
                )
        self.regressors.to(model_device(student))

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher (not a registered submodule)."""
        return self.__dict__["_teacher"]

    def train(self, mode: bool = True) -> Distiller:
        """Set the student's mode; the teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        # .to() / .cuda() / .double() move the teacher along with the student
        self.teacher._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def forward(self, *inputs: Any, **kwargs: Any) -> torch.Tensor:
        """The student's prediction (so ``evaluate(distiller, loader)`` evaluates the student)."""
        return self.student(*inputs, **kwargs)

    def criterion(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, student_logits)`` for :func:`nnshrink.train.fit`'s ``criterion=``.

        ``model`` is what ``fit`` trains: this distiller, the student itself, or a wrapper around
        either (e.g. DDP); the student's logits come from ``model(x)``.
        """
        return self._compute(model, x, y)

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The distillation loss on one batch, for your own training loop.

        ``y=None`` drops the hard cross-entropy term (unlabelled transfer data).
        """
        return self._compute(self, x, y)[0]

    def _compute(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.transformer is not None:
            return self._compute_transformer(model, x, y)
        self.teacher.eval()
        with torch.no_grad(), FeatureCapture(self.teacher, self.features.values()) as t_cap:
            t_logits = self.teacher(x)
        with FeatureCapture(self.student, self.features) as s_cap:
            logits = model(x)
        terms: dict[str, torch.Tensor] = {}
        if self.stage != "hint":
            if y is not None and self.alpha < 1.0:
                terms["ce"] = (1.0 - self.alpha) * F.cross_entropy(logits, y)
            if self.alpha > 0.0 or y is None:
                weight = self.alpha if y is not None else 1.0
                terms["kd"] = weight * kd_loss(logits, t_logits, temperature=self.temperature)
        if self.stage != "kd" and self.features:
            terms[self.method] = self._feature_term(s_cap, t_cap)
        if not terms:
            raise ValueError(f"stage {self.stage!r} with method {self.method!r} has no loss term")
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return sum(terms.values()), logits  # type: ignore[return-value]

    def _compute_transformer(
        self, model: nn.Module, x: Any, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.transformer is not None
        s_names, t_names = self.transformer.capture_names()
        mask = find_attention_mask(self.student, x)
        self.teacher.eval()
        with torch.no_grad(), FeatureCapture(self.teacher, t_names) as t_cap:
            t_out = output_tensor(call_model(self.teacher, x))
        with FeatureCapture(self.student, s_names) as s_cap:
            out = output_tensor(call_model(model, x))
        terms: dict[str, torch.Tensor] = {}
        if self.stage != "hint":
            if y is not None and self.alpha < 1.0:
                # per token for LM logits; -100 targets (padding) are ignored, as in PyTorch
                ce = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
                terms["ce"] = (1.0 - self.alpha) * ce
            if self.alpha > 0.0 and self.output_loss != "none":
                token_mask = mask if out.dim() == 3 else None
                terms["output"] = self.alpha * output_loss(
                    out, t_out, self.output_loss, temperature=self.temperature,
                    attention_mask=token_mask,
                )  # fmt: skip
        if self.stage != "kd":
            terms.update(self.transformer(s_cap, t_cap, mask))
        if not terms:
            raise ValueError(f"stage {self.stage!r} with method {self.method!r} has no loss term")
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return sum(terms.values()), out  # type: ignore[return-value]

    def _feature_term(self, s_cap: FeatureCapture, t_cap: FeatureCapture) -> torch.Tensor:
        total = None
        for s_name, t_name in self.features.items():
            s, t = s_cap[s_name], t_cap[t_name]
            if self.method == "fitnets":
                term = self.hint_weight * hint_loss(s, t, self.regressors[_key(s_name)])
            elif self.method == "at":
                term = at_loss(s, t, beta=self.beta)
            elif self.method == "sp":
                term = sp_loss(s, t, gamma=self.gamma)
            else:
                term = rkd_distance_loss(s, t, weight=self.rkd_weight)
            total = term if total is None else total + term
        return total  # type: ignore[return-value]


def _resolve_pairs(
    teacher: nn.Module,
    student: nn.Module,
    method: str,
    features: Mapping[str, str] | None,
    example_inputs: Any,
) -> dict[str, str]:
    """The given pairs, or automatic ones (FitNets: only the middle pair, its hint layer)."""
    if features is not None:
        return dict(features)
    if example_inputs is None:
        raise ValueError(
            f"method {method!r} needs feature pairs: pass features={{student_name: "
            f"teacher_name}} or example_inputs to pair layers automatically"
        )
    pairs = auto_feature_pairs(teacher, student, example_inputs)
    if not pairs and method in ("rkd", "sp"):
        # relations compare batch-by-batch matrices, so any shapes pair: with no common spatial
        # resolution (MLPs), relate the last layers' outputs (the embedding RKD was defined on)
        pairs = {_last_leaf(student, example_inputs): _last_leaf(teacher, example_inputs)}
    if not pairs:
        raise ValueError("no layers at a common spatial resolution found; pass `features`")
    if method == "fitnets":  # one hint, in the middle of the network (Romero et al.)
        middle = list(pairs)[(len(pairs) - 1) // 2]
        pairs = {middle: pairs[middle]}
    return pairs


def _key(name: str) -> str:
    return name.replace(".", "__") or "__root__"


def _last_leaf(model: nn.Module, example_inputs: Any) -> str:
    """Name of the last parameterized leaf module that runs in a forward pass of ``model``."""
    order: list[str] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, _o, _n=name: order.append(_n))
        for name, m in model.named_modules()
        if name and not any(True for _ in m.children()) and any(True for _ in m.parameters())
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
            model(*args)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    if not order:
        raise ValueError("no layer with parameters runs in the model; pass `features`")
    return order[-1]
