"""Named-entity recognition on CoNLL column files (token and tag), IOB1, IOB2 or BIOES.

Tags are normalised to IOB2 when read: IOB1 is converted (an I-X that opens an entity becomes B-X),
BIOES is validated and converted (S-X -> B-X, E-X -> I-X). A lone I-X after O in IOB2 data is kept
(some released data sets have a few); scoring follows conlleval and starts an entity there.
Scores: entity-level precision/recall/F1 by seqeval in its default (conlleval-compatible) mode,
per type, plus a token-level sklearn report with `O` included.
"""

from __future__ import annotations

import os
import re
from collections import Counter

from ..errors import XlmrError
from .base import lines_of, read_text
from .words import WordExample, WordPrediction, WordTask, split_words

SCHEMES = ("auto", "iob1", "iob2", "bioes")
_TAG = re.compile(r"^(O|([BIES])-(.+))$")


def read_conll(path: str | os.PathLike, tag_column: int = -1) -> list[WordExample]:
    """Sentences from a column file: token first, tag in `tag_column`; tab or space separated.

    Blank lines end sentences and `-DOCSTART-` lines are skipped. Every line must have the same
    number of columns (at least two): the number most lines have, so that the odd line is the one
    named (a first line "New York B-LOC" among two-column lines is the error, not the line after it).
    Tags are returned as found, without scheme checks.
    """
    path = str(path)
    rows: list[tuple[int, list[str], str] | None] = []  # (line, columns, text); None ends a sentence
    for ln, raw in enumerate(lines_of(read_text(path)), 1):
        line = raw.strip()
        if not line or line.startswith("-DOCSTART-"):
            rows.append(None)
            continue
        rows.append((ln, [c.strip() for c in raw.split("\t")] if "\t" in raw else line.split(), line))
    widths = Counter(len(r[1]) for r in rows if r is not None)
    width = max(widths, key=lambda w: (widths[w], -_first(rows, w))) if widths else 2
    sentences: list[WordExample] = []
    words: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    for row in rows + [None]:
        if row is None:
            if words:
                sentences.append(WordExample(words, tags, path, lines))
                words, tags, lines = [], [], []
            continue
        ln, cols, line = row
        if (len(cols) < 2) if width < 2 else (len(cols) != width):
            hint = " (a token with spaces needs a tab-separated file)" if "\t" not in line and len(cols) > width else ""
            raise XlmrError(f"{path}:{ln}: expected {max(width, 2)} columns (token and tag), "
                            f"found {len(cols)}: {line[:60]!r}{hint}")
        if not cols[0]:
            raise XlmrError(f"{path}:{ln}: empty token")
        if not cols[tag_column]:
            raise XlmrError(f"{path}:{ln}: empty tag")
        words.append(cols[0])
        tags.append(cols[tag_column])
        lines.append(ln)
    if not sentences:
        raise XlmrError(f"{path}:1: empty file: no sentences found")
    return sentences


def _first(rows, width: int) -> int:
    """Line of the first row with `width` columns (breaks ties between equally common widths)."""
    return next(r[0] for r in rows if r is not None and len(r[1]) == width)


def to_iob2(example: WordExample, scheme: str) -> list[str]:
    """The example's tags in IOB2; raises on a malformed tag or an invalid BIOES sequence."""
    out, prev = [], "O"
    lines = example.lines or [0] * len(example.tags)
    for i, tag in enumerate(example.tags):
        m = _TAG.match(tag)
        where = f"{example.path}:{lines[i]}"
        if not m:
            raise XlmrError(f"{where}: bad tag {tag!r} (expected O, or B-/I-/E-/S- and an entity type)")
        prefix, kind = m.group(2), m.group(3)
        if scheme in ("iob1", "iob2") and prefix in ("E", "S"):
            raise XlmrError(f"{where}: tag {tag!r} is not {scheme.upper()}; use scheme 'bioes'")
        if scheme == "bioes":
            inside = prev[:1] in ("B", "I")
            ok = (prefix in ("I", "E") and inside and prev[2:] == kind) or \
                 (prefix in (None, "B", "S") and not inside)
            if not ok:
                raise XlmrError(f"{where}: invalid BIOES sequence: {tag!r} after {prev!r}")
            if prefix in ("S", "E"):
                tag = ("B-" if prefix == "S" else "I-") + kind
        elif scheme == "iob1" and prefix == "I" and (prev == "O" or prev[2:] != kind):
            tag = "B-" + kind  # IOB1: I-X opens an entity unless it continues one of the same type
        out.append(tag)
        prev = example.tags[i]
    if scheme == "bioes" and prev[:1] in ("B", "I"):
        raise XlmrError(f"{example.path}:{lines[-1]}: invalid BIOES sequence: "
                        f"sentence ends after {prev!r}")
    return out


def detect_scheme(examples: list[WordExample]) -> str:
    """'bioes' when any E-/S- tag occurs, else 'iob2' (IOB1 cannot be told apart: name it)."""
    return "bioes" if any(t[:2] in ("E-", "S-") for ex in examples for t in ex.tags) else "iob2"


def entities(tags: list[str], scores: list[float] | None = None) -> list[tuple[str, int, int, float]]:
    """(type, first word, last word, mean score) per entity, under conlleval's chunk rules."""
    from seqeval.metrics.sequence_labeling import get_entities

    scores = scores if scores is not None else [1.0] * len(tags)
    return [(kind, a, b, sum(scores[a:b + 1]) / (b - a + 1)) for kind, a, b in get_entities(list(tags))]


def char_entities(text: str, spans: list[tuple[int, int]], tags: list[str],
                  scores: list[float] | None = None) -> list[dict]:
    """Entities with character (code point) offsets in `text`: [{start, end, type, text, score}].

    `end` is exclusive; `score` is the mean of the entity's word scores.
    """
    out = []
    for kind, a, b, score in entities(tags, scores):
        start, end = spans[a][0], spans[b][1]
        out.append({"start": start, "end": end, "type": kind, "text": text[start:end], "score": round(score, 6)})
    return out


class Ner(WordTask):
    """NER over CoNLL column files; labels are O plus B-/I- for every entity type seen in training."""

    name = "ner"
    main_metric = "f1"
    columns = ("f1", "precision", "recall")
    outside_label = "O"

    def __init__(self, scheme: str = "auto", tag_column: int = -1):
        super().__init__()
        if scheme not in SCHEMES:
            raise XlmrError(f"unknown tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
        self.scheme, self.tag_column = scheme, tag_column

    @classmethod
    def options_from(cls, cfg) -> dict:
        return {"scheme": cfg.scheme}

    def options(self) -> dict:
        return {"scheme": self.scheme}

    def read(self, path) -> list[WordExample]:
        """Read a CoNLL file and normalise its tags to IOB2 (validating them under the scheme)."""
        examples = read_conll(path, self.tag_column)
        scheme = detect_scheme(examples) if self.scheme == "auto" else self.scheme
        for ex in examples:
            ex.tags = to_iob2(ex, scheme)
        return examples

    def label_list(self, found):
        kinds = sorted({t[2:] for t in found if t != "O"})
        return ["O"] + [f"{p}-{k}" for k in kinds for p in "BI"]

    def metrics(self, examples, predictions: list[WordPrediction]) -> dict:
        """Entity P/R/F1 (micro, conlleval rules), per-type scores and token accuracy."""
        from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

        y_true = [ex.tags for ex in examples]
        y_pred = [p.tags for p in predictions]
        per_type = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
        return {"f1": float(f1_score(y_true, y_pred, zero_division=0)),
                "precision": float(precision_score(y_true, y_pred, zero_division=0)),
                "recall": float(recall_score(y_true, y_pred, zero_division=0)),
                "accuracy": self.token_accuracy(examples, predictions),
                "per_type": {k: {m.replace("f1-score", "f1"): float(v) for m, v in d.items()}
                             for k, d in per_type.items() if not k.endswith(" avg")}}

    def report(self, examples, predictions) -> str:
        """Entity-level seqeval report, then the token-level sklearn report."""
        from seqeval.metrics import classification_report

        entity = classification_report([ex.tags for ex in examples], [p.tags for p in predictions],
                                       digits=4, zero_division=0)
        return ("Entity level (conlleval rules)\n" + entity + "\nToken level\n"
                + self.token_report(examples, predictions))

    def empty_prediction(self, text: str) -> dict:
        return {"text": text, "entities": []}

    def to_json(self, text: str, example: WordExample, prediction: WordPrediction) -> dict:
        """{"text", "entities": [{start, end, type, text, score}]}, with character offsets into `text`."""
        spans = example.spans if example.spans is not None else split_words(text)[1]
        return {"text": text, "entities": char_entities(text, spans, prediction.tags, prediction.scores)}
