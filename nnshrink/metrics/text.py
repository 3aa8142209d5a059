"""Text-model metrics: perplexity of a causal LM, and embedding fidelity of a sentence encoder.

* :func:`perplexity`: ``exp`` of the mean next-token negative log-likelihood over every target
  token of the batches (accumulated in float64, so the order of batches does not matter).
* :func:`mean_pool`: the sentence embedding of sentence-transformers' ``Pooling`` module with
  ``pooling_mode_mean_tokens``: token embeddings averaged over the positions whose attention
  mask is 1 (padding excluded).
* :func:`embedding_fidelity`: the mean cosine similarity between a compressed model's sentence
  embeddings and the dense model's, sentence by sentence (1.0: identical directions).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.modules import as_input_tuple, eval_mode


def mean_pool(token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token embeddings over the unmasked positions (sentence-transformers' mean pooling).

    Args:
        token_embeddings: ``(N, T, D)`` last hidden states.
        attention_mask: ``(N, T)``, 1 for real tokens and 0 for padding.

    Returns:
        ``(N, D)`` sentence embeddings; ``sum(mask * emb) / max(sum(mask), 1e-9)`` as
        sentence-transformers computes it.

    Example:
        >>> emb = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [9.0, 9.0]]])
        >>> mean_pool(emb, torch.tensor([[1, 1, 0]]))
        tensor([[2., 1.]])
    """
    if token_embeddings.dim() != 3 or attention_mask.shape != token_embeddings.shape[:2]:
        raise ValueError(
            f"mean_pool: expected (N, T, D) embeddings and an (N, T) mask, got "
            f"{tuple(token_embeddings.shape)} and {tuple(attention_mask.shape)}"
        )
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    summed = (token_embeddings * mask).sum(dim=1)
    return summed / mask.sum(dim=1).clamp(min=1e-9)


def embedding_fidelity(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """Mean cosine similarity between matching rows of two ``(N, D)`` embedding matrices.

    Args:
        reference: the dense model's sentence embeddings.
        candidate: the compressed model's embeddings of the same sentences.

    Example:
        >>> ref = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> round(embedding_fidelity(ref, torch.tensor([[2.0, 0.0], [1.0, 1.0]])), 6)  # 1, 1/sqrt(2)
        0.853553
    """
    if reference.shape != candidate.shape or reference.dim() != 2:
        raise ValueError(
            f"embedding_fidelity: expected two (N, D) tensors of one shape, got "
            f"{tuple(reference.shape)} and {tuple(candidate.shape)}"
        )
    cos = F.cosine_similarity(reference.double(), candidate.double(), dim=1)
    return float(cos.mean())


def _call(model: Any, batch: Any) -> Any:
    if isinstance(batch, Mapping):
        return model(**batch)
    return model(*as_input_tuple(batch))


@torch.no_grad()
def encode(model: nn.Module | Any, batches: Iterable[Any]) -> torch.Tensor:
    """Run a sentence encoder over batches of inputs and stack its ``(N, D)`` outputs.

    Args:
        model: a module (run in eval mode) or any callable returning ``(N, D)`` tensors (e.g. an
            ONNX Runtime module).
        batches: dicts of keyword inputs (``{"input_ids", "attention_mask"}``) or tuples of
            positional inputs.

    Example:
        >>> encode(nn.Linear(3, 2), [torch.zeros(4, 3)]).shape
        torch.Size([4, 2])
    """
    context = eval_mode(model) if isinstance(model, nn.Module) else contextlib.nullcontext()
    with context:
        outs = [_as_tensor(_call(model, b)) for b in batches]
    if not outs:
        raise ValueError("encode: no batches given")
    return torch.cat(outs).float()


def _as_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.detach().cpu()
    if isinstance(out, list | tuple) and out:
        return _as_tensor(out[0])
    logits = getattr(out, "logits", None)
    if logits is not None:
        return logits.detach().cpu()
    raise TypeError(f"cannot read a tensor from a model output of type {type(out).__name__}")


@torch.no_grad()
def perplexity(
    model: nn.Module | Any,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    max_batches: int | None = None,
) -> float:
    """Perplexity of a causal LM: ``exp(mean NLL)`` over every target token.

    Args:
        model: maps ``(N, T)`` token ids to ``(N, T, V)`` logits (a tensor, or an output object
            with ``.logits`` such as Hugging Face's); modules run in eval mode.
        batches: ``(inputs, targets)`` pairs of ``(N, T)`` ids, targets being the inputs shifted
            by one token (what :func:`nnshrink.data.text.lm_batches` yields).
        max_batches: stop after this many batches.

    Example:
        >>> class Uniform(nn.Module):
        ...     def forward(self, x):
        ...         return torch.zeros(*x.shape, 5)
        >>> x = torch.zeros(2, 4, dtype=torch.long)
        >>> round(perplexity(Uniform(), [(x, x)]), 6)  # a uniform guess over 5 tokens
        5.0
    """
    total, count = 0.0, 0
    context = eval_mode(model) if isinstance(model, nn.Module) else contextlib.nullcontext()
    with context:
        for i, (x, y) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            logits = _as_tensor(model(x))
            if logits.shape[:2] != y.shape:
                raise ValueError(
                    f"perplexity: logits {tuple(logits.shape)} do not match targets "
                    f"{tuple(y.shape)}; the model must return (N, T, vocab) logits"
                )
            nll = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).double(), y.reshape(-1), reduction="sum"
            )
            total += float(nll)
            count += y.numel()
    if count == 0:
        raise ValueError("perplexity: no target tokens in the batches")
    return math.exp(total / count)
