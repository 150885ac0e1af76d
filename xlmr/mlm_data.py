"""The MLM pretraining data: a packed, alpha-sampled, resumable stream over a prepared directory,
fixed held-out sequences, and BERT-style masking.

Stream. Global sequence k (k = 0, 1, 2, ...) takes its language from a seeded draw with the alpha
probabilities (draws for k come from `numpy.random.Generator(PCG64([seed, k // 4096]))`). Each
language's training documents form one token stream, `<s> doc </s> <s> doc </s> ...` (the
tokenizer's own specials: `[CLS] doc [SEP]` for BERT), and the j-th sequence drawn for a language is
tokens [j*T, (j+1)*T) of that stream, wrapping around at its end (an "epoch" of that language).
So sequences are full length with no padding, documents keep their order and may be cut at sequence
edges. Step s uses sequences [s*B, (s+1)*B); rank r of W gets rows r::W of it. The position is
(sequence number, sequences taken per language): global, so a run resumes exactly on any number of
processes, and the same step gives the same global batch for any W.

Masking is a pure function of (seed, global sequence number, tokens) through `mask_rows`, so it is
also independent of W and needs no RNG state in checkpoints.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .corpus import read_manifest, sampling_probs
from .errors import XlmrError

DRAW_BLOCK = 4096  # language draws per RNG block
MAX_OPEN_SHARDS = 256


class PreparedCorpus:
    """A prepared directory opened read-only; shards are memory-mapped on first use."""

    def __init__(self, path):
        self.path = Path(path)
        self.manifest = m = read_manifest(self.path)
        self.dtype = np.dtype(m["dtype"])
        self.languages: list[str] = list(m["languages"])
        self.pad_token_id: int = m["pad_token_id"]
        self._shards: list[list[dict]] = []
        self._ends: list[np.ndarray] = []  # per language: cumulative training tokens per shard
        for lang in self.languages:
            shards = m["languages"][lang]["shards"]
            for s in shards:
                self._check(s)
            self._shards.append(shards)
            self._ends.append(np.cumsum([s["train_tokens"] for s in shards], dtype=np.int64))
        self.train_tokens = np.array([e[-1] if len(e) else 0 for e in self._ends], dtype=np.int64)
        self._maps: OrderedDict[str, np.memmap] = OrderedDict()  # LRU: each mmap holds a file descriptor

    def _check(self, shard: dict) -> None:
        for ext, want in (("bin", shard["tokens"] * self.dtype.itemsize), ("idx", (shard["docs"] + 1) * 8)):
            f = self.path / f"{shard['name']}.{ext}"
            size = f.stat().st_size if f.is_file() else None
            if size != want:
                raise XlmrError(f"{f}: {'missing' if size is None else f'{size} bytes'}, manifest says {want} "
                                f"bytes (rerun `xlmr data prepare`)")

    def _map(self, name: str) -> np.memmap:
        if name in self._maps:
            self._maps.move_to_end(name)
        else:
            self._maps[name] = np.memmap(self.path / f"{name}.bin", dtype=self.dtype, mode="r")
            if len(self._maps) > MAX_OPEN_SHARDS:
                self._maps.popitem(last=False)
        return self._maps[name]

    def documents(self, lang: str, shard: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, offsets) of one shard as memmaps: document i is tokens[offsets[i]:offsets[i+1]]."""
        s = self._shards[self.languages.index(lang)][shard]
        return self._map(s["name"]), np.memmap(self.path / f"{s['name']}.idx", dtype=np.int64, mode="r")

    def read(self, lang: int, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of language `lang`'s training stream, wrapping at its end."""
        n = int(self.train_tokens[lang])
        out = np.empty(length, dtype=np.int64)
        ends, shards = self._ends[lang], self._shards[lang]
        start %= n
        filled = 0
        while filled < length:
            i = int(np.searchsorted(ends, start, side="right"))  # shard holding `start`
            first = int(ends[i]) - shards[i]["train_tokens"]
            take = min(length - filled, int(ends[i]) - start)
            out[filled:filled + take] = self._map(shards[i]["name"])[start - first:start - first + take]
            filled += take
            start = (start + take) % n
        return out

    def held_out(self, lang: int, limit: int) -> np.ndarray:
        """Up to `limit` tokens of a language's held-out documents, in shard order."""
        parts, total = [], 0
        for s in self._shards[lang]:
            n = min(s["tokens"] - s["train_tokens"], limit - total)
            if n > 0:
                parts.append(np.asarray(self._map(s["name"])[s["train_tokens"]:s["train_tokens"] + n], np.int64))
                total += n
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


class Sequences(NamedTuple):
    """One rank's rows of a global batch."""

    input_ids: torch.Tensor  # (B / W, T) int64
    index: torch.Tensor  # (B / W,) global sequence numbers: seed masking with these (mask_rows)
    language: torch.Tensor  # (B / W,) index into PackedStream.languages


class PackedStream:
    """Deterministic, resumable iterator of packed sequences; see the module docstring.

    `batch_size` is the global batch (all ranks); each `next()` returns this rank's rows of it.
    """

    def __init__(self, corpus, seq_len: int, batch_size: int, *, alpha: float = 0.3, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise XlmrError(f"batch size {batch_size} is not a multiple of the world size {world_size}")
        if not 0 <= rank < world_size:
            raise XlmrError(f"rank {rank} outside world size {world_size}")
        self.corpus = corpus if isinstance(corpus, PreparedCorpus) else PreparedCorpus(corpus)
        self.languages = self.corpus.languages
        self.seq_len, self.batch_size, self.alpha, self.seed = seq_len, batch_size, alpha, seed
        self.rank, self.world_size = rank, world_size
        self.probs = sampling_probs(self.corpus.train_tokens, alpha)
        if not self.probs.sum() > 0:
            raise XlmrError(f"{self.corpus.path}: no training tokens")
        self.sequence = 0  # global sequences consumed
        self.taken = np.zeros(len(self.languages), dtype=np.int64)  # sequences consumed per language
        self._block: tuple[int, np.ndarray] | None = None

    def draws(self, start: int, n: int) -> np.ndarray:
        """Language indices of global sequences [start, start + n)."""
        out = np.empty(n, dtype=np.int64)
        for j in range(n):
            b, i = divmod(start + j, DRAW_BLOCK)
            if self._block is None or self._block[0] != b:
                rng = np.random.Generator(np.random.PCG64([self.seed, b]))
                self._block = (b, rng.choice(len(self.probs), size=DRAW_BLOCK, p=self.probs))
            out[j] = self._block[1][i]
        return out

    def __iter__(self):
        return self

    def __next__(self) -> Sequences:
        T, B, W, r = self.seq_len, self.batch_size, self.world_size, self.rank
        k0 = self.sequence
        langs = self.draws(k0, B)
        rows = []
        for j, lang in enumerate(langs):
            at = int(self.taken[lang])
            self.taken[lang] += 1
            if j % W == r:
                rows.append(self.corpus.read(int(lang), at * T, T))
        self.sequence += B
        return Sequences(torch.from_numpy(np.stack(rows)), torch.arange(k0 + r, k0 + B, W),
                         torch.from_numpy(langs[r::W].copy()))

    def state_dict(self) -> dict:
        """The exact position: global sequences consumed and sequences taken per language."""
        return {"sequence": self.sequence, "taken": dict(zip(self.languages, self.taken.tolist())),
                "seed": self.seed, "alpha": self.alpha, "seq_len": self.seq_len}

    def load_state_dict(self, state: dict) -> None:
        for k in ("seed", "alpha", "seq_len"):
            if state[k] != getattr(self, k):
                raise XlmrError(f"data stream state has {k}={state[k]}, this run has {getattr(self, k)}")
        if set(state["taken"]) != set(self.languages):
            raise XlmrError(f"data stream state has languages {sorted(state['taken'])}, the prepared data has "
                            f"{self.languages}")
        self.sequence = int(state["sequence"])
        self.taken = np.array([state["taken"][n] for n in self.languages], dtype=np.int64)


def validation_set(corpus, seq_len: int, max_sequences: int = 16) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Fixed held-out sequences per language: {lang: (input_ids (N, T), attention_mask (N, T))}.

    Held-out documents are packed like training ones; a language with fewer than `seq_len` held-out
    tokens gets one right-padded row; one with none is left out.
    """
    corpus = corpus if isinstance(corpus, PreparedCorpus) else PreparedCorpus(corpus)
    out = {}
    for i, lang in enumerate(corpus.languages):
        toks = corpus.held_out(i, max_sequences * seq_len)
        n = len(toks) // seq_len
        if n:
            ids = torch.from_numpy(toks[:n * seq_len].reshape(n, seq_len).copy())
            out[lang] = (ids, torch.ones_like(ids))
        elif len(toks):
            ids = torch.full((1, seq_len), corpus.pad_token_id, dtype=torch.long)
            ids[0, :len(toks)] = torch.from_numpy(toks)
            out[lang] = (ids, (torch.arange(seq_len) < len(toks)).long()[None])
    return out


# ---------------------------------------------------------------------------------------------------
# Masking


def word_start_table(backend) -> torch.Tensor:
    """(V,) bool: piece i begins a word. WordPiece: no '##' prefix; SentencePiece: '▁' prefix;
    byte-level BPE: 'Ġ' prefix. Special tokens count as word starts."""
    vocab = backend.get_vocab(with_added_tokens=True)
    table = torch.zeros(max(vocab.values()) + 1, dtype=torch.bool)
    model = type(backend.model).__name__
    if model == "WordPiece":
        prefix = backend.model.continuing_subword_prefix
        starts = [i for t, i in vocab.items() if not t.startswith(prefix)]
    else:
        marker = "▁" if any(t.startswith("▁") for t in vocab) else "Ġ"
        starts = [i for t, i in vocab.items() if t.startswith(marker)]
    table[starts] = True
    table[list(backend.get_added_tokens_decoder())] = True
    return table


@dataclass(frozen=True)
class MaskVocab:
    """The token ids masking needs. `special_ids` are never masked nor drawn as random replacements."""

    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    word_start: torch.Tensor | None = None  # (V,) bool, for whole-word masking
    specials: torch.Tensor = field(init=False, repr=False)
    replacements: torch.Tensor = field(init=False, repr=False)  # (V - specials,) ids for the 10% random

    def __post_init__(self):
        specials = torch.tensor(sorted(set(self.special_ids)), dtype=torch.long)
        allowed = torch.ones(self.vocab_size, dtype=torch.bool)
        allowed[specials] = False
        object.__setattr__(self, "specials", specials)
        object.__setattr__(self, "replacements", allowed.nonzero().squeeze(1))

    @classmethod
    def from_tokenizer(cls, tok) -> "MaskVocab":
        """From an `xlmr.tokenizer.Tokenizer`: its mask id, special tokens and word starts."""
        if tok.mask_token_id is None:
            raise XlmrError("the tokenizer has no mask token: it cannot be used for MLM")
        specials = {i for i, t in tok.backend.get_added_tokens_decoder().items() if t.special}
        specials |= {tok.pad_token_id, tok.mask_token_id}
        return cls(tok.mask_token_id, tok.vocab_size, tuple(sorted(specials)), word_start_table(tok.backend))


class Masked(NamedTuple):
    input_ids: torch.Tensor  # (B, T) with [MASK] / random / kept tokens at the chosen positions
    positions: torch.Tensor  # (N,) ascending flat indices into B*T: pass as Model(..., positions=)
    targets: torch.Tensor  # (N,) original ids there

    def labels(self, ignore_index: int = -100) -> torch.Tensor:
        """(B, T) labels in the HF convention: the original id where masked, else `ignore_index`."""
        out = torch.full_like(self.input_ids, ignore_index)
        out.view(-1)[self.positions] = self.targets
        return out


def mask_tokens(input_ids: torch.Tensor, vocab: MaskVocab, generator: torch.Generator, prob: float = 0.15,
                whole_word: bool = False, word_starts: torch.Tensor | None = None) -> Masked:
    """BERT masking of a (B, T) batch: in each row floor(prob * n + u) of its n non-special tokens
    (u uniform: exactly prob on average) are chosen; 80% become the mask id, 10% a random non-special
    id, 10% stay. With `whole_word`, whole words are chosen in random order until the row's count is
    reached; `word_starts` (B, T) bool defaults to `vocab.word_start[input_ids]`.
    Deterministic given the generator's state (it draws one (B, 2T + 1) uniform tensor).
    """
    B, T = input_ids.shape
    draws = torch.rand(B, 2 * T + 1, generator=generator, dtype=torch.float64)
    return _mask(input_ids, vocab, draws, prob, whole_word, word_starts)


def _mask(input_ids, vocab, draws, prob, whole_word, word_starts) -> Masked:
    """Masking from uniform draws (B, 2T + 1): [:, 0] rounds the count, [:, 1:T+1] orders the tokens,
    [:, T+1:] picks mask / random (its fraction inside [0.8, 0.9) picks the id) / keep per token."""
    B, T = input_ids.shape
    eligible = ~torch.isin(input_ids, vocab.specials)  # (B, T)
    n_eligible = eligible.sum(1)
    count = torch.minimum(torch.floor(prob * n_eligible + draws[:, 0]).long(), n_eligible)  # (B,)
    scores, u = draws[:, 1:T + 1], draws[:, T + 1:]  # (B, T) each
    pos = torch.arange(T).expand(B, T)
    if whole_word:
        if word_starts is None:
            if vocab.word_start is None:
                raise XlmrError("whole-word masking needs word starts (MaskVocab.word_start)")
            word_starts = vocab.word_start[input_ids]
        prev = torch.cat([torch.zeros(B, 1, dtype=torch.bool), eligible[:, :-1]], 1)
        starts = eligible & (word_starts | ~prev)  # a word never spans a special token
        first = torch.where(starts, pos, 0).cummax(1).values  # (B, T) where each token's word begins
        key = scores.gather(1, first)  # the tokens of a word share one score, so sort together
    else:
        first, key = pos, scores
    order = key.masked_fill(~eligible, 2.0).argsort(dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, pos)  # rank[b, t]: place of token t in random order
    chosen = eligible & (rank.gather(1, first) < count[:, None])  # words whose first token ranks < count

    positions = chosen.flatten().nonzero().squeeze(1)  # (N,)
    targets = input_ids.flatten()[positions]
    u = u.flatten()[positions]
    n_rep = len(vocab.replacements)
    pick = ((u - 0.8) * 10 * n_rep).long().clamp(0, n_rep - 1)  # uniform id index when 0.8 <= u < 0.9
    new = torch.where(u < 0.8, torch.full_like(targets, vocab.mask_id),
                      torch.where(u < 0.9, vocab.replacements[pick], targets))
    out = input_ids.clone()
    out.view(-1)[positions] = new
    return Masked(out, positions, targets)


def row_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for one (run seed, global sequence number) pair."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]) >> 1


def mask_rows(input_ids: torch.Tensor, index: torch.Tensor, vocab: MaskVocab, seed: int, prob: float = 0.15,
              whole_word: bool = False, word_starts: torch.Tensor | None = None) -> Masked:
    """`mask_tokens` with row i's draws seeded by (seed, index[i]): the masks of a sequence do not
    depend on which rank or batch holds it, so W ranks together mask exactly like one process."""
    B, T = input_ids.shape
    draws = torch.empty(B, 2 * T + 1, dtype=torch.float64)
    for i in range(B):
        g = torch.Generator().manual_seed(row_seed(seed, int(index[i])))
        torch.rand(2 * T + 1, generator=g, dtype=torch.float64, out=draws[i])
    return _mask(input_ids, vocab, draws, prob, whole_word, word_starts)
