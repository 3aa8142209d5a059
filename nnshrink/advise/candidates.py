"""The candidate generator: compression pipelines as recipe stage lists, from the surveys' priors.

Each :class:`Candidate` is a list of recipe *stage dicts* (``{"prune": {...}}``,
``{"finetune": {...}}``, ...), so the recipe that reproduces it is the stage list plus a model, data
and seed. Which pipelines are proposed follows the rules of thumb of Cheng et al. and Ji et al.
("how to choose"):

* **storage-bound** (``max_bytes``): magnitude pruning + k-means weight sharing + Huffman-coded
  ``.nns`` (Deep Compression); k-means alone for mild targets; int8 PTQ (4x) when that is enough.
* **latency/MAC-bound** (``max_latency_ms``, ``max_macs``) on dense hardware: structured (channel)
  pruning, low-rank factorisation (Tucker-2 for convolutions, SVD for linear layers), compact
  depthwise-separable blocks, residual blocks removed (depth pruning, alone and with channel
  pruning) when the model has removable blocks, int8 PTQ run by ONNX Runtime (latency only,
  when the runtime is ONNX Runtime), and structured pruning followed by int8.
* **no data** (``finetune=False``): only PTQ, SVD/Tucker and k-means, without any training.
* **recovery**: a fine-tune after each lossy step; knowledge distillation from the baseline as an
  alternative recovery for structural edits (not after unstructured pruning, whose zeros a
  distillation stage would revive).

How strong each candidate is (sparsity per bit width, channel ratio, low-rank MAC fraction) is
found by bisection on *measured* bytes / MACs / latency of the pipeline applied without training
(a ``probe``), or from rough estimates without one (:func:`estimate_share_bytes`, MACs ~ kept
channels squared). The advisor then measures every candidate zero-shot and drops those whose
structure cannot meet the budget.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..metrics.latency import channel_block
from .budget import Budget, Measurement
from .measure import LayerTime

SPARSITIES = (0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985,
              0.99)  # fmt: skip
SHARE_BITS = (8, 6, 5, 4, 3, 2)
CHANNEL_RATIOS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MACS_RATIOS = (0.7, 0.5, 0.35, 0.25, 0.15)
TRAINING_STAGES = ("train", "finetune", "distill")
Stages = tuple[dict[str, Any], ...]
Probe = Callable[[Stages], Measurement | None]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One compression pipeline.

    Attributes:
        name: short unique label, e.g. ``"prune0.9-share5"``.
        family: the technique family (``"prune-share"``, ``"structured"``, ``"low-rank"``, ...).
        stages: recipe stage dicts, in order.
        rationale: the rule of thumb that proposed it.
    """

    name: str
    family: str
    stages: tuple[dict[str, Any], ...]
    rationale: str = ""

    @property
    def trains(self) -> bool:
        """Whether the pipeline has a training stage (so a longer budget can change it)."""
        return any(next(iter(s)) in TRAINING_STAGES for s in self.stages)

    def with_epochs(self, factor: int) -> Candidate:
        """The same pipeline with every training stage's epochs multiplied by ``factor``."""
        if factor == 1:
            return self
        stages = tuple(
            {k: ({**v, "epochs": v.get("epochs", 1) * factor} if k in TRAINING_STAGES else v)
             for k, v in s.items()}
            for s in self.stages
        )  # fmt: skip
        return dataclasses.replace(self, stages=stages)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able)."""
        return {"name": self.name, "family": self.family, "stages": [dict(s) for s in self.stages],
                "rationale": self.rationale}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ModelTraits:
    """What the generator needs to know about the model.

    Attributes:
        params: parameter count.
        has_conv: the model has ``nn.Conv2d`` layers with kernels larger than 1x1.
        has_linear: the model has ``nn.Linear`` layers.
        conv_time_share: fraction of the layer time (eager) spent in convolutions.
        residual_blocks: residual blocks with an identity shortcut (removable by depth pruning).
    """

    params: int
    has_conv: bool
    has_linear: bool
    conv_time_share: float = 0.5
    residual_blocks: int = 0


def model_traits(
    model: nn.Module, latency_rows: Sequence[LayerTime] = (), example_inputs: Any = None
) -> ModelTraits:
    """Describe ``model`` for :func:`generate` (``latency_rows`` from ``layer_latency_share``;
    ``example_inputs`` to count the removable residual blocks)."""
    from ..pruning.depth import residual_blocks

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    spatial = [m for m in convs if max(m.kernel_size) > 1 and m.groups == 1]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    total = sum(r.ms for r in latency_rows)
    conv_ms = sum(r.ms for r in latency_rows if r.type == "Conv2d")
    share = conv_ms / total if total > 0 else (1.0 if spatial else 0.0)
    params = sum(p.numel() for p in model.parameters())
    blocks = len(residual_blocks(model, example_inputs)) if example_inputs is not None else 0
    return ModelTraits(params, bool(spatial), bool(linears), share, blocks)


def estimate_share_bytes(params: int, sparsity: float, bits: int) -> float:
    """Rough ``.nns`` bytes of a model pruned to ``sparsity`` and shared at ``bits``.

    Each kept weight costs its codebook index and, when sparse, a ~5-bit relative position;
    Huffman coding saves ~15 %; ~1 KB of header, codebooks, biases and norms.
    """
    kept = params * (1.0 - sparsity)
    per_weight = bits + (5 if sparsity > 0 else 0)
    return 1024 + 0.85 * kept * per_weight / 8


def _finetune(epochs: int, lr: float, keep_zeros: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"epochs": epochs, "lr": lr, "optimizer": "adam"}
    if not keep_zeros:
        body["keep_zeros"] = False
    return {"finetune": body}


def _distill(epochs: int, lr: float) -> dict[str, Any]:
    return {"distill": {"teacher": "baseline", "method": "kd", "epochs": epochs, "lr": lr,
                        "optimizer": "adam"}}  # fmt: skip


def _ptq() -> dict[str, Any]:
    return {"quantize": {"type": "ptq", "bits": 8, "observer": "mse", "per_channel": True,
                         "backend": "onnxruntime", "calibration_batches": 8}}  # fmt: skip


def _prune_share(
    sparsity: float, bits: int, finetune: bool, epochs: int, lr: float
) -> tuple[dict[str, Any], ...]:
    stages: list[dict[str, Any]] = []
    if sparsity > 0:
        # High targets in two steps (Han et al. prune iteratively); global magnitude ranking
        # lets large, redundant layers absorb most of a high sparsity.
        steps = [sparsity] if sparsity <= 0.8 else [round(1 - math.sqrt(1 - sparsity), 3), sparsity]
        scope = "global" if sparsity >= 0.9 else "layer"
        for s in steps:
            stages.append({"prune": {"type": "magnitude-pruning", "sparsity": s, "scope": scope}})
            if finetune:
                stages.append(_finetune(epochs, lr))
    stages.append({"share": {"type": "weight-sharing", "bits": bits}})
    if finetune:  # trains the shared centroids (Deep Compression's last step)
        stages.append(_finetune(epochs, lr / 10))
    stages.append({"encode": {}})
    return tuple(stages)


def gentlest_fitting(values: Sequence[float], fits: Callable[[float], bool]) -> int | None:
    """Index of the first value in ``values`` (sorted gentle → strong) for which ``fits`` holds,
    by bisection (``fits`` must be monotonic); ``None`` if even the last does not fit.

    Example:
        >>> gentlest_fitting([0.5, 0.9, 0.95, 0.99], lambda s: s >= 0.95)
        2
    """
    lo, hi = 0, len(values) - 1
    if not values or not fits(values[hi]):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(values[mid]):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _storage(
    budget: Budget,
    base: Measurement,
    traits: ModelTraits,
    epochs: int,
    lr: float,
    probe: Probe | None,
):
    limit = float(budget.max_bytes)
    out = []
    sparsities = SPARSITIES if budget.finetune else (0.0,)
    for bits in SHARE_BITS:

        def fits(s: float, bits: int = bits) -> bool:
            if probe is None:
                return estimate_share_bytes(traits.params, s, bits) <= limit
            # measured: the real file of the pipeline applied without training, 3 % margin
            m = probe(_prune_share(s, bits, budget.finetune, epochs, lr))
            return m is not None and m.bytes is not None and m.bytes <= 0.97 * limit

        first = gentlest_fitting(sparsities, fits)
        # the gentlest sparsity that fits, and the next one as a margin
        for s in sparsities[first : first + 2] if first is not None else []:
            name = (f"prune{s:g}-" if s else "") + f"share{bits}"
            why = ("storage-bound: pruning + k-means sharing + Huffman (Deep Compression)" if s
                   else "storage-bound, mild target: k-means sharing + Huffman")  # fmt: skip
            if not budget.finetune:
                why = "no data: k-means sharing without centroid training + Huffman"
            out.append(Candidate(name, "prune-share" if s else "share",
                                 _prune_share(s, bits, budget.finetune, epochs, lr), why))  # fmt: skip
    if not out:  # nothing fits even by the estimate: offer the most aggressive to show the gap
        s, bits = sparsities[-1], SHARE_BITS[-1]
        out.append(Candidate((f"prune{s:g}-" if s else "") + f"share{bits}",
                             "prune-share" if s else "share",
                             _prune_share(s, bits, budget.finetune, epochs, lr),
                             "nothing fits by the size estimate: the strongest compression"))  # fmt: skip
    if base.bytes is not None and base.bytes / 4 <= limit * 1.1:
        out.append(Candidate("int8-ptq", "int8", (_ptq(),),
                             "storage-bound, ~4x is enough: int8 post-training quantization"))  # fmt: skip
    return out


def _keep_fraction(budget: Budget, base: Measurement) -> float:
    """Fraction of the baseline's MACs/latency that the budget allows (the tighter one)."""
    fractions = []
    if budget.max_macs is not None and base.macs:
        fractions.append(budget.max_macs / base.macs)
    if budget.max_latency_ms is not None and base.latency_ms:
        fractions.append(budget.max_latency_ms / base.latency_ms)
    return min(fractions) if fractions else 1.0


def _speed_fits(budget: Budget, m: Measurement | None) -> bool:
    """Whether a zero-shot measurement meets the MAC and latency limits (no slack)."""
    if m is None:
        return False
    if budget.max_macs is not None and (m.macs is None or m.macs > budget.max_macs):
        return False
    if budget.max_latency_ms is not None and (
        m.latency_ms is None or m.latency_ms > budget.max_latency_ms
    ):
        return False
    return True


def _strengths(values: Sequence[float], estimate_ok: Callable[[float], bool],
               stages_for: Callable[[float], Stages], budget: Budget,
               probe: Probe | None, count: int) -> list[float]:  # fmt: skip
    """The gentlest ``count`` values that fit: measured with ``probe`` (bisection), else by the
    estimate; the strongest value when none fits (to show the gap)."""
    if probe is not None:
        first = gentlest_fitting(values, lambda v: _speed_fits(budget, probe(stages_for(v))))
    else:
        first = next((i for i, v in enumerate(values) if estimate_ok(v)), None)
    return list(values[first : first + count]) if first is not None else [values[-1]]


def _structural(
    budget: Budget,
    traits: ModelTraits,
    keep: float,
    epochs: int,
    lr: float,
    probe: Probe | None,
    rounding: dict[str, int],
    tag: str,
    ortq: bool,
) -> list[Candidate]:
    """Channel-pruning and low-rank candidates; ``rounding`` (``{}`` or ``{"round_to": n}``)
    goes into every structural stage and ``tag`` into the names and families."""
    out: list[Candidate] = []
    ft = budget.finetune

    def struct(r: float) -> Stages:
        return ({"prune": {"type": "structured-pruning", "ratio": r, "criterion": "l2",
                           **rounding}},)  # fmt: skip

    if ft:
        # channels kept c -> MACs ~ c^2 (the estimate); measured, latency often falls less than
        # MACs on small models, so the bisection on measured latency picks stronger ratios
        fitting = _strengths(CHANNEL_RATIOS, lambda r: (1 - r) ** 2 <= keep * 1.15, struct,
                             budget, probe, 3)  # fmt: skip
        for i, r in enumerate(fitting):
            (prune,) = struct(r)
            out.append(Candidate(f"struct{r:g}{tag}-ft", "structured" + tag,
                                 (prune, _finetune(epochs, lr, keep_zeros=False)),
                                 "latency/MAC-bound: structured channel pruning + fine-tune"))  # fmt: skip
            if i == 0:
                out.append(Candidate(f"struct{r:g}{tag}-kd", "structured" + tag,
                                     (prune, _distill(epochs, lr)),
                                     "structured pruning, distillation from the baseline as "
                                     "recovery"))  # fmt: skip
        if ortq and not tag:
            r = max(0.1, round(fitting[0] - 0.2, 1))
            prune = {"prune": {"type": "structured-pruning", "ratio": r, "criterion": "l2"}}
            out.append(Candidate(f"struct{r:g}-ft-int8", "structured+int8",
                                 (prune, _finetune(epochs, lr, keep_zeros=False), _ptq()),
                                 "latency-bound in ONNX Runtime: lighter channel pruning, then "
                                 "int8"))  # fmt: skip

    def lowrank(m: float) -> dict[str, Any]:
        if traits.has_conv:
            return {"type": "low-rank", "method": "tucker", "rank": "budget", "macs_ratio": m,
                    "linear": traits.conv_time_share < 0.8, **rounding}  # fmt: skip
        return {"type": "low-rank", "method": "svd", "rank": "budget", "macs_ratio": m,
                **rounding}  # fmt: skip

    ratios = []
    if traits.has_conv or traits.has_linear:
        ratios = _strengths(MACS_RATIOS, lambda m: m <= keep * 1.1,
                            lambda m: ({"decompose": lowrank(m)},), budget, probe, 2)  # fmt: skip
    for m in ratios:
        body = lowrank(m)
        family, label = "low-rank" + tag, f"{body['method']}{m:g}{tag}"
        stages: Stages = ({"decompose": body},)
        if ft:
            stages += (_finetune(epochs, lr, keep_zeros=False),)
        why = ("latency/MAC-bound: low-rank factorisation" + (" + fine-tune" if ft
               else " without fine-tune (no data)"))  # fmt: skip
        out.append(Candidate(label + ("-ft" if ft else ""), family, stages, why))
    return out


def _depth(
    budget: Budget,
    traits: ModelTraits,
    keep: float,
    epochs: int,
    lr: float,
    probe: Probe | None,
    ortq: bool,
) -> list[Candidate]:
    """Residual blocks removed (depth pruning), alone, with half the channels, or (in ONNX Runtime)
    followed by int8; distilled from the baseline.

    The rule of thumb behind it: a small model at batch 1 is bound by per-operator overhead, not
    arithmetic, so thinner layers barely help and fewer layers do (docs/results.md: a ResNet-20
    with 14x fewer MACs still took half its ONNX Runtime time). Half the channels keeps
    power-of-two widths at multiples of 8, which ONNX Runtime runs well.
    """
    n = traits.residual_blocks
    counts = list(range(1, n + 1))

    def estimate(k: float) -> bool:
        # without a probe: time ~ the number of blocks left (+ stem and head ~ one block)
        return (n + 1 - k) / (n + 1) <= keep

    def depth(k: float, channels: float = 0.0) -> Stages:
        stages: Stages = ({"prune": {"type": "block-pruning", "remove": int(k)}},)
        if channels:
            stages += ({"prune": {"type": "structured-pruning", "ratio": channels,
                                  "criterion": "l2"}},)  # fmt: skip
        return stages

    why = ("latency-bound, overhead-dominated model: remove residual blocks (depth pruning), "
           "distillation from the baseline as recovery")  # fmt: skip
    out = []
    for k in _strengths(counts, estimate, depth, budget, probe, 2):
        out.append(Candidate(f"depth{k:g}-kd", "depth", (*depth(k), _distill(epochs, lr)), why))
    both = _strengths(counts, lambda k: estimate(k / 2), lambda k: depth(k, 0.5), budget, probe, 1)
    for k in both:
        out.append(Candidate(f"depth{k:g}-struct0.5-kd", "depth+structured",
                             (*depth(k, 0.5), _distill(epochs, lr)),
                             why + ", with half the channels"))  # fmt: skip
    if ortq:
        # int8 kernels take ~1/1.6 of the fp32 time at batch 1 (ResNet-20), so few blocks go
        int8 = _strengths(counts, lambda k: (n + 1 - k) / (n + 1) / 1.6 <= keep,
                          lambda k: (*depth(k), _ptq()), budget, probe, 1)  # fmt: skip
        for k in int8:
            out.append(Candidate(f"depth{k:g}-kd-int8", "depth+int8",
                                 (*depth(k), _distill(epochs, lr), _ptq()),
                                 why + ", then int8 PTQ run by ONNX Runtime"))  # fmt: skip
    return out


def _speed(
    budget: Budget,
    base: Measurement,
    traits: ModelTraits,
    epochs: int,
    lr: float,
    probe: Probe | None,
):
    keep = _keep_fraction(budget, base)
    out: list[Candidate] = []
    ft = budget.finetune
    ortq = budget.max_latency_ms is not None and budget.runtime == "onnxruntime"

    # ONNX Runtime runs channel counts in multiples of the CPU's vector block much faster
    # (docs/results.md: a half-MAC ResNet-56 1.0x / 1.4x / 2.0x faster than dense at odd /
    # 8 / 16 channels), but a narrow model cannot shrink in steps of 16 (ResNet-20's 16-channel
    # stage): for an ORT latency budget both variants are proposed, and measured
    block = channel_block() if ortq else 1
    roundings: list[dict[str, int]] = [{}] + ([{"round_to": block}] if block > 1 else [])

    for rounding in roundings:
        tag = f"-c{rounding['round_to']}" if rounding else ""
        out += _structural(budget, traits, keep, epochs, lr, probe, rounding, tag, ortq)

    if ft and traits.residual_blocks:
        out += _depth(budget, traits, keep, epochs, lr, probe, ortq)
    if ft and traits.has_conv:
        out.append(Candidate("dwsep-ft", "compact",
                             ({"compact": {"type": "compact", "block": "dwsep"}},
                              _finetune(2 * epochs, lr, keep_zeros=False)),
                             "latency/MAC-bound: compact depthwise-separable convolutions"))  # fmt: skip
    if ortq:
        out.append(Candidate("int8-ptq", "int8", (_ptq(),),
                             "latency-bound in ONNX Runtime: int8 kernels (PTQ, no data needed)"))  # fmt: skip
    return out


def generate(
    budget: Budget,
    baseline: Measurement,
    traits: ModelTraits,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    probe: Probe | None = None,
) -> list[Candidate]:
    """Candidate pipelines for ``budget``, from the rules of thumb (duplicates removed).

    Args:
        budget: the limits (which ones are set decides the families).
        baseline: the trained model's measurement (targets are ratios against it).
        traits: :func:`model_traits` of the model.
        epochs: epochs of each recovery stage (the search varies the training data instead).
        lr: Adam learning rate of the recovery stages (centroid fine-tunes use a tenth).
        probe: ``stages -> Measurement`` of the pipeline applied without training (see
            :func:`~nnshrink.advise.zero_shot`; ``None`` when it cannot be applied). With it the
            sparsity per bit width, the channel ratio and the low-rank MAC ratio are the gentlest
            whose measured bytes / MACs / latency fit (bisection); without it they come from
            estimates (:func:`estimate_share_bytes`, MACs ~ kept channels squared).

    Example:
        >>> traits = ModelTraits(params=100_000, has_conv=False, has_linear=True)
        >>> cands = generate(Budget(max_bytes=20_000), Measurement(bytes=400_000), traits)
        >>> cands[0].stages[-1]
        {'encode': {}}
    """
    out: list[Candidate] = []
    if budget.max_bytes is not None:
        out += _storage(budget, baseline, traits, epochs, lr, probe)
    if budget.max_latency_ms is not None or budget.max_macs is not None:
        out += _speed(budget, baseline, traits, epochs, lr, probe)
    seen: set[str] = set()
    unique = []
    for c in out:
        if c.name not in seen:
            seen.add(c.name)
            unique.append(c)
    return unique


def interleave(candidates: Sequence[Candidate], scores: dict[str, float]) -> list[Candidate]:
    """Order candidates family by family (round robin), each family by descending score.

    Keeps the first rung diverse: the best of every family is tried before the second best of
    any.

    Example:
        >>> a, b, c = (Candidate(n, f, ()) for n, f in (("a", "x"), ("b", "x"), ("c", "y")))
        >>> [x.name for x in interleave([a, b, c], {"a": 0.1, "b": 0.9, "c": 0.5})]
        ['b', 'c', 'a']
    """
    families: dict[str, list[Candidate]] = {}
    for c in sorted(candidates, key=lambda c: -scores.get(c.name, 0.0)):
        families.setdefault(c.family, []).append(c)
    queues = sorted(families.values(), key=lambda q: -scores.get(q[0].name, 0.0))
    out = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out
