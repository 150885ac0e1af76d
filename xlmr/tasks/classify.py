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

Long documents (`windows=True`): the whole text is read in windows of `max_length` tokens that
overlap by `stride` subwords (each window opens at a word boundary where it can, as NER's windows
do), and `doc_pooling` turns the windows' logits into the document's: `first` (the first window
only: truncation, without the warning), `mean` (the default) or `max` (per label). Logits, not
hidden states, are pooled: every back-end (torch, ONNX, int8) ends in logits, so prediction needs
no second graph, and each window is classified by the same head on the same kind of input as in
training. Training pools the same way: all windows of a document share one batch, their logits are
pooled, and the document's label is scored once on the pooled logits (one loss term per document,
not per window), so that training optimises exactly what prediction computes. Without windows, a
text longer than `max_length` is truncated with a warning.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..batching import grouped_batches
from ..errors import XlmrError
from .base import IGNORE, MAX_LENGTH, STRIDE, Feature, Task, json_object, lines_of, read_text, softmax
from .words import window_starts

TEXT_NAMES = ("text", "sentence", "sentence1", "premise", "question", "content")
PAIR_NAMES = ("text_pair", "sentence2", "hypothesis")
LABEL_NAMES = ("label", "category", "labels", "class", "topic")
DOC_POOLING = ("first", "mean", "max")


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


def check_windows(windows: bool, doc_pooling: str | None, task: str = "classify") -> None:
    """The long-document options together: `doc_pooling` needs `windows`, and both are classify's."""
    if doc_pooling is not None and doc_pooling not in DOC_POOLING:
        raise XlmrError(f"unknown --doc-pooling {doc_pooling!r}; expected one of {', '.join(DOC_POOLING)}")
    if (windows or doc_pooling is not None) and task != "classify":
        raise XlmrError(f"--windows and --doc-pooling are classify options; {task} always reads long inputs "
                        f"in windows of --max-length overlapping by --stride")
    if doc_pooling is not None and not windows:
        raise XlmrError(f"--doc-pooling {doc_pooling} needs --windows: without windows, classify reads only "
                        f"the first --max-length tokens of a text, so there is nothing to pool")


class Classify(Task):
    """Sequence classification with the model's 'sequence' head."""

    name = "classify"
    head = "sequence"
    main_metric = "accuracy"
    columns = ("accuracy", "macro_f1")

    def __init__(self, text_column: str | None = None, text_pair_column: str | None = None,
                 label_column: str | None = None, windows: bool = False, doc_pooling: str | None = None):
        super().__init__()
        self.text_column, self.text_pair_column, self.label_column = text_column, text_pair_column, label_column
        check_windows(windows, doc_pooling)
        self.windows = bool(windows)
        self.doc_pooling = (doc_pooling or "mean") if windows else "first"

    @classmethod
    def options_from(cls, cfg) -> dict:
        return {"text_column": cfg.text_column, "text_pair_column": cfg.text_pair_column,
                "label_column": cfg.label_column, "windows": getattr(cfg, "windows", False),
                "doc_pooling": getattr(cfg, "doc_pooling", None)}

    def options(self) -> dict:
        opts = {"text_column": self.text_column, "text_pair_column": self.text_pair_column,
                "label_column": self.label_column}
        if self.windows:  # saved only when on, so models saved without windows keep their old options
            opts.update(windows=True, doc_pooling=self.doc_pooling)
        return opts

    @property
    def pooled(self) -> bool:
        """Whether a document may have several rows (windows) whose logits are pooled."""
        return self.windows and self.doc_pooling != "first"

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
        """Texts (or pairs) -> features. Without windows: one per example, truncated to max_length (warns
        once with counts; `stride` is unused). With windows: one per window (see the module docstring)."""
        if self.windows:
            return self._encode_windows(examples, tokenizer, max_length, stride)
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

    def _encode_windows(self, examples, tokenizer, max_length: int, stride: int) -> list[Feature]:
        """One feature per window of each text: [specials] content[s:t] [specials], word-aligned starts
        (`window` = (s, t, content subwords, prefix)); `first` pooling keeps only the first window."""
        labelled = self._label_ids_ready(examples)
        ids = self.label2id
        for ex in examples:
            if ex.pair is not None:
                raise XlmrError(f"{ex.path or 'input'}:{ex.line}: --windows reads single texts, and this example "
                                f"has a text pair; classify text pairs without --windows")
        feats: list[Feature] = []
        for c in range(0, len(examples), 256):
            chunk = examples[c:c + 256]
            batch = tokenizer.encode([ex.text for ex in chunk], max_length=None)
            for k, ex in enumerate(chunk):
                n = sum(batch.attention_mask[k])
                row, wids = batch.input_ids[k][:n], batch.word_ids[k][:n]
                content = [i for i, w in enumerate(wids) if w is not None]
                a, b = (content[0], content[-1] + 1) if content else (n, n)
                head, body, tail, bw = row[:a], row[a:b], row[b:], wids[a:b]  # specials around the content
                size = max_length - len(head) - len(tail)
                if size < 1 or not 0 <= stride < size:
                    raise XlmrError(f"stride {stride} must be >= 0 and below max_length {max_length} minus "
                                    f"{len(head) + len(tail)} special tokens")
                label = ids[ex.label] if labelled else IGNORE
                starts = window_starts(bw, size, stride) if self.pooled else [0]
                for s in starts:
                    t = min(s + size, len(body))
                    window = head + body[s:t] + tail
                    feats.append(Feature(window, label, c + k, [0] * len(window), None, (s, t, len(body), len(head))))
        return feats

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        """The base batch, plus with pooled windows `doc` (B,): each row's document, numbered 0..D-1 in
        order of first appearance."""
        batch = super().collate(features, pad_id)
        if self.pooled:
            number: dict[int, int] = {}
            batch["doc"] = torch.tensor([number.setdefault(f.example, len(number)) for f in features])
        return batch

    def train_batches(self, features, batch_size, max_tokens=0, seed=0, epoch=0) -> list[list[int]]:
        """With pooled windows, all windows of a document go in one batch (see `grouped_batches`)."""
        if not self.pooled:
            return super().train_batches(features, batch_size, max_tokens, seed, epoch)
        groups: dict[int, list[int]] = {}
        for i, f in enumerate(features):
            groups.setdefault(f.example, []).append(i)
        return grouped_batches(list(groups.values()), [len(f) for f in features], batch_size, max_tokens, seed, epoch)

    def training_loss(self, model, batch) -> torch.Tensor:
        """Cross-entropy per document on its pooled window logits (per row without pooled windows)."""
        if not self.pooled:
            return super().training_loss(model, batch)
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # (B, C): per window
        doc = batch["doc"].to(logits.device)  # (B,)
        n_docs = int(doc.max()) + 1
        pooled = pool_windows(logits.float(), doc, n_docs, self.doc_pooling)  # (D, C)
        labels = batch["labels"].to(logits.device)
        doc_labels = labels.new_full((n_docs,), IGNORE).scatter_(0, doc, labels)  # (D,): windows share a label
        return F.cross_entropy(pooled, doc_labels, ignore_index=IGNORE)

    def predict(self, outputs, features, examples) -> list[ClassPrediction]:
        """Argmax label and softmax probabilities per example, over its pooled window logits."""
        rows: list[list[np.ndarray]] = [[] for _ in examples]
        for out, f in zip(outputs, features):
            rows[f.example].append(out)  # features come in window order
        preds: list[ClassPrediction | None] = [None] * len(examples)
        for e, windows in enumerate(rows):
            if not windows:
                continue
            logits = pool_windows(torch.from_numpy(np.stack(windows)), torch.zeros(len(windows), dtype=torch.long),
                                  1, self.doc_pooling)[0].numpy()
            p = softmax(logits)
            preds[e] = ClassPrediction(self.labels[int(np.argmax(p))], [float(x) for x in p])
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


def pool_windows(logits: torch.Tensor, doc: torch.Tensor, n_docs: int, how: str) -> torch.Tensor:
    """Pool window logits (N, C) into document logits (n_docs, C); `doc` (N,) holds each row's document
    (0..n_docs-1, rows of a document in window order). how: first, mean or max (per label)."""
    C = logits.shape[-1]
    if how == "first":
        first = torch.full((n_docs,), len(doc), dtype=torch.long, device=doc.device)
        first = first.scatter_reduce(0, doc, torch.arange(len(doc), device=doc.device), "amin")
        return logits.index_select(0, first)
    if how == "mean":
        total = logits.new_zeros(n_docs, C).index_add(0, doc, logits)
        count = torch.bincount(doc, minlength=n_docs).clamp(min=1).to(logits.dtype)
        return total / count.unsqueeze(1)
    if how == "max":
        index = doc.unsqueeze(1).expand(-1, C)  # (N, C)
        return logits.new_full((n_docs, C), float("-inf")).scatter_reduce(0, index, logits, "amax")
    raise ValueError(f"unknown pooling {how!r}")
