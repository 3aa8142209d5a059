"""Offline text: corpora that install without a network, a byte tokenizer, and token batching.

Corpora (read from disk only):

* ``"fortunes"``: Debian's ``fortunes`` and ``fortunes-min`` packages (about 2.6 MB of English
  quotations, jokes and verse; ``apt-get install fortunes``, which ``make data`` runs), read from
  ``/usr/share/games/fortunes`` or ``$NNSHRINK_FORTUNES``. Debian ships them in ``main`` under
  the fortune-mod BSD licence; we read them at run time and never redistribute them.
* ``"tiny"``: two dozen entries written for nnshrink and shipped with it (unit tests, docs).

Entries (one fortune each) are shuffled with a fixed seed and cut into ``train`` / ``val`` /
``test`` splits (90 / 5 / 5 % of the entries), so the splits never share an entry.
:func:`shipped_sentences` gives the 330 sentences used to measure sentence-embedding fidelity.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .readers import DataNotFoundError

CORPORA = ("fortunes", "tiny")
SPLITS = ("train", "val", "test")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNES_ENV = "NNSHRINK_FORTUNES"
FORTUNES_HINT = (
    "install it with: apt-get install fortunes  (or `make data`; or set NNSHRINK_FORTUNES to a "
    "folder of fortune files, entries separated by lines holding '%')"
)
# pictures, not text
_SKIPPED_FILES = {"ascii-art"}
_SHIPPED = Path(__file__).parent / "corpora"
_SPLIT_FRACTIONS = {"train": (0.0, 0.9), "val": (0.9, 0.95), "test": (0.95, 1.0)}


def parse_fortunes(text: str) -> list[str]:
    """Split a fortune file into entries (separated by lines holding ``%``), whitespace tidied.

    Runs of spaces and tabs (column alignment in the files) become one space; line breaks stay.

    Example:
        >>> parse_fortunes("One.\\n%\\nTwo\\t\\tlines\\nhere.\\n%\\n")
        ['One.', 'Two lines\\nhere.']
    """
    entries = []
    for chunk in re.split(r"^%[ \t]*$", text, flags=re.M):
        lines = [re.sub(r"[ \t]+", " ", line).strip() for line in chunk.strip("\n").split("\n")]
        entry = "\n".join(lines).strip()
        if entry:
            entries.append(entry)
    return entries


def fortunes_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder of fortune files: ``root``, ``$NNSHRINK_FORTUNES`` or Debian's location."""
    folder = Path(root or os.environ.get(FORTUNES_ENV) or FORTUNES_DIR)
    if not folder.is_dir() or not _fortune_files(folder):
        raise DataNotFoundError(f"fortunes corpus not found in {folder}; {FORTUNES_HINT}")
    return folder


def _fortune_files(folder: Path) -> list[Path]:
    # the packages hold each file three times: text, a .dat index, and a .u8 symlink
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.is_symlink() and not p.suffix and p.name not in _SKIPPED_FILES
    )


def corpus_entries(name: str = "fortunes", root: str | os.PathLike | None = None) -> list[str]:
    """Every entry of a corpus, files in name order.

    Args:
        name: ``"fortunes"`` or ``"tiny"``.
        root: folder of fortune files (``"fortunes"`` only).

    Example:
        >>> len(corpus_entries("tiny"))
        24
    """
    if name == "tiny":
        return parse_fortunes((_SHIPPED / "tiny.txt").read_text(encoding="utf-8"))
    if name == "fortunes":
        entries = []
        for path in _fortune_files(fortunes_dir(root)):
            entries += parse_fortunes(path.read_text(encoding="utf-8", errors="replace"))
        return entries
    raise KeyError(f"unknown corpus {name!r}; choose from {CORPORA}")


def corpus_split(
    name: str = "fortunes",
    split: str = "train",
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
) -> list[str]:
    """The entries of one split: shuffled with ``seed``, then cut 90 / 5 / 5 %.

    Example:
        >>> len(corpus_split("tiny", "train")), len(corpus_split("tiny", "test"))
        (22, 1)
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    entries = corpus_entries(name, root)
    random.Random(seed).shuffle(entries)
    lo, hi = _SPLIT_FRACTIONS[split]
    return entries[round(lo * len(entries)) : round(hi * len(entries))]


def corpus_text(
    name: str = "fortunes",
    split: str = "train",
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
) -> str:
    """One split as a single string, entries separated by a blank line.

    Example:
        >>> len(corpus_text("tiny", "train").split("\\n\\n"))
        22
    """
    return "\n\n".join(corpus_split(name, split, root=root, seed=seed))


def corpus_sentences(
    entries: Sequence[str], *, min_chars: int = 20, max_chars: int = 300
) -> list[str]:
    """Entries turned into one-line texts of ``min_chars`` to ``max_chars`` characters.

    Line breaks become spaces; entries outside the length range are dropped (a transfer set or
    calibration set for sentence encoders).

    Example:
        >>> corpus_sentences(["Too short.", "A line that is long enough\\nto keep."])
        ['A line that is long enough to keep.']
    """
    out = []
    for entry in entries:
        line = " ".join(entry.split())
        if min_chars <= len(line) <= max_chars:
            out.append(line)
    return out


def shipped_sentences() -> list[str]:
    """The 330 sentences shipped with nnshrink for embedding-fidelity measurements.

    Example:
        >>> len(shipped_sentences())
        330
    """
    text = (_SHIPPED / "sentences.txt").read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line.strip()]


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocabulary 256): nothing to fit, nothing out of vocabulary.

    Example:
        >>> tok = ByteTokenizer()
        >>> tok.encode("hé").tolist(), tok.decode(tok.encode("hé"))
        ([104, 195, 169], 'hé')
    """

    vocab_size = 256

    def encode(self, text: str) -> torch.Tensor:
        """``(len(bytes),)`` int64 token ids."""
        return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Text from ids (invalid UTF-8 sequences become U+FFFD)."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return bytes(values).decode("utf-8", errors="replace")


class LMBatches:
    """``(inputs, targets)`` batches of ``(batch_size, seq_len)`` windows of a token stream.

    ``targets`` are the inputs shifted by one token. With ``shuffle=False`` the windows tile the
    stream in order without overlap (every token is a target once: evaluation); with
    ``shuffle=True`` each epoch draws ``num_batches`` batches of windows at random offsets
    (training), reseeded per epoch through :meth:`set_epoch` (as :func:`nnshrink.train.fit`
    calls it).

    Args:
        tokens: 1-D token ids.
        seq_len: tokens per window.
        batch_size: windows per batch.
        shuffle: random windows instead of consecutive ones.
        num_batches: batches per epoch (default: as many as tile the stream once).
        seed: seed of the random windows.

    Example:
        >>> batches = LMBatches(torch.arange(11), seq_len=4, batch_size=2)
        >>> [(x.tolist(), y.tolist()) for x, y in batches]
        [([[0, 1, 2, 3], [4, 5, 6, 7]], [[1, 2, 3, 4], [5, 6, 7, 8]])]
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        seq_len: int,
        batch_size: int,
        *,
        shuffle: bool = False,
        num_batches: int | None = None,
        seed: int = 0,
    ) -> None:
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be >= 1, got {seq_len}, {batch_size}")
        windows = (len(tokens) - 1) // seq_len
        if windows < batch_size:
            raise ValueError(
                f"{len(tokens)} tokens make {windows} windows of {seq_len}: fewer than one batch "
                f"of {batch_size}; use a shorter seq_len or batch_size"
            )
        self.tokens = tokens.long()
        self.seq_len, self.batch_size = seq_len, batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.num_batches = num_batches if num_batches is not None else windows // batch_size

    def set_epoch(self, epoch: int) -> None:
        """Reseed the random windows for ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        t = self.seq_len
        offsets_of_window = torch.arange(t + 1)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            high = len(self.tokens) - t
            for _ in range(self.num_batches):
                starts = torch.randint(0, high, (self.batch_size,), generator=gen)
                rows = self.tokens[starts[:, None] + offsets_of_window]
                yield rows[:, :-1], rows[:, 1:]
            return
        for b in range(self.num_batches):
            starts = (torch.arange(self.batch_size) + b * self.batch_size) * t
            rows = self.tokens[starts[:, None] + offsets_of_window]
            yield rows[:, :-1], rows[:, 1:]


def sentence_batches(
    tokenizer: Any,
    sentences: Sequence[str],
    batch_size: int,
    *,
    max_length: int = 128,
    padding: str = "longest",
) -> list[dict[str, torch.Tensor]]:
    """Sentences encoded in batches of ``batch_size`` (``tokenizer.encode`` per batch).

    Args:
        tokenizer: e.g. :class:`~nnshrink.data.wordpiece.WordPieceTokenizer`.
        sentences: the texts, in order.
        batch_size: sentences per batch.
        max_length: truncation length (special tokens included).
        padding: ``"longest"`` or ``"max_length"`` (see the tokenizer).

    Example:
        >>> from nnshrink.data.wordpiece import WordPieceTokenizer
        >>> tok = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])
        >>> [b["input_ids"].shape for b in sentence_batches(tok, ["a", "a a", "a"], 2)]
        [torch.Size([2, 4]), torch.Size([1, 3])]
    """
    return [
        tokenizer.encode(
            list(sentences[i : i + batch_size]), max_length=max_length, padding=padding
        )
        for i in range(0, len(sentences), batch_size)
    ]
