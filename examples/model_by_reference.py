"""User models by reference: a Hugging Face directory, edited, saved and rebuilt exactly.

A tiny BERT is written to a temporary directory (no download), loaded with
``from_reference("hf:DIR")``, one of its two attention heads is pruned by hand (the query, key
and value projections shrink, and so do ``num_attention_heads`` and ``all_head_size``), then the
model goes through a checkpoint and a ``.nns`` file. Both rebuild it from the directory's config
plus the recorded edits (replaced Linear layers and changed attributes), without ``trust_code``:
``hf:`` references only import ``transformers``. A factory reference (``module.path:callable``)
works the same way but needs ``factory=`` or ``trust_code=True`` at load time.

Run: python examples/model_by_reference.py   (needs the transformers extra)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

import nnshrink as ns


def prune_head_zero(model: nn.Module) -> None:
    """Keep attention head 0 of the first layer (its ``head_size`` query/key/value rows)."""
    att = model.encoder.layer[0].attention.self
    keep = att.attention_head_size
    for name in ("query", "key", "value"):
        old, new = getattr(att, name), nn.Linear(att.query.in_features, keep)
        new.weight.data, new.bias.data = (
            old.weight.data[:keep].clone(),
            old.bias.data[:keep].clone(),
        )
        setattr(att, name, new)
    dense = model.encoder.layer[0].attention.output.dense
    new = nn.Linear(keep, dense.out_features)
    new.weight.data, new.bias.data = dense.weight.data[:, :keep].clone(), dense.bias.data.clone()
    model.encoder.layer[0].attention.output.dense = new
    att.num_attention_heads, att.all_head_size = 1, keep


def main() -> None:
    import transformers

    tmp = Path(tempfile.mkdtemp())
    config = transformers.BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32)  # fmt: skip
    transformers.BertModel(config).save_pretrained(tmp / "bert")
    model = ns.models.from_reference(f"hf:{tmp / 'bert'}").eval()
    prune_head_zero(model)
    ids = torch.tensor([[5, 6, 7, 8]])
    expected = model(ids).last_hidden_state
    ns.save_checkpoint(model, tmp / "bert.safetensors")
    loaded, info = ns.load_checkpoint(tmp / "bert.safetensors")
    print("checkpoint edits:", sorted(info["architecture"]["hf"]["edits"]))
    assert torch.equal(loaded(ids).last_hidden_state, expected)
    ns.save(model, tmp / "bert.nns")
    again = ns.load(tmp / "bert.nns")
    assert again.encoder.layer[0].attention.self.num_attention_heads == 1
    assert torch.equal(again(ids).last_hidden_state, expected)
    print("rebuilt exactly from hf:DIR + edits, in both formats")


if __name__ == "__main__":
    main()
