"""Tokenizers for xlmr models, on the Rust `tokenizers` library (batch encoding never loops in Python).

`Tokenizer.from_pretrained(dir)` reads, in this order, `tokenizer.json`, an XLM-R `sentencepiece.bpe.model`
(fairseq ids) or a BERT `vocab.txt`. The slow formats are converted to a `tokenizers` backend on load.
Encoding returns what the model needs: ids, attention mask, word ids (which input word each subword comes
from, as in transformers) and character offsets.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import XlmrError
from .io import atomic_write, atomic_write_bytes, atomic_write_text

TOKENIZER_FILE = "tokenizer.json"
SENTENCEPIECE_FILE = "sentencepiece.bpe.model"
VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_MAP_FILE = "special_tokens_map.json"

# Special-token roles (transformers' names) and the token names tried when tokenizer_config.json is silent.
ROLES = {"bos_token": ("<s>",), "eos_token": ("</s>",), "unk_token": ("<unk>", "[UNK]"),
         "sep_token": ("</s>", "[SEP]"), "pad_token": ("<pad>", "[PAD]"), "cls_token": ("<s>", "[CLS]"),
         "mask_token": ("<mask>", "[MASK]")}
# tokenizer_config.json keys that name ids of the file they came with; never written back.
STALE_KEYS = ("added_tokens_decoder", "unk_id", "is_local", "local_files_only", "name_or_path")


class Batch:
    """A batch of encodings, padded to the longest row (lists, not tensors: callers choose).

    input_ids, attention_mask: (B, T) lists. word_ids (None at special tokens and padding), offsets
    ((start, end) characters; (0, 0) at padding) and token_type_ids are built from the Rust encodings on
    first use, since converting offsets costs more than the ids. truncated: per row, tokens cut off.
    """

    def __init__(self, input_ids: list[list[int]], attention_mask: list[list[int]],
                 word_ids: list[list[int | None]] | None = None, offsets: list[list[tuple[int, int]]] | None = None,
                 token_type_ids: list[list[int]] | None = None, truncated: list[int] | None = None, *,
                 encodings=None):
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        self.truncated = truncated if truncated is not None else [0] * len(input_ids)
        self._encodings = encodings
        self._word_ids, self._offsets, self._token_type_ids = word_ids, offsets, token_type_ids

    def _field(self, name: str, have):
        if have is None and self._encodings is not None:
            have = [getattr(e, name) for e in self._encodings]
        return have if have is not None else []

    @property
    def word_ids(self) -> list[list[int | None]]:
        self._word_ids = self._field("word_ids", self._word_ids)
        return self._word_ids

    @property
    def offsets(self) -> list[list[tuple[int, int]]]:
        self._offsets = self._field("offsets", self._offsets)
        return self._offsets

    @property
    def token_type_ids(self) -> list[list[int]]:
        self._token_type_ids = self._field("type_ids", self._token_type_ids)
        return self._token_type_ids

    def __len__(self) -> int:
        return len(self.input_ids)

    def __repr__(self) -> str:
        width = len(self.input_ids[0]) if self.input_ids else 0
        return f"Batch({len(self)} rows x {width} tokens, truncated={sum(1 for t in self.truncated if t)} rows)"

    def tensors(self):
        """(input_ids, attention_mask, token_type_ids) as torch.long tensors."""
        import torch

        return (torch.tensor(self.input_ids, dtype=torch.long), torch.tensor(self.attention_mask, dtype=torch.long),
                torch.tensor(self.token_type_ids, dtype=torch.long))


class Tokenizer:
    """Wraps a `tokenizers.Tokenizer` with the model's special tokens.

    Every role in ROLES is an attribute (`cls_token`) with its id (`cls_token_id`), None when absent.
    `config` holds the other tokenizer_config.json keys (do_lower_case, model_max_length...) for `save`;
    `sentencepiece_model` the bytes of the SentencePiece model this tokenizer was built from, if any.
    """

    def __init__(self, backend, pad_token: str, mask_token: str | None = None, *, config: dict | None = None,
                 sentencepiece_model: bytes | None = None, **special_tokens: str | None):
        unknown = set(special_tokens) - set(ROLES)
        if unknown:
            raise TypeError(f"unknown special-token roles: {', '.join(sorted(unknown))}")
        self.backend = backend
        self.backend.no_padding()
        self.backend.no_truncation()
        self.config = dict(config or {})
        self.sentencepiece_model = sentencepiece_model
        tokens = {**special_tokens, "pad_token": pad_token, "mask_token": mask_token}
        for role in ROLES:
            token = tokens.get(role)
            setattr(self, role, token)
            setattr(self, role + "_id", self._id(token) if token else None)

    def _id(self, token: str) -> int:
        i = self.backend.token_to_id(token)
        if i is None:
            raise XlmrError(f"tokenizer has no token {token!r}")
        return i

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load tokenizer.json, else sentencepiece.bpe.model (XLM-R), else vocab.txt (BERT) from a directory.

        `path` may also name one of those files directly, or be `multilingual-e5-small`.
        """
        from tokenizers import Tokenizer as Backend

        from .checkpoint import DEFAULT_CHECKPOINT, resolve
        from .tokenizer_files import bert_backend_from_vocab, xlmr_backend_from_sentencepiece

        path = Path(path)
        if str(path) == DEFAULT_CHECKPOINT:  # the offline default's tokenizer (see checkpoint.resolve)
            path = resolve(path)
        directory, chosen = (path.parent, path) if path.is_file() else (path, None)
        if not directory.is_dir():
            raise XlmrError(f"{path}: no such tokenizer directory")
        config = _read_config(directory)
        candidates = [chosen] if chosen else [directory / n for n in (TOKENIZER_FILE, SENTENCEPIECE_FILE, VOCAB_FILE)]
        file = next((f for f in candidates if f.is_file()), None)
        if file is None:
            raise XlmrError(f"{directory}: no {TOKENIZER_FILE}, {SENTENCEPIECE_FILE} or {VOCAB_FILE}")
        spm_bytes = None
        if file.suffix == ".model":
            backend, spm_bytes = xlmr_backend_from_sentencepiece(file)
        elif file.suffix == ".txt":
            backend = bert_backend_from_vocab(file, config)
        else:
            try:
                backend = Backend.from_file(str(file))
            except Exception as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise XlmrError(f"{file}: not a valid tokenizer file ({first[:200]})") from None
        return cls(backend, config=config, sentencepiece_model=spm_bytes, **_special_tokens(directory, backend, config))

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def special_tokens(self) -> dict[str, str]:
        """role -> token for the roles this tokenizer has."""
        return {role: getattr(self, role) for role in ROLES if getattr(self, role)}

    @property
    def all_special_ids(self) -> list[int]:
        return sorted({getattr(self, role + "_id") for role in self.special_tokens})

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str | None]:
        return [self.backend.id_to_token(i) for i in ids]

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int | None]:
        return [self.backend.token_to_id(t) for t in tokens]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def encode(self, texts, pairs=None, is_pretokenized: bool = False, max_length: int | None = 512) -> Batch:
        """Encode a batch: `texts` is a list of strings, or of word lists when `is_pretokenized`.
        A single string (a single word list when `is_pretokenized`) is one text, a batch of one row,
        as in transformers.

        `pairs` (one per text) makes sentence pairs. Rows longer than `max_length` are
        truncated and `Batch.truncated` says by how many tokens.
        """
        texts, pairs = as_batch(texts, pairs, is_pretokenized)
        inputs = texts if pairs is None else list(zip(texts, pairs))
        backend = self.backend
        # Truncate and pad in Rust (in parallel); reset afterwards so `backend` stays a plain tokenizer.
        if max_length:
            backend.enable_truncation(max_length)
        backend.enable_padding(pad_id=self.pad_token_id, pad_token=self.pad_token, pad_type_id=0)
        try:
            encs = backend.encode_batch(inputs, is_pretokenized=is_pretokenized, add_special_tokens=True)
            out = Batch([e.ids for e in encs], [e.attention_mask for e in encs], encodings=encs)
            width = len(out.input_ids[0]) if encs else 0
            # Only full rows of a batch as wide as max_length can have been cut: count those exactly.
            cut_rows = [i for i, m in enumerate(out.attention_mask) if m[-1]] if max_length and width >= max_length \
                else []
            if cut_rows:
                backend.no_truncation()
                backend.no_padding()
                full = backend.encode_batch([inputs[i] for i in cut_rows], is_pretokenized=is_pretokenized,
                                            add_special_tokens=True)
                for i, f in zip(cut_rows, full):
                    out.truncated[i] = len(f.ids) - width
        finally:
            backend.no_truncation()
            backend.no_padding()
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (and the SentencePiece
        model this tokenizer came from), each atomically; transformers' AutoTokenizer loads the result."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / TOKENIZER_FILE, lambda tmp: self.backend.save(tmp))
        kind = type(self.backend.model).__name__
        cfg = {k: v for k, v in self.config.items() if k not in STALE_KEYS}
        cfg.setdefault("tokenizer_class", {"Unigram": "XLMRobertaTokenizer", "WordPiece": "BertTokenizer"}
                       .get(kind, "PreTrainedTokenizerFast"))
        cfg.setdefault("model_max_length", 512)
        cfg.update(self.special_tokens)
        atomic_write_text(directory / CONFIG_FILE, json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(directory / SPECIAL_MAP_FILE, json.dumps(self.special_tokens, indent=2) + "\n")
        if self.sentencepiece_model is not None:
            atomic_write_bytes(directory / SENTENCEPIECE_FILE, self.sentencepiece_model)
        return directory


def as_batch(texts, pairs=None, is_pretokenized: bool = False) -> tuple[list, list | None]:
    """(texts, pairs) as lists with one item per text. A str (with `is_pretokenized`, a list of str:
    one sentence's words) is one text, never a batch of its characters (or words); pairs must
    match the texts one to one."""
    def one(x) -> bool:
        if is_pretokenized:
            return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(w, str) for w in x)
        return isinstance(x, str)

    if is_pretokenized and isinstance(texts, str):
        raise ValueError("is_pretokenized needs word lists, not a str")
    if one(texts):
        if pairs is not None and not one(pairs):
            raise ValueError("one text but a batch of pairs: give one pair per text")
        return [texts], (None if pairs is None else [pairs])
    texts = list(texts)
    if pairs is not None:
        if one(pairs):
            raise ValueError("a batch of texts but one pair: give one pair per text")
        pairs = list(pairs)
        if len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs: give one pair per text")
    return texts, pairs




def _read_config(directory: Path) -> dict:
    """tokenizer_config.json (or {}), checked to be a JSON object."""
    file = directory / CONFIG_FILE
    if not file.is_file():
        return {}
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise XlmrError(f"{file}: line {e.lineno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise XlmrError(f"{file}: not UTF-8 at byte {e.start}") from None
    if not isinstance(cfg, dict):
        raise XlmrError(f"{file}: expected a JSON object")
    return cfg


def _special_tokens(directory: Path, backend, cfg: dict) -> dict[str, str | None]:
    """Each role's token from tokenizer_config.json, else the usual XLM-R / BERT names the vocabulary has."""

    def name(role):
        value = cfg.get(role)
        if isinstance(value, dict):
            value = value.get("content")
        if value and backend.token_to_id(value) is not None:
            return value
        return next((c for c in ROLES[role] if backend.token_to_id(c) is not None), None)

    tokens = {role: name(role) for role in ROLES}
    if tokens["pad_token"] is None:
        raise XlmrError(f"{directory}: cannot find the padding token of this tokenizer")
    return tokens
