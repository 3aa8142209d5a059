"""One-shot pruning and activation-aware low-rank on a small GPT LM trained offline (CPU).

A 4-layer GPT-style character LM (d=128, 4 heads, FFN 512, context ``--ctx``, ~0.8M parameters) is
trained for ``--steps`` AdamW steps on the English text of Debian's ``fortunes`` package
(``/usr/share/games/fortunes``, ~2.5 MB; ``apt-get install fortunes``), the last 10 % of it held
out. Then, on copies of the same trained model and with the same calibration sequences
(``--calib`` windows of ``--ctx`` characters from the training text; the papers use 128 x 2048
tokens):

* pruning, every Linear but the LM head (``exclude=("@last",)``), no fine-tuning:
  ``MagnitudePruning`` (per layer), ``Wanda``, ``SparseGPT`` at each ``--sparsities`` and at
  2:4; held-out perplexity, the ``.nns`` file size (``nm`` / ``sparse`` encodings) and its exact
  round trip. 2:4 kernels are GPU-only in PyTorch, so there is no CPU latency for them;
* low-rank, the same Linear layers: plain SVD, ASVD (alpha 0.5) and SVD-LLM, (a) with the same
  ranks (``rank="params"``: each layer keeps at most ``--params-ratio`` of its parameters) and
  (b) with per-layer ranks from one parameter budget (``rank="budget"``), ranks rounded to 8;
  held-out perplexity, and eager latency of the factorised against the dense model (interleaved
  rounds, threads pinned, medians; under ``/tmp/nnshrink-timing.lock``).

This is a scaled-down stand-in for the papers' protocol (LLaMA-7B, WikiText-2): the comparison
between methods on one small model, not their numbers.

Usage:
    python benchmarks/oneshot_pruning.py --ctx 64 --steps 400   # the recorded run (~15 min CPU)
    python benchmarks/oneshot_pruning.py --steps 200 --parts pruning
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import json
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import nnshrink as ns
from nnshrink.lowrank import LowRank
from nnshrink.metrics import count_params
from nnshrink.metrics.latency import interleaved
from nnshrink.pruning import MagnitudePruning, SparseGPT, Wanda
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results" / "oneshot_pruning.json"
FORTUNES = Path("/usr/share/games/fortunes")
LOCK = "/tmp/nnshrink-timing.lock"


# ---- data ------------------------------------------------------------------------------------


def load_corpus() -> str:
    """The fortunes text, printable ASCII and newlines only, '%' separator lines dropped."""
    if not FORTUNES.is_dir():
        raise SystemExit(
            f"{FORTUNES} not found: install the corpus with `apt-get install fortunes`"
        )
    parts = []
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix in (".dat", ".u8") or path.is_dir() or path.is_symlink():
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        parts.append("\n".join(line for line in text.splitlines() if line.strip() != "%"))
    text = "\n".join(parts)
    return "".join(c for c in text if c == "\n" or 32 <= ord(c) < 127)


class Chars:
    """Character vocabulary and the train/held-out token streams."""

    def __init__(self, text: str, held_out: float = 0.1) -> None:
        self.vocab = sorted(set(text))
        index = {c: i for i, c in enumerate(self.vocab)}
        tokens = torch.tensor([index[c] for c in text], dtype=torch.long)
        cut = int(len(tokens) * (1 - held_out))
        self.train, self.test = tokens[:cut], tokens[cut:]

    def batch(self, stream: torch.Tensor, n: int, ctx: int, g: torch.Generator) -> torch.Tensor:
        """``n`` random windows of ``ctx + 1`` tokens."""
        starts = torch.randint(0, len(stream) - ctx - 1, (n,), generator=g)
        return torch.stack([stream[s : s + ctx + 1] for s in starts.tolist()])


# ---- model -----------------------------------------------------------------------------------


class Block(nn.Module):
    """Pre-norm transformer block with separate q/k/v/o projections and a GELU MLP."""

    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        h = self.ln1(x)

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, c // self.heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(
            split(self.q(h)), split(self.k(h)), split(self.v(h)), is_causal=True
        )
        x = x + self.o(a.transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyGPT(nn.Module):
    """Token + position embeddings, ``layers`` blocks, final LayerNorm, an untied LM head."""

    def __init__(
        self,
        vocab: int,
        d: int = 128,
        layers: int = 4,
        heads: int = 4,
        ff: int = 512,
        ctx: int = 128,
    ) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.Sequential(*(Block(d, heads, ff) for _ in range(layers)))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        return self.head(self.ln(self.blocks(x)))


def train(
    model: TinyGPT, chars: Chars, steps: int, ctx: int, batch: int, lr: float, seed: int
) -> list[float]:
    """AdamW, linear warm-up then cosine; returns the loss every 50 steps."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warm) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / steps))))
        ),
    )
    log = []
    model.train()
    for step in range(steps):
        xy = chars.batch(chars.train, batch, ctx, g)
        loss = F.cross_entropy(model(xy[:, :-1]).flatten(0, 1), xy[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            log.append(round(float(loss), 4))
    return log


@torch.no_grad()
def perplexity(model: nn.Module, chars: Chars, ctx: int, windows: int) -> float:
    """exp(mean cross-entropy) over the first ``windows`` non-overlapping held-out windows."""
    model.eval()
    stream = chars.test[: windows * ctx + 1]
    xs = stream[:-1].view(windows, ctx)
    ys = stream[1:].view(windows, ctx)
    total = 0.0
    for i in range(0, windows, 16):
        logits = model(xs[i : i + 16])
        total += float(
            F.cross_entropy(logits.flatten(0, 1), ys[i : i + 16].flatten(), reduction="sum")
        )
    return math.exp(total / (windows * ctx))


@contextlib.contextmanager
def timing_lock():
    """The shared timing lock (the same file ``flock /tmp/nnshrink-timing.lock`` takes)."""
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- experiments -------------------------------------------------------------------------------


def run_pruning(dense: TinyGPT, chars: Chars, calib: list[torch.Tensor], args) -> list[dict]:
    targets = [(f"{s:g}", dict(sparsity=s)) for s in args.sparsities] + [
        ("2:4", dict(pattern="2:4"))
    ]
    rows = []
    for label, target in targets:
        for name, make in (
            (
                "magnitude",
                lambda t: MagnitudePruning(
                    exclude=("@last",), scope="layer", criterion="magnitude", **t
                ),
            ),  # the papers' baseline
            ("wanda", lambda t: Wanda(calibration_batches=len(calib), **t)),
            ("sparsegpt", lambda t: SparseGPT(calibration_batches=len(calib), **t)),
        ):
            model = copy.deepcopy(dense)
            t0 = time.perf_counter()
            result = ns.compress_(model, make(target), example_inputs=calib, measure=False)
            seconds = time.perf_counter() - t0
            ns.finalize(model)
            ppl = perplexity(model, chars, args.ctx, args.eval_windows)
            with tempfile.TemporaryDirectory() as tmp:
                report = ns.save(model, Path(tmp) / "m.nns")
                back = ns.load(Path(tmp) / "m.nns", model=copy.deepcopy(dense))
                exact = all(
                    torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items()
                )
            pruned = [r for r in report.rows if r.kind == "fc" and r.name != "head.weight"]
            rows.append({
                "target": label, "method": name, "perplexity": round(ppl, 4),
                "sparsity_of_pruned_layers": round(result.summary.sparsity, 4),
                "seconds": round(seconds, 2), "nns_file_bytes": report.file_bytes,
                "pruned_weights_stored_bytes": sum(r.stored_bytes for r in pruned),
                "pruned_weights_dense_bytes": sum(r.dense_bytes for r in pruned),
                "pruned_weights_encodings": sorted({r.encoding for r in pruned}),
                "nns_roundtrip_exact": exact,
                "mean_layer_output_error": (
                    round(sum(result.summary.errors.values()) / len(result.summary.errors), 5)
                    if getattr(result.summary, "errors", None) else None
                ),
            })  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def run_lowrank(dense: TinyGPT, chars: Chars, calib: list[torch.Tensor], args) -> dict:
    common = dict(method="svd", exclude=("@last",), round_to=8, calibration_batches=len(calib))
    settings = {
        "same_ranks": dict(rank="params", params_ratio=args.params_ratio),
        "budget": dict(rank="budget", budget_on="params", params_ratio=args.params_ratio),
    }
    models, rows = {}, []
    for setting, rule in settings.items():
        for whitening in ("none", "asvd", "svd-llm"):
            model = copy.deepcopy(dense)
            result = ns.compress_(
                model,
                LowRank(whitening=whitening, **common, **rule),
                example_inputs=calib,
                measure=False,
            )
            summary = result.summary.to_dict()
            rows.append({
                "setting": setting, "whitening": whitening,
                "perplexity": round(perplexity(model, chars, args.ctx, args.eval_windows), 4),
                "params": count_params(model), "linear_params_before": summary["params_before"],
                "linear_params_after": summary["params_after"],
                "ranks": {r["name"]: r["ranks"] for r in summary["layers"]},
            })  # fmt: skip
            print(rows[-1], flush=True)
            models[(setting, whitening)] = model
    # latency: ranks (so speed) are the same for every whitening under "same_ranks"
    latency = {}
    with timing_lock():
        torch.set_num_threads(args.threads)
        for batch in args.latency_batches:
            x = chars.batch(chars.test, batch, args.ctx - 1, torch.Generator().manual_seed(1))
            fns = {"dense": dense.eval(), "same_ranks": models[("same_ranks", "svd-llm")].eval(),
                   "budget_svd-llm": models[("budget", "svd-llm")].eval()}  # fmt: skip
            with torch.inference_mode():
                stats = interleaved(
                    {k: (lambda m=m, x=x: m(x)) for k, m in fns.items()},
                    rounds=args.rounds,
                    runs=args.runs,
                )
            latency[f"batch{batch}x{args.ctx}"] = {
                k: {**v, "speedup_vs_dense": round(stats["dense"]["median"] / v["median"], 3)}
                for k, v in stats.items()
            }
            print(batch, latency[f"batch{batch}x{args.ctx}"], flush=True)
    return {"rows": rows, "eager_latency_ms": latency}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--calib", type=int, default=64, help="calibration sequences (of --ctx tokens)")
    p.add_argument("--calib-batch", type=int, default=16)
    p.add_argument("--eval-windows", type=int, default=128)
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.5, 0.6])
    p.add_argument("--params-ratio", type=float, default=0.5)
    p.add_argument("--latency-batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument(
        "--parts", nargs="+", default=["pruning", "lowrank"], choices=["pruning", "lowrank"]
    )
    p.add_argument("--checkpoint", type=Path, default=Path(tempfile.gettempdir()) / "nnshrink_tinygpt.pt",
                   help="reuse the trained model from here if it was trained with the same flags")  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    chars = Chars(load_corpus())
    model = TinyGPT(len(chars.vocab), ctx=args.ctx)
    key = {
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "ctx": args.ctx,
        "seed": args.seed,
        "vocab": len(chars.vocab),
    }
    t0 = time.perf_counter()
    if args.checkpoint.exists() and torch.load(args.checkpoint)["key"] == key:
        saved = torch.load(args.checkpoint)
        model.load_state_dict(saved["state"])
        losses, train_seconds = saved["losses"], saved["seconds"]
    else:
        losses = train(model, chars, args.steps, args.ctx, args.batch, args.lr, args.seed)
        train_seconds = time.perf_counter() - t0
        torch.save(
            {"key": key, "state": model.state_dict(), "losses": losses, "seconds": train_seconds},
            args.checkpoint,
        )
    model.eval()
    g = torch.Generator().manual_seed(args.seed + 1)
    seqs = chars.batch(chars.train, args.calib, args.ctx - 1, g)  # ctx tokens each
    calib = list(seqs.split(args.calib_batch))
    dense_ppl = perplexity(model, chars, args.ctx, args.eval_windows)
    print(
        f"dense perplexity {dense_ppl:.4f} after {args.steps} steps ({train_seconds:.0f} s)",
        flush=True,
    )

    out = {
        "benchmark": "oneshot_pruning",
        "environment": environment(args.seed),
        "protocol": {
            "model": f"TinyGPT char LM: 4 layers, d=128, 4 heads, FFN 512, context {args.ctx}, untied head",
            "corpus": "Debian fortunes (printable ASCII), last 10% held out",
            "vocab": len(chars.vocab), "train_tokens": len(chars.train), "test_tokens": len(chars.test),
            "eval_tokens": args.eval_windows * args.ctx,
            "calibration": f"{args.calib} random training windows of {args.ctx} tokens, batches of {args.calib_batch}",
            "pruned_layers": "every Linear of the blocks (q, k, v, o, fc1, fc2); LM head and embeddings dense",
            "fine_tuning": "none (one-shot)",
            "scaled_down": "papers: LLaMA-7B, 128 x 2048 C4 tokens, WikiText-2; here a 0.8M-parameter char LM",
            "flags": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        },
        "dense": {"perplexity": round(dense_ppl, 4), "params": count_params(model), "train_losses": losses,
                  "train_seconds": round(train_seconds, 1)},
    }  # fmt: skip
    if "pruning" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            out["dense"]["nns_file_bytes"] = ns.save(model, Path(tmp) / "dense.nns").file_bytes
        out["pruning"] = run_pruning(model, chars, calib, args)
    if "lowrank" in args.parts:
        out["lowrank"] = run_lowrank(model, chars, calib, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
