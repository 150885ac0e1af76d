"""Tokenizers for xlmr models, on the Rust `tokenizers` library (batch encoding never loops in Python).

`Tokenizer.from_pretrained(dir)` reads `tokenizer.json`. Encoding returns what the model needs:
ids, attention mask, word ids (which input word each subword comes from) and character offsets.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import XlmrError


@dataclass
class Batch:
    """A batch of encodings, padded to the longest row (lists, not tensors: callers choose)."""

    input_ids: list[list[int]]
    attention_mask: list[list[int]]
    word_ids: list[list[int | None]]
    offsets: list[list[tuple[int, int]]]
    token_type_ids: list[list[int]]
    truncated: list[int] = field(default_factory=list)  # per row: tokens cut off by truncation

    def tensors(self):
        """(input_ids, attention_mask, token_type_ids) as torch.long tensors."""
        import torch

        return (torch.tensor(self.input_ids, dtype=torch.long), torch.tensor(self.attention_mask, dtype=torch.long),
                torch.tensor(self.token_type_ids, dtype=torch.long))


class Tokenizer:
    """Wraps a `tokenizers.Tokenizer` with the model's special tokens."""

    def __init__(self, backend, pad_token: str, mask_token: str | None = None):
        self.backend = backend
        self.backend.no_padding()
        self.backend.no_truncation()
        self.pad_token = pad_token
        self.pad_token_id = self._id(pad_token)
        self.mask_token = mask_token
        self.mask_token_id = self._id(mask_token) if mask_token else None

    def _id(self, token: str) -> int:
        i = self.backend.token_to_id(token)
        if i is None:
            raise XlmrError(f"tokenizer has no token {token!r}")
        return i

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load `tokenizer.json` from a checkpoint directory."""
        from tokenizers import Tokenizer as Backend

        directory = Path(path)
        file = directory / "tokenizer.json"
        if not file.is_file():
            raise XlmrError(f"{directory}: no tokenizer.json")
        try:
            backend = Backend.from_file(str(file))
        except Exception as e:
            raise XlmrError(f"{file}: not a valid tokenizer file ({str(e).splitlines()[0][:200]})") from None
        pad, mask = _special_tokens(directory, backend)
        return cls(backend, pad, mask)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, texts, pairs=None, is_pretokenized: bool = False, max_length: int | None = 512) -> Batch:
        """Encode a batch: `texts` is a list of strings, or of word lists when `is_pretokenized`.

        `pairs` (same length as texts) makes sentence pairs. Rows longer than `max_length` are
        truncated and `Batch.truncated` says by how many tokens.
        """
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        if max_length:
            self.backend.enable_truncation(max_length)
        else:
            self.backend.no_truncation()
        encs = self.backend.encode_batch(inputs, is_pretokenized=is_pretokenized, add_special_tokens=True)
        width = max((len(e.ids) for e in encs), default=0)
        pad = self.pad_token_id
        out = Batch([], [], [], [], [], [])
        for e in encs:
            n = len(e.ids)
            fill = width - n
            out.input_ids.append(e.ids + [pad] * fill)
            out.attention_mask.append([1] * n + [0] * fill)
            out.word_ids.append(list(e.word_ids) + [None] * fill)
            out.offsets.append(list(e.offsets) + [(0, 0)] * fill)
            out.token_type_ids.append(list(e.type_ids) + [0] * fill)
            out.truncated.append(_cut(e))
        return out

    def save(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json and a tokenizer_config.json naming the special tokens."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / "tokenizer.json"))
        cfg = {"pad_token": self.pad_token, "mask_token": self.mask_token}
        (directory / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


def _cut(encoding) -> int:
    """Tokens dropped by truncation (overflow pieces repeat special tokens; count content only)."""
    return sum(sum(1 for s in o.special_tokens_mask if not s) for o in encoding.overflowing)


def _special_tokens(directory: Path, backend) -> tuple[str, str | None]:
    """Pad and mask tokens from tokenizer_config.json, else the usual XLM-R / BERT names."""
    cfg_file = directory / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}

    def name(key, *candidates):
        value = cfg.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if value and backend.token_to_id(value) is not None:
            return value
        return next((c for c in candidates if backend.token_to_id(c) is not None), None)

    pad = name("pad_token", "<pad>", "[PAD]")
    if pad is None:
        raise XlmrError(f"{directory}: cannot find the padding token of this tokenizer")
    return pad, name("mask_token", "<mask>", "[MASK]")
