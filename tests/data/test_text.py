"""Offline corpora, splits, the byte tokenizer and LM / sentence batching."""

from __future__ import annotations

import pytest
import torch

from nnshrink.data.readers import DataNotFoundError
from nnshrink.data.text import (
    ByteTokenizer,
    LMBatches,
    corpus_entries,
    corpus_sentences,
    corpus_split,
    corpus_text,
    fortunes_dir,
    parse_fortunes,
    sentence_batches,
    shipped_sentences,
)
from nnshrink.data.wordpiece import WordPieceTokenizer


def _has_fortunes() -> bool:
    try:
        fortunes_dir()
    except DataNotFoundError:
        return False
    return True


needs_fortunes = pytest.mark.skipif(not _has_fortunes(), reason="apt-get install fortunes")


def test_parse_fortunes_splits_entries_and_tidies_whitespace():
    text = "First\tone.\n%\n\n%\nSecond\n  with   columns\n%   \nThird%not a separator\n"
    assert parse_fortunes(text) == ["First one.", "Second\nwith columns", "Third%not a separator"]


def test_splits_partition_the_entries_and_are_seeded():
    entries = corpus_entries("tiny")
    parts = {s: corpus_split("tiny", s) for s in ("train", "val", "test")}
    assert sorted(sum(parts.values(), [])) == sorted(entries)  # disjoint and complete
    assert [len(p) for p in parts.values()] == [22, 1, 1]
    assert corpus_split("tiny", "train") == parts["train"]
    assert corpus_split("tiny", "train", seed=1) != parts["train"]
    assert corpus_text("tiny", "train") == "\n\n".join(parts["train"])
    with pytest.raises(ValueError, match="split must be"):
        corpus_split("tiny", "dev")
    with pytest.raises(KeyError, match="unknown corpus"):
        corpus_entries("wikipedia")


def test_missing_corpus_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("NNSHRINK_FORTUNES", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="apt-get install fortunes"):
        corpus_entries("fortunes")
    (tmp_path / "jokes").write_text("One.\n%\nTwo.\n")
    (tmp_path / "jokes.dat").write_bytes(b"\0\1")  # index files are skipped
    assert corpus_entries("fortunes") == ["One.", "Two."]


@needs_fortunes
def test_fortunes_corpus_is_large_and_split_without_overlap():
    train, test = corpus_split("fortunes", "train"), corpus_split("fortunes", "test")
    assert len(train) > 10_000 and len(test) > 500
    assert len(set(train) & set(test)) <= 10  # only entries the packages hold twice
    assert len(corpus_text("fortunes", "train").encode()) > 2_000_000


def test_byte_tokenizer_round_trips_any_text():
    tok = ByteTokenizer()
    text = "naïve café ☕ %\n"
    ids = tok.encode(text)
    assert ids.dtype == torch.long and ids.max() < tok.vocab_size
    assert ids.tolist() == list(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_lm_batches_tile_in_order_and_shift_targets():
    tokens = torch.arange(100)
    batches = list(LMBatches(tokens, seq_len=8, batch_size=3))
    assert len(batches) == len(LMBatches(tokens, 8, 3)) == 4  # 12 windows of 8 (+1 target)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.flatten().tolist() == list(range(96))  # every token once, in order
    torch.testing.assert_close(y, x + 1)
    with pytest.raises(ValueError, match="fewer than one batch"):
        LMBatches(torch.arange(10), seq_len=8, batch_size=2)


def test_lm_batches_shuffle_is_seeded_per_epoch():
    tokens = torch.arange(1000)
    loader = LMBatches(tokens, 16, 4, shuffle=True, num_batches=5, seed=3)
    first = [x.clone() for x, _ in loader]
    assert len(first) == 5 and all(x.shape == (4, 16) for x in first)
    assert all(torch.equal(row[1:] - row[:-1], torch.ones(15, dtype=torch.long))
               for x in first for row in x)  # fmt: skip
    assert all(torch.equal(a, b) for a, (b, _) in zip(first, loader))
    loader.set_epoch(1)
    assert not all(torch.equal(a, b) for a, (b, _) in zip(first, loader))


def test_sentences_shipped_and_batched():
    sentences = shipped_sentences()
    assert len(sentences) == 330 == len(set(sentences))
    assert all(10 < len(s) < 200 and "\n" not in s for s in sentences)
    tok = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b"])
    batches = sentence_batches(tok, ["a b", "a", "b b b"], 2, max_length=6, padding="max_length")
    assert [tuple(b["input_ids"].shape) for b in batches] == [(2, 6), (1, 6)]
    assert batches[0]["attention_mask"].sum(1).tolist() == [4, 3]


def test_corpus_sentences_keep_lengths_in_range():
    got = corpus_sentences(["short", "a\nlonger entry here", "x" * 50], min_chars=10, max_chars=40)
    assert got == ["a longer entry here"]
