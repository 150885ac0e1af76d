"""Text and text-pair classification from CSV, TSV or JSONL (plain text lines when unlabelled).

Columns are named by `text_column`, `text_pair_column` and `label_column`; left as None, the first
usual name present is used (text/sentence/sentence1/..., label/category/...), so SIB-200's
`index_id / category / text` TSV reads as is.

CSV and TSV files follow CSV quoting rules, strictly: a field that starts with `"` ends with `"`,
and a `"` inside it is doubled (`""`); a `"` inside an unquoted field is kept as text. A quoted field
may hold line breaks (MasakhaNEWS articles do), but not line breaks and the delimiter together: that
is what a `"` left open looks like once it has swallowed the rows after it, so it is an error naming
the line where the field opens (multi-line texts with tabs or commas can go in JSONL instead). A quote
that never closes, text after a closing quote, and a row whose field count differs from the header's
are errors too. A header that names a column twice, or a JSONL object with a key twice, is an error.
A `.txt` file holds unlabelled texts, one per line (prediction input).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import XlmrError
from .base import IGNORE, MAX_LENGTH, STRIDE, Feature, Task, json_object, lines_of, read_text, softmax

TEXT_NAMES = ("text", "sentence", "sentence1", "premise", "question", "content")
PAIR_NAMES = ("text_pair", "sentence2", "hypothesis")
LABEL_NAMES = ("label", "category", "labels", "class", "topic")


@dataclass
class TextExample:
    """One text (and optional pair text) with its label (None when unlabelled) and source line."""

    text: str
    pair: str | None = None
    label: str | None = None
    path: str = ""
    line: int = 0


@dataclass
class ClassPrediction:
    """The predicted label and the probability of every label (in the task's label order)."""

    label: str
    probs: list[float]


def _pick(path: str, found: list[str], wanted: str | None, names: tuple[str, ...], what: str,
          required: bool, option: str) -> str | None:
    """The column to use: the one named, else the first usual name present."""
    if wanted is not None:
        if wanted not in found:
            raise XlmrError(f"{path}:1: no column {wanted!r} (columns found: {', '.join(found)})")
        return wanted
    hit = next((n for n in names if n in found), None)
    if hit is None and required:
        raise XlmrError(f"{path}:1: no {what} column (tried {', '.join(names)}; columns found: "
                        f"{', '.join(found)}); set {option}")
    return hit


QUOTING_HELP = 'a field that starts with " must end with ", with inner quotes doubled ("")'


def csv_records(path: str, text: str, delimiter: str):
    """(first line, fields) per non-blank CSV/TSV record, strictly quoted (see the module docstring)."""
    # Records are cut at \n only, as every reader numbers lines: a lone \r is text inside quotes, an error outside.
    reader = csv.reader(io.StringIO(text, newline="\n"), delimiter=delimiter, strict=True)
    end = 0
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            msg, at = str(e), reader.line_num
            if "unexpected end of data" in msg:
                why = 'a quoted field opens on this line and never closes (an unmatched ")'
            elif "expected after" in msg:
                why = ('text follows the closing " of a quoted field' + (f" (on line {at})" if at > start else ""))
            elif "new-line" in msg:
                why = "a carriage return inside an unquoted field"
            else:
                why = f"bad quoting ({msg})"
            raise XlmrError(f"{path}:{start}: {why}; {QUOTING_HELP}") from None
        end = reader.line_num
        if end > start and any(("\n" in c or "\r" in c) and delimiter in c for c in row):
            name = "tab" if delimiter == "\t" else repr(delimiter)
            raise XlmrError(f"{path}:{start}: a quoted field opens here and runs to line {end}, across line breaks "
                            f"and the {name} delimiter (rows swallowed by an unmatched \"?); {QUOTING_HELP}; "
                            f"store multi-line texts that hold {name}s as JSONL")
        if any(c.strip() for c in row):
            yield start, row


def _header(path: str, ln: int, row: list[str]) -> list[str]:
    header = [c.strip() for c in row]
    for i, name in enumerate(header):
        if name in header[:i]:
            raise XlmrError(f"{path}:{ln}: the header names column {name!r} twice (fields {header.index(name) + 1} "
                            f"and {i + 1})")
    return header


def _rows(path: str, text: str):
    """(line, record) pairs from a CSV/TSV/JSONL/TXT file; records are dicts except for .txt (str).
    A CSV/TSV file ends with (header line, header list), so a header-only file gets its columns checked."""
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        for ln, raw in enumerate(lines_of(text), 1):
            if not raw.strip():
                continue
            rec = json_object(path, ln, raw)
            yield ln, rec
    elif suffix in (".csv", ".tsv", ".tab"):
        header, header_ln = None, 0
        for ln, row in csv_records(path, text, "," if suffix == ".csv" else "\t"):
            if header is None:
                header, header_ln = _header(path, ln, row), ln
                continue
            if len(row) != len(header):
                raise XlmrError(f"{path}:{ln}: expected {len(header)} fields like the header, found {len(row)}")
            yield ln, dict(zip(header, row))
        if header is not None:
            yield header_ln, header
    elif suffix == ".txt":
        for ln, raw in enumerate(lines_of(text), 1):
            if raw.strip():
                yield ln, raw.strip()
    else:
        raise XlmrError(f"{path}: unknown format {suffix or '(no suffix)'!r}; expected .csv, .tsv, .jsonl or .txt")


class Classify(Task):
    """Sequence classification with the model's 'sequence' head."""

    name = "classify"
    head = "sequence"
    main_metric = "accuracy"
    columns = ("accuracy", "macro_f1")

    def __init__(self, text_column: str | None = None, text_pair_column: str | None = None,
                 label_column: str | None = None):
        super().__init__()
        self.text_column, self.text_pair_column, self.label_column = text_column, text_pair_column, label_column

    @classmethod
    def options_from(cls, cfg) -> dict:
        return {"text_column": cfg.text_column, "text_pair_column": cfg.text_pair_column,
                "label_column": cfg.label_column}

    def options(self) -> dict:
        return {"text_column": self.text_column, "text_pair_column": self.text_pair_column,
                "label_column": self.label_column}

    def read(self, path, labelled: bool = True) -> list[TextExample]:
        """Read examples; `labelled=False` (prediction input) makes the label column optional."""
        path = str(path)
        if labelled and Path(path).suffix.lower() == ".txt":
            raise XlmrError(f"{path}: a .txt file holds texts without labels; labelled data needs a .csv, .tsv "
                            f"or .jsonl file with a label column")
        examples: list[TextExample] = []
        cols = None
        for ln, rec in _rows(path, read_text(path)):
            if isinstance(rec, list):  # CSV/TSV header sentinel, after the last row
                if cols is None:
                    self._columns(path, rec, labelled)
                break
            if isinstance(rec, str):
                examples.append(TextExample(rec, None, None, path, ln))
                continue
            if cols is None:
                cols = self._columns(path, list(rec), labelled)
            text_col, pair_col, label_col = cols
            values = []
            for col in (text_col, pair_col, label_col):
                if col is None:
                    values.append(None)
                    continue
                if col not in rec:
                    raise XlmrError(f"{path}:{ln}: no key {col!r} (keys found: {', '.join(rec)})")
                v = rec[col]
                if isinstance(v, int) and not isinstance(v, bool) and col == label_col:
                    v = str(v)  # JSONL labels may be numbers
                if not isinstance(v, str):
                    raise XlmrError(f"{path}:{ln}: column {col!r} must hold a string, found "
                                    f"{'null' if v is None else type(v).__name__}")
                v = v.strip()
                if not v:
                    raise XlmrError(f"{path}:{ln}: empty value in column {col!r}")
                values.append(v)
            examples.append(TextExample(values[0], values[1], values[2], path, ln))
        if not examples:
            raise XlmrError(f"{path}:1: empty file: no examples found")
        return examples

    def _columns(self, path, found, labelled):
        text = _pick(path, found, self.text_column, TEXT_NAMES, "text", True, "text_column")
        pair = _pick(path, found, self.text_pair_column, PAIR_NAMES, "text pair", False, "text_pair_column")
        label = _pick(path, found, self.label_column, LABEL_NAMES, "label", labelled, "label_column")
        return text, pair, (label if labelled else None)

    def example_labels(self, example: TextExample):
        return () if example.label is None else ((example.label, example.path, example.line),)

    def encode(self, examples, tokenizer, max_length=MAX_LENGTH, stride=STRIDE) -> list[Feature]:
        """Texts (or pairs) -> one feature each, truncated to max_length; warns once with counts.

        `stride` is unused: a classification example is one row.
        """
        labelled = self._label_ids_ready(examples)
        ids = self.label2id
        feats: list[Feature] = []
        rows: list[tuple[list[int], list[int]]] = [([], [])] * len(examples)
        cut = [0] * len(examples)
        # singles and pairs are encoded apart: an empty pair would still add a separator token
        for group in ([i for i, ex in enumerate(examples) if ex.pair is None],
                      [i for i, ex in enumerate(examples) if ex.pair is not None]):
            for s in range(0, len(group), 512):
                idx = group[s:s + 512]
                texts = [examples[i].text for i in idx]
                pairs = [examples[i].pair for i in idx] if examples[idx[0]].pair is not None else None
                full = tokenizer.encode(texts, pairs, max_length=None)
                long = []
                for k, i in enumerate(idx):
                    n = sum(full.attention_mask[k])
                    rows[i] = (full.input_ids[k][:n], full.token_type_ids[k][:n])
                    cut[i] = max(n - max_length, 0)
                    if cut[i]:
                        long.append(k)
                if long:  # re-encode only the long rows and let the tokenizer truncate (longest first for pairs)
                    short = tokenizer.encode([texts[k] for k in long], [pairs[k] for k in long] if pairs else None,
                                             max_length=max_length)
                    for j, k in enumerate(long):
                        n = sum(short.attention_mask[j])
                        rows[idx[k]] = (short.input_ids[j][:n], short.token_type_ids[j][:n])
        for i, (row, types) in enumerate(rows):
            feats.append(Feature(row, ids[examples[i].label] if labelled else IGNORE, i, types))
        n_cut = sum(c > 0 for c in cut)
        if n_cut:
            warnings.warn(f"{n_cut} of {len(examples)} examples were longer than max_length={max_length} and "
                          f"were truncated (up to {max(cut)} tokens cut from one, {sum(cut)} in all)", stacklevel=2)
        return feats

    def predict(self, outputs, features, examples) -> list[ClassPrediction]:
        """Argmax label and softmax probabilities per example."""
        preds: list[ClassPrediction | None] = [None] * len(examples)
        for out, f in zip(outputs, features):
            p = softmax(out)
            preds[f.example] = ClassPrediction(self.labels[int(np.argmax(p))], [float(x) for x in p])
        return preds

    def metrics(self, examples, predictions) -> dict:
        """Accuracy and macro-F1 (over the labels that occur in gold or predictions)."""
        from sklearn.metrics import accuracy_score, f1_score

        y_true, y_pred = [ex.label for ex in examples], [p.label for p in predictions]
        return {"accuracy": float(accuracy_score(y_true, y_pred)),
                "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}

    def report(self, examples, predictions) -> str:
        """sklearn classification report."""
        from sklearn.metrics import classification_report

        y_true, y_pred = [ex.label for ex in examples], [p.label for p in predictions]
        labels = [x for x in self.labels if x in set(y_true) | set(y_pred)]
        return classification_report(y_true, y_pred, labels=labels, digits=4, zero_division=0)

    def confusion_matrix(self, examples, predictions, path: str | os.PathLike, title: str = "") -> str:
        """Write the confusion-matrix PNG (rows: gold, columns: predicted); returns the path."""
        from .report import write_confusion_matrix

        return write_confusion_matrix([ex.label for ex in examples], [p.label for p in predictions],
                                      self.labels, path, title)

    def write_report_files(self, examples, predictions, out_dir, lang) -> None:
        self.confusion_matrix(examples, predictions, Path(out_dir) / f"confusion_{lang}.png",
                              title=f"{lang} confusion matrix")

    def example_from_text(self, text: str, pair: str | None = None) -> TextExample:
        return TextExample(text, pair)

    def empty_prediction(self, text: str) -> dict:
        return {"text": text, "label": None, "probs": {}}

    def to_json(self, text: str, example: TextExample, prediction: ClassPrediction) -> dict:
        """{"text", "label", "probs": {label: probability}} (probabilities to 6 decimals)."""
        return {"text": text, "label": prediction.label,
                "probs": {l: round(float(p), 6) for l, p in zip(self.labels, prediction.probs)}}
