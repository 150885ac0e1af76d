"""Part-of-speech tagging on CoNLL-U files (FORM and UPOS columns), scored by token accuracy."""

from __future__ import annotations

import os

from ..errors import XlmrError
from .base import lines_of, read_text
from .words import WordExample, WordPrediction, WordTask


def read_conllu(path: str | os.PathLike) -> list[WordExample]:
    """Sentences of (FORM, UPOS). Comments, multiword ranges (`1-2`) and empty nodes (`1.1`) are skipped."""
    path = str(path)
    sentences: list[WordExample] = []
    words: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    for ln, raw in enumerate(lines_of(read_text(path)), 1):
        if not raw.strip():
            if words:
                sentences.append(WordExample(words, tags, path, lines))
                words, tags, lines = [], [], []
            continue
        if raw.startswith("#"):
            continue
        cols = raw.split("\t")
        if len(cols) != 10:
            raise XlmrError(f"{path}:{ln}: expected 10 tab-separated columns (CoNLL-U), found {len(cols)}")
        if "-" in cols[0] or "." in cols[0]:
            continue  # a multiword token's range or an empty node: its words have their own lines
        form, upos = cols[1].strip(), cols[3].strip()
        if not form:
            raise XlmrError(f"{path}:{ln}: empty token")
        if not upos or upos == "_":
            raise XlmrError(f"{path}:{ln}: no UPOS tag")
        words.append(form)
        tags.append(upos)
        lines.append(ln)
    if words:
        sentences.append(WordExample(words, tags, path, lines))
    if not sentences:
        raise XlmrError(f"{path}:1: empty file: no sentences found")
    return sentences


class Pos(WordTask):
    """UPOS tagging; labels are the tags seen in training, sorted."""

    name = "pos"
    main_metric = "accuracy"
    columns = ("accuracy", "macro_f1")
    fallback = "X"

    def read(self, path) -> list[WordExample]:
        return read_conllu(path)

    def metrics(self, examples, predictions: list[WordPrediction]) -> dict:
        """Token accuracy and macro-F1 over tags."""
        from sklearn.metrics import f1_score

        y_true = [t for ex in examples for t in ex.tags]
        y_pred = [t for p in predictions for t in p.tags]
        return {"accuracy": self.token_accuracy(examples, predictions),
                "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}

    def report(self, examples, predictions) -> str:
        return self.token_report(examples, predictions)
