"""Extractive question answering on SQuAD v1.1 / v2.0 JSON files, with the model's 'qa' head.

Encoding: each question + context pair is tokenized once, without truncation; its context tokens are
then cut into windows of `max_length` tokens (question and special tokens repeated in each) that
overlap by `stride` context tokens, so no context token is dropped. Every window keeps the character
offsets of its context tokens. For training, the window that holds the whole gold answer (the first
answer) is labelled with its first and last token; every other window points at the first token
(<s> / [CLS]), the "no answer here" position.

Decoding, per window: the `n_best` highest start and end logits over context tokens, every pair with
start <= end and at most `max_answer_length` tokens, scored start + end logit; the best pair over all
windows of an example wins, and its characters are cut from the original context. SQuAD v2 (training
data with `is_impossible` questions): the answer is "" unless the best span's score beats the
smallest null score (first-token start + end logit) over the windows by more than `null_threshold`.

Metrics: SQuAD v1.1 exact match and F1 (0-100), the maximum over gold answers, with the official
normalisation (lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace).
`normalizer="mlqa"` also drops Unicode punctuation and scores CJK text character by character, so that
zh (written without spaces) gets a token-overlap F1 rather than exact match only.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import XlmrError
from .base import MAX_LENGTH, STRIDE, Feature, Task, read_text

N_BEST = 20  # start and end candidates per window
MAX_ANSWER_LENGTH = 30  # tokens
MAX_QUESTION = 64  # question tokens kept per window (the rest of the window holds context)
NORMALIZERS = ("squad", "mlqa")


@dataclass
class QaExample:
    """One question on one context. answers: (text, character start) pairs; empty when unlabelled or,
    with `impossible`, when the question has no answer in the context (SQuAD v2)."""

    question: str
    context: str
    answers: list[tuple[str, int]] = field(default_factory=list)
    id: str = ""
    impossible: bool = False
    path: str = ""
    record: str = ""  # where in the file: data[i].paragraphs[j].qas[k]


@dataclass
class QaFeature(Feature):
    """A window: `offsets` holds the (start, end) characters of each context token, None elsewhere;
    `span` the characters of the context it covers. labels: (start token, end token)."""

    offsets: list[tuple[int, int] | None] | None = None
    span: tuple[int, int] = (0, 0)


@dataclass
class QaAnswer:
    """The answer text, its characters [start, end) in the context (-1 for no answer) and its score
    (start + end logit)."""

    text: str
    start: int
    end: int
    score: float


# -- reading ----------------------------------------------------------------------------------


def _need(cond: bool, where: str, problem: str) -> None:
    if not cond:
        raise XlmrError(f"{where}: {problem}")


def _text(obj: dict, key: str, where: str) -> str:
    v = obj.get(key)
    _need(isinstance(v, str), where, f"'{key}' must be a string, found "
          f"{'nothing' if key not in obj else 'null' if v is None else type(v).__name__}")
    return v


def read_squad(path) -> list[QaExample]:
    """Questions from a SQuAD v1.1/v2.0 JSON file, validated. Errors name the file and the record
    (`data[3].paragraphs[1].qas[0]` and the question id): an `answer_start` whose characters are not
    its text, a paragraph without questions, an empty question, a missing field."""
    path = str(path)
    try:
        doc = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise XlmrError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    _need(isinstance(doc, dict) and isinstance(doc.get("data"), list), path,
          'expected a SQuAD JSON object {"data": [{"paragraphs": [...]}, ...]}')
    out: list[QaExample] = []
    for i, article in enumerate(doc["data"]):
        where = f"{path}: data[{i}]"
        _need(isinstance(article, dict) and isinstance(article.get("paragraphs"), list), where,
              "expected an object with a 'paragraphs' list")
        for j, par in enumerate(article["paragraphs"]):
            pw = f"{where}.paragraphs[{j}]"
            _need(isinstance(par, dict), pw, "expected an object with 'context' and 'qas'")
            context = _text(par, "context", pw)
            _need(context.strip() != "", pw, "empty context")
            qas = par.get("qas")
            _need(isinstance(qas, list) and len(qas) > 0, pw, "a context with no question ('qas' is missing or empty)")
            for k, qa in enumerate(qas):
                out.append(_question(qa, context, f"data[{i}].paragraphs[{j}].qas[{k}]", path))
    _need(len(out) > 0, path, "no questions found")
    seen: dict[str, str] = {}
    for ex in out:
        if ex.id:
            _need(ex.id not in seen, f"{ex.path}: {ex.record}",
                  f"question id {ex.id!r} already used at {seen.get(ex.id)}")
            seen[ex.id] = ex.record
    return out


def _question(qa, context: str, record: str, path: str) -> QaExample:
    """One `qas` entry, checked: every answer's characters at `answer_start` must be its text."""
    where = f"{path}: {record}"
    _need(isinstance(qa, dict), where, "expected an object with 'question' and 'answers'")
    qid = qa.get("id", "")
    qid = str(qid) if isinstance(qid, (str, int)) and not isinstance(qid, bool) else ""
    where += f" (id {qid})" if qid else ""
    question = _text(qa, "question", where)
    _need(question.strip() != "", where, "empty question")
    impossible = qa.get("is_impossible", False)
    _need(isinstance(impossible, bool), where, "'is_impossible' must be true or false")
    answers = qa.get("answers", [])
    _need(isinstance(answers, list), where, "'answers' must be a list")
    found = []
    for n, a in enumerate(answers):
        aw = f"{where} answers[{n}]"
        _need(isinstance(a, dict), aw, "expected an object with 'text' and 'answer_start'")
        text, start = _text(a, "text", aw), a.get("answer_start")
        _need(isinstance(start, int) and not isinstance(start, bool), aw, "'answer_start' must be an integer")
        _need(text.strip() != "", aw, "empty answer text")
        got = context[start:start + len(text)] if 0 <= start <= len(context) else None
        _need(got == text, aw, f"answer_start {start} does not match its text {text[:40]!r}: the context holds "
              f"{(got or '')[:40]!r} there" if got is not None else f"answer_start {start} is outside the context "
              f"({len(context)} characters)")
        found.append((text, start))
    _need(impossible or found, where, "no answers (and not marked is_impossible)")
    return QaExample(question, context, [] if impossible else found, qid, impossible, path, record)


# -- metrics ----------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = set(string.punctuation)
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\uff00-\uffef])")


def normalize_answer(s: str, normalizer: str = "squad") -> str:
    """SQuAD v1.1's normalisation: lowercase, drop punctuation, drop a/an/the, collapse whitespace.
    "mlqa": punctuation is every Unicode P* character, and CJK characters are split apart by spaces."""
    s = s.lower()
    if normalizer == "mlqa":
        s = "".join(ch for ch in s if ch not in _ASCII_PUNCT and not unicodedata.category(ch).startswith("P"))
        s = _CJK.sub(r" \1 ", s)
    else:
        s = "".join(ch for ch in s if ch not in _ASCII_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def answer_f1(prediction: str, gold: str, normalizer: str = "squad") -> float:
    """Token-overlap F1 of one prediction against one gold answer (both empty: 1)."""
    p, g = normalize_answer(prediction, normalizer).split(), normalize_answer(gold, normalizer).split()
    if not p or not g:
        return float(p == g)
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: list[str], golds: list[list[str]], normalizer: str = "squad") -> dict:
    """{"exact_match", "f1"} in percent: per question the maximum over its gold answers ([""] for none)."""
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = f1 = 0.0
    for pred, gold in zip(predictions, golds):
        gold = gold or [""]
        em += max(float(normalize_answer(pred, normalizer) == normalize_answer(g, normalizer)) for g in gold)
        f1 += max(answer_f1(pred, g, normalizer) for g in gold)
    return {"exact_match": 100.0 * em / len(predictions), "f1": 100.0 * f1 / len(predictions)}


# -- windows ----------------------------------------------------------------------------------


def _layout(enc) -> tuple[list[int], list[int], list[int]]:
    """Positions in one pair encoding: before the context (special tokens + question), the context, after."""
    seq = enc.sequence_ids
    ctx = [i for i, s in enumerate(seq) if s == 1]
    if not ctx:
        return list(range(len(seq))), [], []
    return list(range(ctx[0])), ctx, list(range(ctx[-1] + 1, len(seq)))


def _cut_question(enc, prefix: list[int], keep: int) -> list[int]:
    """`prefix` without the question tokens past the first `keep` (special tokens stay)."""
    seq = enc.sequence_ids
    q = [i for i in prefix if seq[i] == 0]
    drop = set(q[keep:])
    return [i for i in prefix if i not in drop]


def window_starts(n: int, room: int, stride: int) -> list[int]:
    """Start offsets of windows of `room` tokens over `n` that overlap by `stride`; the last ends at n."""
    starts = [0]
    while starts[-1] + room < n:
        starts.append(starts[-1] + room - stride)
    return starts


def _label(ex: QaExample, offs: list[tuple[int, int]], a: int, b: int, first: int) -> tuple[int, int]:
    """(start, end) token positions of the first gold answer in window [a, b) of the context tokens
    (which sits at row position `first`), or (0, 0) when the window does not hold all of it."""
    if not ex.answers:
        return 0, 0
    text, s = ex.answers[0]
    e = s + len(text)
    starts = [k for k in range(a, b) if offs[k][1] > s]  # first token that ends after the answer starts
    ends = [k for k in range(a, b) if offs[k][0] < e]  # last token that starts before the answer ends
    if not starts or not ends or offs[a][0] > s or offs[b - 1][1] < e or starts[0] > ends[-1]:
        return 0, 0
    return first + starts[0] - a, first + ends[-1] - a


# -- the task ---------------------------------------------------------------------------------


class Qa(Task):
    """Extractive QA: start and end logits over the tokens of question + context windows."""

    name = "qa"
    head = "qa"
    main_metric = "f1"
    columns = ("exact_match", "f1")
    pair_required = True  # every input is a question and its context

    def __init__(self, n_best: int = N_BEST, max_answer_length: int = MAX_ANSWER_LENGTH,
                 version_2: bool | None = None, null_threshold: float = 0.0, normalizer: str = "squad"):
        super().__init__()
        if normalizer not in NORMALIZERS:
            raise XlmrError(f"unknown QA normalizer {normalizer!r}; expected one of {', '.join(NORMALIZERS)}")
        self.n_best, self.max_answer_length = n_best, max_answer_length
        self.version_2, self.null_threshold, self.normalizer = version_2, null_threshold, normalizer

    def options(self) -> dict:
        return {"n_best": self.n_best, "max_answer_length": self.max_answer_length, "version_2": self.version_2,
                "null_threshold": self.null_threshold, "normalizer": self.normalizer}

    # labels: QA has none; SQuAD v2 is recognised from the training data
    def example_labels(self, example):
        return ()

    def build_labels(self, examples: list) -> list[str]:
        if self.version_2 is None:
            self.version_2 = any(ex.impossible for ex in examples)
        if not any(ex.answers for ex in examples):
            files = sorted({ex.path for ex in examples})
            raise XlmrError(f"{', '.join(files) or 'training data'}: training data has no answers")
        self.labels = []
        return self.labels

    def set_labels(self, labels) -> None:
        self.labels = []

    def check_labels(self, examples: list) -> None:
        pass

    def read(self, path) -> list[QaExample]:
        return read_squad(path)

    def encode(self, examples, tokenizer, max_length=MAX_LENGTH, stride=STRIDE) -> list[QaFeature]:
        """Question + context -> windows over the context (see the module docstring)."""
        feats: list[QaFeature] = []
        cut = 0
        for s in range(0, len(examples), 256):
            chunk = examples[s:s + 256]
            encs = tokenizer.backend.encode_batch([(ex.question, ex.context) for ex in chunk], add_special_tokens=True)
            for i, (ex, enc) in enumerate(zip(chunk, encs)):
                cut += self._windows(s + i, ex, enc, max_length, stride, feats)
        if cut:
            warnings.warn(f"{cut} of {len(examples)} questions were longer than {MAX_QUESTION} tokens and were "
                          f"cut to {MAX_QUESTION}", stacklevel=2)
        return feats

    def _windows(self, index: int, ex: QaExample, enc, max_length: int, stride: int, out: list) -> int:
        """Append the windows of one encoded example to `out`; returns 1 if its question was cut."""
        prefix, ctx, suffix = _layout(enc)
        cut = 0
        if sum(s == 0 for s in enc.sequence_ids) > MAX_QUESTION:
            prefix, cut = _cut_question(enc, prefix, MAX_QUESTION), 1
        room = max_length - len(prefix) - len(suffix)
        if room <= stride:
            raise XlmrError(f"max_length {max_length} leaves {room} context tokens per window after the question and "
                            f"special tokens, not more than the stride {stride}; raise max_length or lower stride")
        if not ctx:
            return cut
        ids, types, offsets = enc.ids, enc.type_ids, enc.offsets
        offs = [offsets[k] for k in ctx]  # per context token: (start, end) characters
        for a in window_starts(len(ctx), room, stride):
            b = min(a + room, len(ctx))
            rows = prefix + ctx[a:b] + suffix
            span_offsets = [None] * len(prefix) + offs[a:b] + [None] * len(suffix)
            out.append(QaFeature([ids[k] for k in rows], _label(ex, offs, a, b, len(prefix)), index,
                                 [types[k] for k in rows], offsets=span_offsets, span=(offs[a][0], offs[b - 1][1])))
        return cut

    def collate(self, features, pad_id):
        batch = super().collate([Feature(f.input_ids, 0, f.example, f.token_type_ids) for f in features], pad_id)
        batch["labels"] = torch.tensor([list(f.labels) for f in features], dtype=torch.long)  # (B, 2)
        return batch

    def loss(self, logits, batch, reduction="mean"):
        """Mean of the start and end cross-entropies; logits (B, T, 2), labels (B, 2) token positions."""
        labels = batch["labels"].to(logits.device)
        start, end = logits.float().unbind(-1)  # each (B, T)
        return (F.cross_entropy(start, labels[:, 0], reduction=reduction)
                + F.cross_entropy(end, labels[:, 1], reduction=reduction)) / 2

    def training_loss(self, model, batch):
        return self.loss(model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]), batch)

    # -- decoding -----------------------------------------------------------------------------

    def best_span(self, logits: np.ndarray, feature: QaFeature) -> tuple[float, int, int] | None:
        """(score, start, end) of the best answer span in one window (row positions), or None."""
        start, end = logits[:, 0], logits[:, 1]  # (T,)
        ctx = np.array([i for i, o in enumerate(feature.offsets[:len(start)]) if o is not None])
        if not len(ctx):
            return None
        top_s = ctx[np.argsort(-start[ctx], kind="stable")[:self.n_best]]
        top_e = ctx[np.argsort(-end[ctx], kind="stable")[:self.n_best]]
        best = None
        for s in top_s:
            for e in top_e:
                if e < s or e - s + 1 > self.max_answer_length:
                    continue
                score = float(start[s] + end[e])
                if best is None or score > best[0]:
                    best = (score, int(s), int(e))
        return best

    def predict(self, outputs, features, examples) -> list[QaAnswer]:
        """The best span over every window of each example (SQuAD v2: or "" below the null score)."""
        best: list[tuple[float, int, int, QaFeature] | None] = [None] * len(examples)
        null = [np.inf] * len(examples)
        for logits, f in zip(outputs, features):
            null[f.example] = min(null[f.example], float(logits[0, 0] + logits[0, 1]))
            span = self.best_span(logits, f)
            if span is not None and (best[f.example] is None or span[0] > best[f.example][0]):
                best[f.example] = (*span, f)
        preds = []
        for i, ex in enumerate(examples):
            b = best[i]
            if b is None or (self.version_2 and b[0] <= null[i] + self.null_threshold):
                preds.append(QaAnswer("", -1, -1, float(null[i]) if np.isfinite(null[i]) else 0.0))
                continue
            score, s, e, f = b
            a, z = f.offsets[s][0], f.offsets[e][1]
            preds.append(QaAnswer(ex.context[a:z], a, z, score))
        return preds

    def metrics(self, examples, predictions) -> dict:
        scores = squad_scores([p.text for p in predictions], [[t for t, _ in ex.answers] for ex in examples],
                              self.normalizer)
        return {**scores, "questions": len(examples), "normalizer": self.normalizer}

    def report(self, examples, predictions) -> str:
        """The scores, and the first questions answered wrongly (by F1)."""
        m = self.metrics(examples, predictions)
        lines = [f"{m['questions']} questions: exact match {m['exact_match']:.2f}, F1 {m['f1']:.2f} "
                 f"({self.normalizer} normalisation)"]
        wrong = [(ex, p) for ex, p in zip(examples, predictions)
                 if max((answer_f1(p.text, t, self.normalizer) for t, _ in ex.answers), default=float(not p.text)) < 1]
        for ex, p in wrong[:5]:
            gold = " | ".join(t for t, _ in ex.answers) or "(no answer)"
            lines.append(f"- {ex.id or ex.record}: {ex.question[:80]!r} -> {p.text[:60]!r} (gold {gold[:60]!r})")
        return "\n".join(lines)

    def write_report_files(self, examples, predictions, out_dir, lang) -> None:
        """predictions_LANG.json: {question id: answer text}, the official evaluation script's input."""
        from ..io import atomic_write_json

        answers = {ex.id or ex.record: p.text for ex, p in zip(examples, predictions)}
        atomic_write_json(Path(out_dir) / f"predictions_{lang}.json", answers, indent=1, ensure_ascii=False)

    # -- raw input (predict, serve) -----------------------------------------------------------

    def example_from_text(self, text: str, pair: str | None = None) -> QaExample:
        if pair is None:
            raise XlmrError("question answering needs a context for every question (JSONL: \"question\" and "
                            "\"context\"; serve: \"text_pairs\")")
        return QaExample(text, pair)

    def empty_prediction(self, text: str) -> dict:
        return {"question": text, "answer": "", "start": None, "end": None, "score": None}

    def to_json(self, text: str, example: QaExample, prediction: QaAnswer) -> dict:
        """{"question", "answer", "start", "end", "score"}: start/end are characters of the context."""
        found = prediction.start >= 0
        return {"question": text, "answer": prediction.text, "start": prediction.start if found else None,
                "end": prediction.end if found else None, "score": round(prediction.score, 6)}

