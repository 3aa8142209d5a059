"""Layer-to-layer transformer distillation: where the blocks are, and the terms between them.

:func:`find_layout` reads a model's stack of transformer blocks from its module tree: the first
``nn.ModuleList`` whose every block holds separate query and key ``nn.Linear`` layers (named
``q``/``query``/``q_proj``/..., see ``Q_NAMES``). That covers nnshrink's GPT, Hugging Face
BERT-style encoders (``encoder.layer.N.attention.self.query``), Llama-style decoders
(``self_attn.q_proj``) and most hand-written blocks; fused projections (GPT-2's ``c_attn``) are
refused with the reason. Head counts and causality are read from the attention module
(``num_heads`` / ``num_attention_heads`` / ``n_head``, ``is_causal``), as pruners leave them.

:class:`TransformerTerms` holds a layer map, the learned hidden-state projections (TinyBERT's
``W_h``, built only where the widths differ, e.g. after hidden-width pruning) and computes the
hidden-state, attention and value-relation terms from captured features. The
:class:`~nnshrink.distill.Distiller` uses it for ``method="tinybert"`` and ``"minilm"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .hooks import FeatureCapture
from .transformer_losses import (
    attention_relation,
    attention_score_mse,
    attention_scores,
    hidden_state_loss,
    last_layer_map,
    relation_kl_loss,
    uniform_layer_map,
)

Q_NAMES = ("q", "query", "q_proj", "wq", "to_q", "q_lin")
K_NAMES = ("k", "key", "k_proj", "wk", "to_k", "k_lin")
V_NAMES = ("v", "value", "v_proj", "wv", "to_v", "v_lin")
HEAD_ATTRS = ("num_heads", "num_attention_heads", "n_head", "n_heads")
ATTENTION_LOSSES = ("kl", "mse")
LAYER_MAPS = ("uniform", "last")


@dataclasses.dataclass(frozen=True)
class TransformerLayout:
    """Module names of a model's blocks and, per block, its query/key/value projections.

    Args:
        blocks: block names, in order; a block's output is its hidden state.
        queries, keys, values: the projection Linear layers of each block.
        heads: attention heads per block (``None`` where no attribute says).
        causal: whether attention hides later positions (decoders).
    """

    blocks: tuple[str, ...]
    queries: tuple[str, ...]
    keys: tuple[str, ...]
    values: tuple[str, ...]
    heads: tuple[int | None, ...]
    causal: bool

    def __len__(self) -> int:
        return len(self.blocks)


def _find_linear(block: nn.Module, names: tuple[str, ...]) -> str | None:
    for name, module in block.named_modules():
        if name and name.rsplit(".", 1)[-1] in names and isinstance(module, nn.Linear):
            return name
    return None


def find_layout(model: nn.Module) -> TransformerLayout:
    """The blocks of ``model`` and their attention projections (see the module docstring).

    Raises:
        ValueError: no ``nn.ModuleList`` of blocks with separate query and key Linear layers.

    Example:
        >>> from nnshrink.models.gpt import GPT
        >>> layout = find_layout(GPT(context=8, dim=32, depth=2, num_heads=4))
        >>> layout.blocks, layout.queries[0], layout.heads, layout.causal
        (('blocks.0', 'blocks.1'), 'blocks.0.attn.q', (4, 4), True)
    """
    for list_name, container in model.named_modules():
        if not isinstance(container, nn.ModuleList) or len(container) == 0:
            continue
        found = [
            (_find_linear(b, Q_NAMES), _find_linear(b, K_NAMES), _find_linear(b, V_NAMES))
            for b in container
        ]
        if not all(q and k for q, k, _ in found):
            continue
        prefix = f"{list_name}." if list_name else ""
        blocks, queries, keys, values, heads, causal = [], [], [], [], [], []
        for i, (q, k, v) in enumerate(found):
            block = f"{prefix}{i}"
            blocks.append(block)
            queries.append(f"{block}.{q}")
            keys.append(f"{block}.{k}")
            values.append(f"{block}.{v}" if v else "")
            parent = container[i].get_submodule(q.rsplit(".", 1)[0]) if "." in q else container[i]
            count = next((getattr(parent, a) for a in HEAD_ATTRS if hasattr(parent, a)), None)
            heads.append(int(count) if isinstance(count, int) else None)
            causal.append(bool(getattr(parent, "is_causal", False)))
        if len(set(causal)) > 1:
            raise ValueError(f"blocks of {list_name!r} disagree on causal attention: {causal}")
        return TransformerLayout(
            tuple(blocks), tuple(queries), tuple(keys), tuple(values), tuple(heads), causal[0]
        )
    raise ValueError(
        f"{type(model).__name__}: no nn.ModuleList of transformer blocks with separate query and "
        f"key nn.Linear layers (looked for names {Q_NAMES} and {K_NAMES}); fused projections "
        f"such as GPT-2's c_attn are not supported by the transformer distillation methods"
    )


def resolve_layer_map(
    layer_map: str | Mapping[int, int] | None, student_layers: int, teacher_layers: int
) -> dict[int, int]:
    """``"uniform"`` (TinyBERT), ``"last"`` (MiniLM) or an explicit ``{student: teacher}`` map.

    Example:
        >>> resolve_layer_map({0: 1, -1: -1}, 2, 4)
        {0: 1, 1: 3}
    """
    if layer_map is None or layer_map == "uniform":
        return uniform_layer_map(student_layers, teacher_layers)
    if layer_map == "last":
        return last_layer_map(student_layers, teacher_layers)
    if isinstance(layer_map, str):
        raise ValueError(f"layer_map must be one of {LAYER_MAPS} or a mapping, got {layer_map!r}")
    out = {}
    for s, t in layer_map.items():
        s_i, t_i = int(s), int(t)
        if (
            not -student_layers <= s_i < student_layers
            or not -teacher_layers <= t_i < teacher_layers
        ):
            raise ValueError(
                f"layer_map pair {s}->{t} is out of range: the student has {student_layers} "
                f"blocks, the teacher {teacher_layers} (0-based; negative counts from the end)"
            )
        out[s_i % student_layers] = t_i % teacher_layers
    return out


class TransformerTerms(nn.Module):
    """Hidden-state, attention and value-relation terms between paired transformer blocks.

    Args:
        student_layout, teacher_layout: from :func:`find_layout`.
        layer_map: ``{student_block: teacher_block}`` (see :func:`resolve_layer_map`).
        hidden_weight: weight of the hidden-state MSE (summed over pairs, as TinyBERT).
        attention_weight: weight of the attention term (summed over pairs).
        value_weight: weight of MiniLM's value-relation KL (summed over pairs).
        attention_loss: ``"kl"`` (MiniLM: KL of the attention distributions) or ``"mse"``
            (TinyBERT: MSE of the attention scores).
        relation_heads: heads to split each projection into; default the teacher block's head
            count (the true attention maps while the student keeps its heads).
        student_widths, teacher_widths: ``{block name: output width}`` of each model, to build
            projections where paired widths differ (:meth:`from_models` measures them).

    Example:
        >>> from nnshrink.models.gpt import GPT
        >>> t, s = GPT(context=8, dim=32, depth=4), GPT(context=8, dim=32, depth=2)
        >>> terms = TransformerTerms.from_models(t, s, torch.zeros(1, 8, dtype=torch.long))
        >>> terms.layer_map
        {0: 1, 1: 3}
    """

    def __init__(
        self,
        student_layout: TransformerLayout,
        teacher_layout: TransformerLayout,
        layer_map: Mapping[int, int],
        *,
        hidden_weight: float = 1.0,
        attention_weight: float = 1.0,
        value_weight: float = 0.0,
        attention_loss: str = "kl",
        relation_heads: int | None = None,
        student_widths: Mapping[str, int] | None = None,
        teacher_widths: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        if attention_loss not in ATTENTION_LOSSES:
            raise ValueError(
                f"attention_loss must be one of {ATTENTION_LOSSES}, got {attention_loss!r}"
            )
        if student_layout.causal != teacher_layout.causal:
            raise ValueError("student and teacher disagree on causal attention")
        if min(hidden_weight, attention_weight, value_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        if value_weight > 0 and not all(
            student_layout.values[m] and teacher_layout.values[t] for m, t in layer_map.items()
        ):
            raise ValueError(f"value relations need value projections named one of {V_NAMES}")
        self.student_layout, self.teacher_layout = student_layout, teacher_layout
        self.layer_map = dict(layer_map)
        self.hidden_weight, self.attention_weight = hidden_weight, attention_weight
        self.value_weight, self.attention_loss = value_weight, attention_loss
        self.relation_heads = relation_heads
        self.projections = nn.ModuleDict()
        s_widths, t_widths = dict(student_widths or {}), dict(teacher_widths or {})
        for m, t in self.layer_map.items():
            s_w = s_widths.get(student_layout.blocks[m])
            t_w = t_widths.get(teacher_layout.blocks[t])
            if hidden_weight > 0 and s_w is not None and t_w is not None and s_w != t_w:
                self.projections[str(m)] = nn.Linear(s_w, t_w, bias=False)

    @classmethod
    def from_models(
        cls,
        teacher: nn.Module,
        student: nn.Module,
        example_inputs: Any,
        layer_map: str | Mapping[int, int] | None = None,
        **kwargs: Any,
    ) -> TransformerTerms:
        """Find both layouts, resolve the layer map, measure widths on ``example_inputs`` (one
        pass per model) and check every pair's shapes."""
        s_layout, t_layout = find_layout(student), find_layout(teacher)
        pairs = resolve_layer_map(layer_map, len(s_layout), len(t_layout))
        s_names = _names(s_layout, pairs.keys())
        t_names = _names(t_layout, pairs.values())
        s_widths = {n: s[-1] for n, s in _capture_shapes(student, s_names, example_inputs).items()}
        t_widths = {n: s[-1] for n, s in _capture_shapes(teacher, t_names, example_inputs).items()}
        terms = cls(
            s_layout, t_layout, pairs, student_widths=s_widths, teacher_widths=t_widths, **kwargs
        )
        for m, t in pairs.items():
            r = terms._heads(t)
            for who, name, widths in (
                ("student", s_layout.queries[m], s_widths),
                ("teacher", t_layout.queries[t], t_widths),
            ):
                if widths[name] % r:
                    raise ValueError(
                        f"{who} {name}: width {widths[name]} does not split into {r} relation "
                        f"heads; set relation_heads to a divisor of both models' query widths"
                    )
        return terms.to(next(student.parameters()).device)

    def capture_names(self) -> tuple[list[str], list[str]]:
        """Module names to capture in the student and in the teacher."""
        return (
            _names(self.student_layout, self.layer_map.keys()),
            _names(self.teacher_layout, self.layer_map.values()),
        )

    def _heads(self, teacher_block: int) -> int:
        if self.relation_heads is not None:
            return self.relation_heads
        heads = self.teacher_layout.heads[teacher_block]
        if heads is None:
            raise ValueError(
                f"{self.teacher_layout.blocks[teacher_block]}: no head-count attribute "
                f"({HEAD_ATTRS}); pass relation_heads"
            )
        return heads

    def forward(
        self,
        student: FeatureCapture,
        teacher: FeatureCapture,
        attention_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{"hidden", "attention", "value"}`` terms (those with a positive weight)."""
        s_l, t_l, causal = self.student_layout, self.teacher_layout, self.teacher_layout.causal
        terms: dict[str, torch.Tensor] = {}

        def add(key: str, value: torch.Tensor) -> None:
            terms[key] = terms[key] + value if key in terms else value

        for m, t in self.layer_map.items():
            heads = self._heads(t)
            if self.hidden_weight > 0:
                proj = self.projections[str(m)] if str(m) in self.projections else None
                loss = hidden_state_loss(
                    student[s_l.blocks[m]], teacher[t_l.blocks[t]], proj, attention_mask
                )
                add("hidden", self.hidden_weight * loss)
            if self.attention_weight > 0:
                sq, sk = student[s_l.queries[m]], student[s_l.keys[m]]
                tq, tk = teacher[t_l.queries[t]], teacher[t_l.keys[t]]
                opts = {"attention_mask": attention_mask, "causal": causal}
                if self.attention_loss == "kl":
                    loss = relation_kl_loss(
                        attention_relation(sq, sk, heads, **opts),
                        attention_relation(tq, tk, heads, **opts),
                        attention_mask,
                    )
                else:
                    loss = attention_score_mse(
                        attention_scores(sq, sk, heads, **opts),
                        attention_scores(tq, tk, heads, **opts),
                        attention_mask,
                        causal,
                    )
                add("attention", self.attention_weight * loss)
            if self.value_weight > 0:
                sv, tv = student[s_l.values[m]], teacher[t_l.values[t]]
                opts = {"attention_mask": attention_mask, "causal": causal}
                loss = relation_kl_loss(
                    attention_relation(sv, sv, heads, **opts),
                    attention_relation(tv, tv, heads, **opts),
                    attention_mask,
                )
                add("value", self.value_weight * loss)
        return terms


def _names(layout: TransformerLayout, blocks: Any) -> list[str]:
    names = []
    for i in blocks:
        names += [layout.blocks[i], layout.queries[i], layout.keys[i]]
        if layout.values[i]:
            names.append(layout.values[i])
    return list(dict.fromkeys(names))


@torch.no_grad()
def _capture_shapes(model: nn.Module, names: list[str], example_inputs: Any) -> dict[str, tuple]:
    from ..core import eval_mode
    from .inputs import call_model

    with eval_mode(model), FeatureCapture(model, names) as cap:
        call_model(model, example_inputs)
    return {n: tuple(cap[n].shape) for n in names}
