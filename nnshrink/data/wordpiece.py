"""BERT's WordPiece tokenizer in plain Python, read from a ``vocab.txt`` (no dependencies).

Matches Hugging Face's ``BertTokenizer`` / the ``tokenizers`` BERT pipeline for uncased models:
clean the text (drop control characters, map whitespace to spaces), put spaces around CJK
ideographs, lower-case and strip accents, split on whitespace and punctuation, then split each
word greedily into the longest vocabulary pieces (``##`` marks a continuation); a word with no
split (or longer than 100 characters) becomes ``[UNK]``. The test suite checks it against the
``tokenizers`` library on the shipped sentences.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import torch

MAX_WORD_CHARS = 100


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf")


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # BERT counts every non-alphanumeric ASCII symbol as punctuation ("$", "^", "`" too)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class WordPieceTokenizer:
    """Uncased BERT WordPiece tokenizer.

    Args:
        vocab: token strings in id order (line ``i`` of ``vocab.txt`` is id ``i``).
        lowercase: lower-case and strip accents (uncased models).
        max_length: longest encoded sequence, ``[CLS]`` and ``[SEP]`` included.

    Example:
        >>> tok = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "##s", ","])
        >>> tok.tokenize("Hello, worlds!")
        ['hello', ',', 'world', '##s', '[UNK]']
        >>> tok.encode(["Hello"], padding="max_length", max_length=4)["input_ids"].tolist()
        [[2, 4, 3, 0]]
    """

    def __init__(self, vocab: Sequence[str], *, lowercase: bool = True, max_length: int = 512):
        self.vocab = {token: i for i, token in enumerate(vocab)}
        missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in self.vocab]
        if missing:
            raise ValueError(f"vocabulary lacks the special tokens {missing}")
        self.lowercase = lowercase
        self.max_length = max_length
        self.pad_id = self.vocab["[PAD]"]
        self.unk_id = self.vocab["[UNK]"]
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, *, lowercase: bool = True, max_length: int = 512
    ) -> WordPieceTokenizer:
        """Read a BERT ``vocab.txt`` (one token per line)."""
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls(lines, lowercase=lowercase, max_length=max_length)

    def __len__(self) -> int:
        return len(self.vocab)

    def _words(self, text: str) -> list[str]:
        chars = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_cjk(cp):
                chars.append(f" {ch} ")
            else:
                chars.append(" " if _is_whitespace(ch) else ch)
        words = []
        for word in "".join(chars).split():
            if self.lowercase:
                word = word.lower()
                word = "".join(
                    c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn"
                )
            start = 0
            for i, ch in enumerate(word):
                if _is_punctuation(ch):
                    if start < i:
                        words.append(word[start:i])
                    words.append(ch)
                    start = i + 1
            if start < len(word):
                words.append(word[start:])
        return words

    def _pieces(self, word: str) -> list[str]:
        if len(word) > MAX_WORD_CHARS:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:  # no piece fits: the whole word is unknown
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of ``text`` (no special tokens)."""
        return [piece for word in self._words(text) for piece in self._pieces(word)]

    def ids(self, text: str, max_length: int | None = None) -> list[int]:
        """``[CLS] tokens [SEP]`` ids, truncated to ``max_length`` (default: the tokenizer's)."""
        limit = (max_length or self.max_length) - 2
        body = [self.vocab.get(t, self.unk_id) for t in self.tokenize(text)][:limit]
        return [self.cls_id, *body, self.sep_id]

    def encode(
        self,
        texts: Sequence[str],
        *,
        max_length: int | None = None,
        padding: str = "longest",
    ) -> dict[str, torch.Tensor]:
        """Encode a batch: ``{"input_ids", "attention_mask", "token_type_ids"}``, int64 ``(N, T)``.

        Args:
            texts: the sentences.
            max_length: truncate every sequence to this many tokens (special tokens included).
            padding: ``"longest"`` (pad to the longest sequence of the batch) or
                ``"max_length"`` (pad to ``max_length``: fixed shapes for timing and export).
        """
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        if isinstance(texts, str):
            raise TypeError("encode takes a list of sentences; wrap a single one in a list")
        max_length = max_length or self.max_length
        rows = [self.ids(t, max_length) for t in texts]
        width = max_length if padding == "max_length" else max(map(len, rows), default=0)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
