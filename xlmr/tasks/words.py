"""Word-level tagging shared by ner and pos: subword alignment, sliding windows and merging.

The label of a word sits on its first subword; other subwords and special tokens get IGNORE.
A sentence longer than the model's window is cut into windows of `max_length` tokens that overlap
by `stride` subwords, each opening at a word boundary where it can. Every word's first subword
lies in at least one window, so every word gets a prediction.

Merge rule: a word takes its prediction from the window where its first subword has the most
context, i.e. the largest min(subwords to the left, subwords to the right) inside the window,
where a side that reaches the true sentence edge counts as unlimited. Ties go to the earlier window.
For training, every window labels each word whose first subword it holds (overlaps train twice).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import XlmrError
from .base import IGNORE, MAX_LENGTH, STRIDE, Feature, Task, softmax

_CHUNK = 128  # sentences per tokenizer call: each call pads to its longest row, so keep calls small


@dataclass
class WordExample:
    """A sentence: words, their tags (None when unlabelled), and each word's source line; for raw
    text, `spans` holds each word's character span [start, end) in it."""

    words: list[str]
    tags: list[str] | None
    path: str = ""
    lines: list[int] | None = None
    spans: list[tuple[int, int]] | None = None


@dataclass
class WordPrediction:
    """One tag per input word and the model's probability for it (0.0 where a word had no subword)."""

    tags: list[str]
    scores: list[float]


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Whitespace-separated words of raw text and their character spans [start, end)."""
    found = list(re.finditer(r"\S+", text))
    return [m.group() for m in found], [m.span() for m in found]


# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, kana, CJK ideographs
# (with extension A, compatibility ideographs, half-width katakana and the supplementary planes).
NO_SPACES = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
                       "\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]")


def tokenizer_words(texts: list[str], tokenizer) -> list[tuple[list[str], list[tuple[int, int]]]]:
    """Per raw text, its words and their character spans [start, end), from the tokenizer, not str.split.

    A word is one of the tokenizer's pre-tokens (XLM-R's SentencePiece: a whitespace-separated chunk;
    BERT: punctuation and each CJK character apart), except that a pre-token holding characters of a
    script written without spaces (NO_SPACES: Chinese, Japanese kana, Thai, Lao, Khmer, Myanmar) is cut
    into its subword pieces, each a word. Spans come from the tokenizer's character offsets, trimmed of
    whitespace and made disjoint (a bare "▁" piece, whose offsets overlap the next piece's, and pieces
    of a character that normalisation expanded add nothing), so `text[start:end]` is the word exactly.
    """
    out = []
    batch = tokenizer.encode(texts, max_length=None)
    for k, text in enumerate(texts):
        n = sum(batch.attention_mask[k])
        pieces = tokenizer.convert_ids_to_tokens(batch.input_ids[k][:n])
        groups: dict[int, list[tuple[int, int]]] = {}  # pre-token -> its pieces' spans
        end = 0
        for piece, (a, b), w in zip(pieces, batch.offsets[k][:n], batch.word_ids[k][:n]):
            if w is None or not piece.strip("\u2581"):
                continue  # a special token, or SentencePiece's bare word-start marker
            a = max(a, end)
            while a < b and text[a].isspace():
                a += 1
            while b > a and text[b - 1].isspace():
                b -= 1
            if a < b:
                groups.setdefault(w, []).append((a, b))
                end = b
        spans = []
        for group in groups.values():
            whole = (group[0][0], group[-1][1])
            spans += group if NO_SPACES.search(text, *whole) else [whole]
        out.append(([text[a:b] for a, b in spans], spans))
    return out


def _unk_token(tokenizer) -> str | None:
    """The backend's unknown token (WordPiece/BPE name it; Unigram has an id)."""
    model = tokenizer.backend.model
    unk = getattr(model, "unk_token", None)
    if unk is None and getattr(model, "unk_id", None) is not None:
        unk = tokenizer.backend.id_to_token(model.unk_id)
    return unk


def _subwords(tokenizer, sentences: list[list[str]]) -> list[tuple[list[int], list[int], int, int]]:
    """Per sentence: (ids, word id per id (-1 = special), prefix, suffix) without truncation.

    A word that the tokenizer maps to no subword at all (e.g. a lone zero-width space) is encoded
    as the unknown token instead, so that it still has a position to be labelled and predicted.
    """
    out = []
    for s in range(0, len(sentences), _CHUNK):
        chunk = sentences[s:s + _CHUNK]
        batch = tokenizer.encode(chunk, is_pretokenized=True, max_length=None)
        for words, ids, mask, wids in zip(chunk, batch.input_ids, batch.attention_mask, batch.word_ids):
            n = sum(mask)
            ids, wids = ids[:n], [-1 if w is None else w for w in wids[:n]]
            if len(set(w for w in wids if w >= 0)) < len(words):
                unk = _unk_token(tokenizer)
                if unk is not None:
                    seen = set(wids)
                    fixed = [w if i in seen else unk for i, w in enumerate(words)]
                    one = tokenizer.encode([fixed], is_pretokenized=True, max_length=None)
                    ids, wids = one.input_ids[0], [-1 if w is None else w for w in one.word_ids[0]]
            content = [i for i, w in enumerate(wids) if w >= 0]
            prefix = content[0] if content else len(ids)
            suffix = len(ids) - 1 - content[-1] if content else 0
            out.append((ids, wids, prefix, suffix))
    return out


def window_starts(wids: list[int], size: int, stride: int) -> list[int]:
    """Start offsets of windows of `size` content subwords overlapping by `stride` (word-aligned)."""
    starts = [0]
    n = len(wids)
    while starts[-1] + size < n:
        s = starts[-1] + size - stride
        # move back to the start of the word that s falls in, unless that would not advance
        a = s
        while a - 1 > starts[-1] and wids[a - 1] == wids[s]:
            a -= 1
        starts.append(a if wids[a - 1] != wids[a] else s)
    return starts


def encode_words(examples: list[WordExample], label_ids: list[list[int]] | None, tokenizer,
                 max_length: int, stride: int) -> list[Feature]:
    """Sentences -> windowed features with labels on first subwords (IGNORE elsewhere)."""
    feats: list[Feature] = []
    encoded = _subwords(tokenizer, [ex.words for ex in examples])
    for e, (ids, wids, prefix, suffix) in enumerate(encoded):
        head, tail = ids[:prefix], ids[len(ids) - suffix:]
        body, bw = ids[prefix:len(ids) - suffix], wids[prefix:len(wids) - suffix]  # content subwords
        size = max_length - prefix - suffix
        if size < 1 or not 0 <= stride < size:
            raise XlmrError(f"stride {stride} must be >= 0 and below max_length {max_length} minus "
                            f"{prefix + suffix} special tokens")
        first = [i == 0 or bw[i] != bw[i - 1] for i in range(len(bw))]  # first subword of its word
        for s in window_starts(bw, size, stride):
            t = min(s + size, len(bw))
            words = [-1] * prefix + [bw[i] if first[i] else -1 for i in range(s, t)] + [-1] * suffix
            if label_ids is None:
                labels = [IGNORE] * len(words)
            else:
                labels = [label_ids[e][w] if w >= 0 else IGNORE for w in words]
            feats.append(Feature(head + body[s:t] + tail, labels, e, None, words, (s, t, len(bw), prefix)))
    return feats


def merge_windows(outputs: list[np.ndarray], features: list[Feature], n_words: list[int]) -> list[np.ndarray | None]:
    """Per example: logits (n_words, C) taken from each word's best window (see module docstring).

    Rows of words that never got a subword stay NaN; None for examples without features.
    """
    best: list[np.ndarray | None] = [None] * len(n_words)
    score: list[np.ndarray | None] = [None] * len(n_words)
    for out, f in zip(outputs, features):
        e = f.example
        if best[e] is None:
            best[e] = np.full((n_words[e], out.shape[-1]), np.nan, dtype=np.float32)
            score[e] = np.full(n_words[e], -1.0)
        s, t, total, prefix = f.window
        for pos, w in enumerate(f.words):
            if w < 0:
                continue
            p = s + pos - prefix  # position among the sentence's content subwords
            left = p - s if s > 0 else np.inf
            right = t - 1 - p if t < total else np.inf
            c = min(left, right)
            if c > score[e][w]:  # strictly better: ties keep the earlier window
                score[e][w] = c
                best[e][w] = out[pos]
    return best


class WordTask(Task):
    """Shared encode/predict/metrics for one-tag-per-word tasks."""

    head = "token"
    fallback = "O"  # tag for a word with no subword at all (should not happen; see _subwords)

    def example_labels(self, example: WordExample):
        if example.tags is None:
            return ()
        lines = example.lines or [0] * len(example.tags)
        return ((tag, example.path, line) for tag, line in zip(example.tags, lines))

    def replace_labels(self, example: WordExample, known: set[str], outside: str) -> list[str]:
        replaced = [t for t in example.tags or [] if t not in known]
        if replaced:
            example.tags = [t if t in known else outside for t in example.tags]
        return replaced

    def encode(self, examples, tokenizer, max_length=MAX_LENGTH, stride=STRIDE):
        label_ids = None
        if self._label_ids_ready(examples):
            ids = self.label2id
            label_ids = [[ids[t] for t in ex.tags] for ex in examples]
        return encode_words(examples, label_ids, tokenizer, max_length, stride)

    def predict(self, outputs, features, examples) -> list[WordPrediction]:
        merged = merge_windows(outputs, features, [len(ex.words) for ex in examples])
        fallback = self.fallback if self.fallback in self.labels else self.labels[0]
        preds = []
        for ex, logits in zip(examples, merged):
            if logits is None:
                preds.append(WordPrediction([fallback] * len(ex.words), [0.0] * len(ex.words)))
                continue
            missing = np.isnan(logits).any(-1)
            probs = softmax(np.nan_to_num(logits))
            ids = probs.argmax(-1)
            tags = [fallback if m else self.labels[i] for i, m in zip(ids, missing)]
            scores = [0.0 if m else float(probs[k, i]) for k, (i, m) in enumerate(zip(ids, missing))]
            preds.append(WordPrediction(tags, scores))
        return preds

    def example_from_text(self, text: str, pair: str | None = None) -> WordExample:
        words, spans = split_words(text)
        return WordExample(words, None, spans=spans)

    def examples_from_raw(self, texts, tokenizer, pairs=None) -> list[WordExample]:
        """Raw text: words from the tokenizer (see `tokenizer_words`), for scripts without spaces."""
        return [WordExample(words, None, spans=spans) for words, spans in tokenizer_words(texts, tokenizer)]

    def empty_prediction(self, text: str) -> dict:
        return {"text": text, "tags": [], "words": []}

    def to_json(self, text: str, example: WordExample, prediction: WordPrediction) -> dict:
        """{"text", "tags", "words"}: one tag per whitespace-separated word."""
        return {"text": text, "tags": prediction.tags, "words": example.words}

    def token_report(self, examples, predictions, digits: int = 4) -> str:
        """sklearn classification report over all words (every tag, `O` included)."""
        from sklearn.metrics import classification_report

        y_true = [t for ex in examples for t in ex.tags]
        y_pred = [t for p in predictions for t in p.tags]
        labels = list(self.labels) + sorted(set(y_true) - set(self.labels))
        return classification_report(y_true, y_pred, labels=labels, digits=digits, zero_division=0)

    def token_accuracy(self, examples, predictions) -> float:
        right = total = 0
        for ex, p in zip(examples, predictions):
            right += sum(a == b for a, b in zip(ex.tags, p.tags))
            total += len(ex.tags)
        return right / max(total, 1)
