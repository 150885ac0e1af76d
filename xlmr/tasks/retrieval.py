"""Cross-lingual sentence retrieval and bitext mining on parallel text; bi-encoder training on pairs.

Data: a parallel file pair (Tatoeba's `xxx-eng.xxx` + `xxx-eng.eng`, line i of one translating line
i of the other; name either file or the directory holding the pair), or a `.tsv` of `source<TAB>target`
lines. Every example is one pair; a feature holds both sides, and a batch stacks the B sources over
the B targets as 2B model rows.

Evaluation embeds both sides (pooled, L2-normalised) and reports, per language:
  src2tgt / tgt2src: the share of sentences whose cosine nearest neighbour on the other side is their
  translation (Tatoeba's accuracy; src2tgt is XTREME's xxx->eng);
  margin_f1 / nn_f1: bitext mining F1 against the gold pairs (BUCC-style), keeping the pairs that are
  each other's best candidate by ratio margin (Artetxe & Schwenk 2019) or by plain cosine.
Training minimises the symmetric multiple-negatives ranking loss (each source against every target of
its batch, and back), or, with `teacher`, the mean squared error of both sides' embeddings to the
teacher's embedding of the source (Reimers & Gurevych 2020, "making monolingual embeddings
multilingual").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..embeddings import POOLINGS, normalize, pool
from ..errors import XlmrError
from .base import MAX_LENGTH, STRIDE, Feature, Task, lines_of, read_text

SCALE = 20.0  # inverse temperature of the in-batch softmax over cosines (sentence-transformers' default)
SEARCHES = ("auto", "exact", "faiss")


@dataclass
class PairExample:
    """A source sentence and its translation, with the file and line they came from."""

    source: str
    target: str
    path: str = ""
    line: int = 0


@dataclass
class PairFeature(Feature):
    """input_ids: the source row; pair_ids: the target row; teacher: the teacher's source embedding."""

    pair_ids: list[int] = field(default_factory=list)
    teacher: np.ndarray | None = None

    def __len__(self) -> int:
        return max(len(self.input_ids), len(self.pair_ids))


@dataclass
class RetrievalPrediction:
    """Best target of this source and best source of this target (by cosine), and the target each
    mining mode paired this source with (None: not mined)."""

    target: int
    source: int
    margin_match: int | None
    nn_match: int | None


def parallel_files(path: Path) -> tuple[Path, Path]:
    """(source, target) files: `A-B.A` pairs with `A-B.B`; a directory must hold exactly one such pair."""
    if path.is_dir():
        found = sorted(f for f in path.iterdir() if f.is_file() and _partner(f) is not None
                       and f.suffix[1:] == f.stem.split("-")[0])
        if len(found) != 1:
            raise XlmrError(f"{path}: expected one parallel pair of files named A-B.A and A-B.B, found "
                            f"{len(found)}")
        path = found[0]
    partner = _partner(path)
    if partner is None:
        raise XlmrError(f"{path}: a retrieval file is a .tsv of source<TAB>target lines, or one of a parallel "
                        f"pair named A-B.A and A-B.B (Tatoeba's deu-eng.deu and deu-eng.eng)")
    return path, partner


def _partner(path: Path) -> Path | None:
    codes, ext = path.stem.split("-"), path.suffix[1:]
    if len(codes) != 2 or ext not in codes:
        return None
    other = path.with_suffix("." + codes[1 - codes.index(ext)])
    return other if other.is_file() else None


def _sentences(path: Path) -> list[str]:
    lines = lines_of(read_text(path))
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise XlmrError(f"{path}:{n}: empty line; every line of a retrieval file holds one sentence")
    return lines


class Retrieval(Task):
    """Sentence embeddings of parallel text: retrieval accuracy and mining F1; bi-encoder training."""

    name = "retrieval"
    head = "base"  # the encoder's last hidden states (B, T, D), pooled here
    main_metric = "accuracy"  # mean of src2tgt and tgt2src
    columns = ("src2tgt", "tgt2src", "margin_f1", "nn_f1")
    text_predictions = False  # serve offers its embeddings, not /v1/predict

    def __init__(self, pooling: str = "mean", prefix: str = "", teacher: str = "", margin_k: int = 4,
                 search: str = "auto"):
        super().__init__()
        if pooling not in POOLINGS:
            raise XlmrError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
        if search not in SEARCHES:
            raise XlmrError(f"unknown search {search!r}; expected one of {', '.join(SEARCHES)}")
        self.pooling, self.prefix, self.teacher, self.margin_k, self.search = pooling, prefix, teacher, margin_k, search

    @classmethod
    def options_from(cls, cfg) -> dict:
        return {"pooling": cfg.pooling, "prefix": cfg.prefix, "teacher": cfg.teacher}

    def options(self) -> dict:
        return {"pooling": self.pooling, "prefix": self.prefix}

    # -- labels: pairs carry none ---------------------------------------------------------------

    def example_labels(self, example):
        return ()

    def build_labels(self, examples: list) -> list[str]:
        self.labels = []
        return self.labels

    # -- reading and encoding --------------------------------------------------------------------

    def read(self, path) -> list[PairExample]:
        """Parallel files (or a directory with one pair) or a source<TAB>target .tsv, validated."""
        p = Path(path)
        if p.suffix == ".tsv":
            return self._read_tsv(p)
        src, tgt = parallel_files(p)
        a, b = _sentences(src), _sentences(tgt)
        if len(a) != len(b):
            raise XlmrError(f"{src}: {len(a)} lines, but {tgt} has {len(b)}; line i of one must translate "
                            f"line i of the other")
        if not a:
            raise XlmrError(f"{src}: no sentences")
        return [PairExample(s, t, str(src), n) for n, (s, t) in enumerate(zip(a, b), 1)]

    def _read_tsv(self, p: Path) -> list[PairExample]:
        out = []
        for n, line in enumerate(lines_of(read_text(p)), 1):
            cells = line.split("\t")
            if len(cells) != 2 or not cells[0].strip() or not cells[1].strip():
                raise XlmrError(f"{p}:{n}: expected source<TAB>target, two non-empty fields; found "
                                f"{len(cells)} field(s)" + ("" if len(cells) != 2 else " with an empty one"))
            out.append(PairExample(cells[0], cells[1], str(p), n))
        if not out:
            raise XlmrError(f"{p}: no sentence pairs")
        return out

    def encode(self, examples, tokenizer, max_length=MAX_LENGTH, stride=STRIDE) -> list[PairFeature]:
        """One feature per pair: both sides tokenized (with the prefix), cut at max_length."""
        if not examples:
            return []
        src = tokenizer.encode([self.prefix + e.source for e in examples], max_length=max_length)
        tgt = tokenizer.encode([self.prefix + e.target for e in examples], max_length=max_length)
        teacher = self._teacher_vectors([e.source for e in examples]) if self.teacher else [None] * len(examples)
        return [PairFeature(s[:sum(ms)], None, i, pair_ids=t[:sum(mt)], teacher=v)
                for i, (s, ms, t, mt, v) in enumerate(zip(src.input_ids, src.attention_mask, tgt.input_ids,
                                                          tgt.attention_mask, teacher))]

    def _teacher_vectors(self, texts: list[str]) -> np.ndarray:
        from ..embeddings import Embedder

        return Embedder(self.teacher, self.pooling, self.prefix, device="cpu")(texts)

    def collate(self, features: list[PairFeature], pad_id: int) -> dict[str, torch.Tensor]:
        """(2B, T) rows: the B sources, then the B targets; `teacher` (B, D) when distilling."""
        rows = [f.input_ids for f in features] + [f.pair_ids for f in features]
        T = max(len(r) for r in rows)
        batch = {"input_ids": torch.tensor([r + [pad_id] * (T - len(r)) for r in rows], dtype=torch.long),
                 "attention_mask": torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows], dtype=torch.long)}
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        if features[0].teacher is not None:
            batch["teacher"] = torch.from_numpy(np.stack([f.teacher for f in features]))
        return batch

    def sentence_vectors(self, model, batch) -> torch.Tensor:
        """Pooled embeddings (2B, D) of a batch's rows."""
        h = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # (2B, T, D)
        return pool(h, batch["attention_mask"], self.pooling)

    def training_loss(self, model, batch) -> torch.Tensor:
        """Symmetric multiple-negatives ranking loss, or (teacher) MSE to the teacher's source vectors."""
        v = self.sentence_vectors(model, batch)
        B = v.shape[0] // 2
        if "teacher" in batch:
            t = batch["teacher"].to(v.device)
            return F.mse_loss(v[:B], t) + F.mse_loss(v[B:], t)
        a, b = normalize(v[:B]), normalize(v[B:])
        scores = a @ b.T * SCALE  # (B, B): source i against every target of the batch
        gold = torch.arange(B, device=v.device)
        return (F.cross_entropy(scores, gold) + F.cross_entropy(scores.T, gold)) / 2

    def unbatch(self, hidden, batch) -> list[np.ndarray]:
        """Per pair, its two pooled vectors (2, D): source and target."""
        v = pool(hidden, batch["attention_mask"].to(hidden.device), self.pooling).cpu().numpy()
        B = len(v) // 2
        return [np.stack([v[i], v[B + i]]) for i in range(B)]

    # -- retrieval and mining --------------------------------------------------------------------

    def _use_faiss(self) -> bool:
        from ..search import faiss_available

        if self.search == "faiss" and not faiss_available():
            raise XlmrError("search 'faiss' needs the faiss package (pip install faiss-cpu)")
        return self.search == "faiss" or (self.search == "auto" and faiss_available())

    def predict(self, outputs, features, examples) -> list[RetrievalPrediction]:
        from ..search import mine, nearest

        vecs = np.zeros((len(examples), 2, outputs[0].shape[-1]), np.float32)
        for f, out in zip(features, outputs):
            vecs[f.example] = out
        vecs /= np.maximum(np.linalg.norm(vecs, axis=-1, keepdims=True), 1e-12)
        src, tgt = vecs[:, 0], vecs[:, 1]
        faiss = self._use_faiss()
        fwd, bwd = nearest(src, tgt, faiss)
        by_margin = dict(mine(src, tgt, self.margin_k, True, faiss).pairs)
        by_nn = dict(mine(src, tgt, self.margin_k, False, faiss).pairs)
        return [RetrievalPrediction(int(fwd[i]), int(bwd[i]), by_margin.get(i), by_nn.get(i))
                for i in range(len(examples))]

    def metrics(self, examples, predictions) -> dict:
        from ..search import prf

        n = len(predictions)
        gold = {(i, i) for i in range(n)}
        out = {"accuracy": 0.0, "src2tgt": sum(p.target == i for i, p in enumerate(predictions)) / n,
               "tgt2src": sum(p.source == i for i, p in enumerate(predictions)) / n, "pairs": n}
        out["accuracy"] = (out["src2tgt"] + out["tgt2src"]) / 2
        for mode in ("margin", "nn"):
            mined = [(i, getattr(p, f"{mode}_match")) for i, p in enumerate(predictions)
                     if getattr(p, f"{mode}_match") is not None]
            for k, v in prf(mined, gold).items():
                out[f"{mode}_{k}"] = v
        return out

    def report(self, examples, predictions) -> str:
        m = self.metrics(examples, predictions)
        lines = [f"{m['pairs']} pairs; src2tgt {m['src2tgt']:.4f}, tgt2src {m['tgt2src']:.4f}"]
        for mode, what in (("margin", f"ratio margin, k={self.margin_k}"), ("nn", "cosine nearest neighbour")):
            lines.append(f"mining by {what}: precision {m[mode + '_precision']:.4f}, recall "
                         f"{m[mode + '_recall']:.4f}, F1 {m[mode + '_f1']:.4f}")
        wrong = [(e, examples[p.target]) for e, p in zip(examples, predictions) if examples[p.target] is not e][:5]
        lines += [f"  {e.source!r} -> {got.target!r} (gold {e.target!r})" for e, got in wrong]
        return "\n".join(lines)

    # -- raw text --------------------------------------------------------------------------------

    def example_from_text(self, text: str, pair: str | None = None):
        raise XlmrError("the retrieval task has no per-text predictions; embed texts with `xlmr embed` "
                        "or the /v1/embeddings route of `xlmr serve`")

    def empty_prediction(self, text: str) -> dict:
        return self.example_from_text(text)

    def to_json(self, text, example, prediction) -> dict:
        return self.example_from_text(text)
