"""Relation classification between two marked entities: the "entity start" model of Baldini Soares
et al. (2019, Matching the Blanks).

Input: a sentence whose entities are marked `<e1> … </e1>` and `<e2> … </e2>`. The four markers are
special tokens: fine-tuning adds them to the tokenizer and gives each a new embedding row (the mean
of the embeddings of the subwords its text split into before; see `add_marker_tokens`), and the
fine-tuned directory saves both. The relation is read from the last hidden states at the two start
markers: logits = W [h(<e1>); h(<e2>)] + b, one linear layer on the concatenation.

That layer is stored as the model's per-token head with 2C outputs for C relations: rows 0..C-1 of
its weight are W's first half (applied to h(<e1>)), rows C..2C-1 the second half (applied to
h(<e2>)), and logits = token_logits[<e1>, :C] + token_logits[<e2>, C:], which is the same function
(W1 h1 + W2 h2 + b1 + b2). So the checkpoint is an ordinary token-classification checkpoint and
every loader, PEFT-free training, ONNX export and int8 path works on it unchanged; `config.id2label`
names the 2C rows `<e1> LABEL` and `<e2> LABEL`. Training runs the last layer only at the two
start markers of each row.

Files: the KBP37/RELX format (`.txt`: an id, a TAB and the quoted marked sentence, the label on the
next line, blank lines between), or JSONL (`.jsonl`) with `text` (marked) and `label`, or with an
unmarked `text` and the entities as character offsets `"e1": [start, end], "e2": [start, end]` (end
exclusive), which become markers. Labels are kept as the data has them, directions included
(`per:employee_of(e1,e2)` and `per:employee_of(e2,e1)` are two labels).

Scores: micro-F1 over every label except the negative one (`no_relation` in KBP37/RELX and TACRED),
its precision and recall; `relx_f1`, the F1 of the RELX paper's released script (the mean over the
relations, directions merged, of the micro-F1 over each relation's two directed labels); accuracy over
all examples; per-label P/R/F1.

Long sentences: a row longer than max_length keeps the two entities and the context around them
(`window`): it is never cut between them. When the two marked entities are further apart than the
row can hold, the row keeps both entities whole and the tokens next to each, and drops the middle of
the gap between them (a warning counts such sentences); when the two entities alone (with their
markers) do not fit, it is an error.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import XlmrError
from .base import IGNORE, MAX_LENGTH, STRIDE, Feature, Task, json_object, lines_of, read_text, softmax

MARKERS = ("<e1>", "</e1>", "<e2>", "</e2>")
NEGATIVE = "no_relation"  # KBP37's (and TACRED's) label for "no relation between the two entities"
ROLE = ("<e1> ", "<e2> ")  # prefixes of the head's 2C row names in config.id2label


@dataclass
class RelationExample:
    """One marked sentence. `label` None when unlabelled; `error` says why a raw text cannot be scored
    (prediction input only: file input raises instead). `label_line`: the line holding the label."""

    text: str
    label: str | None = None
    path: str = ""
    line: int = 0
    label_line: int = 0
    error: str | None = None


@dataclass
class RelationPrediction:
    """The predicted relation and the probability of every relation (in the task's label order)."""

    label: str
    probs: list[float]


@dataclass
class RelationFeature(Feature):
    """A row plus the positions of its `<e1>` and `<e2>` start markers."""

    e1: int = 0
    e2: int = 0


@dataclass
class MarkerTokens:
    """What `add_marker_tokens` did: the markers' ids, those it added, and the embedding rows
    before and after (equal when the new ids fell in unused rows)."""

    ids: list[int]
    added: list[str]
    rows_before: int
    rows_after: int


def marker_problem(text: str, markers: tuple[str, ...] = MARKERS) -> str | None:
    """Why `text` is not a sentence with two marked entities, or None when it is."""
    for start, end in (markers[:2], markers[2:]):
        ns, ne = text.count(start), text.count(end)
        if ns == 0 and ne == 0:
            return f"no {start} marker (mark the entities as {markers[0]} … {markers[1]} and {markers[2]} … {markers[3]})"
        if ne == 0:
            return f"{start} without {end}"
        if ns == 0:
            return f"{end} without {start}"
        if ns > 1 or ne > 1:
            return f"{start} … {end} appears more than once; mark each entity once"
        if text.index(end) < text.index(start):
            return f"{end} comes before {start}"
    return None  # an empty entity (`<e1> </e1>`) is allowed: KBP37 has a few, and the start marker is what is read


def entity_spans(text: str, markers: tuple[str, ...] = MARKERS) -> list[tuple[int, int]]:
    """[(start, end), (start, end)]: the character span (end exclusive) of each entity's text inside
    its markers, surrounding spaces left out."""
    out = []
    for start, end in (markers[:2], markers[2:]):
        a, b = text.index(start) + len(start), text.index(end)
        inner = text[a:b]
        a += len(inner) - len(inner.lstrip())
        out.append((a, a + len(inner.strip())))
    return out


def mark(text: str, e1: tuple[int, int], e2: tuple[int, int], markers: tuple[str, ...] = MARKERS) -> str:
    """Insert markers around two character spans (end exclusive): `<e1> entity </e1>`, spaced as KBP37."""
    inserts = [(e1[0], markers[0] + " "), (e1[1], " " + markers[1]), (e2[0], markers[2] + " "), (e2[1], " " + markers[3])]
    # later offsets first, so earlier ones stay valid; at one offset the opening marker goes in first,
    # so that a closing one inserted after it lands before it ("a </e1> <e2> b")
    for at, piece in sorted(inserts, key=lambda x: (x[0], not x[1].startswith(" ")), reverse=True):
        text = text[:at] + piece + text[at:]
    return text


def _span(path: str, ln: int, rec: dict, key: str, n: int) -> tuple[int, int]:
    v = rec.get(key)
    if (not isinstance(v, list) or len(v) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)):
        raise XlmrError(f"{path}:{ln}: {key!r} must be [start, end], two character offsets")
    if not 0 <= v[0] < v[1] <= n:
        raise XlmrError(f"{path}:{ln}: {key!r} span {v} is not inside the text (0 <= start < end <= {n})")
    return v[0], v[1]


def read_jsonl(path: str, markers: tuple[str, ...] = MARKERS) -> list[RelationExample]:
    """JSONL records: {"text": marked text, "label"}, or {"text", "e1": [s, e], "e2": [s, e], "label"}."""
    examples = []
    for ln, raw in enumerate(lines_of(read_text(path)), 1):
        if not raw.strip():
            continue
        rec = json_object(path, ln, raw)
        text, label = rec.get("text"), rec.get("label")
        if not isinstance(text, str) or not text.strip():
            raise XlmrError(f"{path}:{ln}: expected a non-empty \"text\" string")
        if not isinstance(label, str) or not label.strip():
            raise XlmrError(f"{path}:{ln}: expected a \"label\" string (the relation)")
        if "e1" in rec or "e2" in rec:
            if any(m in text for m in markers):
                raise XlmrError(f"{path}:{ln}: the text has entity markers and \"e1\"/\"e2\" offsets too; give one")
            text = mark(text, _span(path, ln, rec, "e1", len(text)), _span(path, ln, rec, "e2", len(text)), markers)
        examples.append(RelationExample(text.strip(), label.strip(), path, ln, ln))
    return examples


def read_kbp37(path: str) -> list[RelationExample]:
    """KBP37/RELX blocks: `id<TAB>"marked sentence"`, then the label line, then blank lines."""
    examples, pending = [], None  # pending: (line, text) of a sentence waiting for its label
    for ln, raw in enumerate(lines_of(read_text(path)), 1):
        line = raw.strip()
        if not line:
            continue
        if pending is None:
            text = raw.partition("\t")[2].strip() if "\t" in raw else line
            if len(text) >= 2 and text[0] == text[-1] == '"':
                text = text[1:-1].strip()
            pending = (ln, text)
            continue
        if "\t" in raw or any(m in line for m in MARKERS):
            raise XlmrError(f"{path}:{ln}: expected the relation label of the sentence on line {pending[0]}, "
                            f"found another sentence")
        examples.append(RelationExample(pending[1], line, path, pending[0], ln))
        pending = None
    if pending is not None:
        raise XlmrError(f"{path}:{pending[0]}: a sentence without a relation label (the label goes on the next line)")
    return examples


def add_marker_tokens(model: nn.Module, tokenizer, markers: tuple[str, ...] = MARKERS) -> MarkerTokens | None:
    """Add the markers the tokenizer lacks as special tokens, and give each an embedding row: the mean
    of the embeddings of the subwords its text split into before (so <e1>, </e1>, <e2>, </e2> start
    distinct, and near text the model knows). The matrix grows only when an id falls past its last row
    (config.vocab_size follows). Returns what it did; None when every marker was known already."""
    from tokenizers import AddedToken

    emb = model.encoder_model.embeddings.word_embeddings
    new = [m for m in markers if tokenizer.backend.token_to_id(m) is None]
    if not new:
        return None
    pieces = tokenizer.encode(new, max_length=None)
    specials = set(tokenizer.all_special_ids)
    with torch.no_grad():
        init = [emb.weight[[i for i, keep in zip(ids, mask) if keep and i not in specials]].mean(0)
                for ids, mask in zip(pieces.input_ids, pieces.attention_mask)]
    tokenizer.backend.add_special_tokens([AddedToken(m, special=True, normalized=False) for m in new])
    ids = [tokenizer.backend.token_to_id(m) for m in markers]
    before = emb.num_embeddings
    if max(ids) >= before:
        grown = nn.Embedding(max(ids) + 1, emb.embedding_dim, padding_idx=emb.padding_idx,
                             device=emb.weight.device, dtype=emb.weight.dtype)
        with torch.no_grad():
            grown.weight[:before] = emb.weight
        model.encoder_model.embeddings.word_embeddings = emb = grown
        model.config.vocab_size = grown.num_embeddings
    with torch.no_grad():
        for m, vec in zip(new, init):
            emb.weight[tokenizer.backend.token_to_id(m)] = vec
    known = list(tokenizer.config.get("additional_special_tokens") or [])
    tokenizer.config["additional_special_tokens"] = known + [m for m in new if m not in known]
    return MarkerTokens(ids, new, before, emb.num_embeddings)


def window(length: int, spans: list[tuple[int, int]], budget: int) -> list[tuple[int, int]] | None:
    """The content-token ranges [(start, end), ...] a row of `budget` content tokens keeps, given the two
    entities' token spans (first to last marker, inclusive). One range centred on the entities when both
    fit with everything between them; else both entities whole plus the tokens beside each, the middle
    of the gap dropped (two ranges); None when the entities alone do not fit."""
    lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
    if length <= budget:
        return [(0, length)]
    if hi - lo + 1 <= budget:
        extra = budget - (hi - lo + 1)
        right = min(length - 1 - hi, extra - min(lo, extra // 2))
        left = min(lo, extra - right)
        return [(lo - left, hi + 1 + right)]
    (a0, a1), (b0, b1) = sorted(spans)
    need = (a1 - a0 + 1) + (b1 - b0 + 1)
    if b0 <= a1 or need > budget:  # nested or overlapping entities that do not fit, or two that alone are too long
        return None
    room = budget - need  # < the gap b0 - a1 - 1, else the first branch had taken it
    return [(a0, a1 + 1 + room // 2), (b0 - (room - room // 2), b1 + 1)]


def relation_of(label: str) -> str:
    """A directed label's relation: `per:employee_of(e2,e1)` -> `per:employee_of`."""
    return re.sub(r"\((e1,e2|e2,e1)\)$", "", label)


def relation_scores(gold: list[str], pred: list[str], negative: str = NEGATIVE, labels: list[str] = ()) -> dict:
    """Scores of predicted against gold labels, directions included:

    - micro P/R/F1 over every label but `negative` (a prediction of `negative` is no prediction; a gold
      `negative` is nothing to find);
    - relx_f1: the RELX reference script's F1, the mean over relations (directions merged, `negative` left
      out; those of `labels`, gold and predictions) of the micro-F1 over each relation's directed labels;
    - accuracy over all, and per-label P/R/F1/support.
    """
    tp = sum(g == p != negative for g, p in zip(gold, pred))
    n_pred, n_gold = sum(p != negative for p in pred), sum(g != negative for g in gold)
    per = {}
    for label in sorted(set(gold) | set(pred)):
        t = sum(g == p == label for g, p in zip(gold, pred))
        per[label] = _prf(t, pred.count(label), gold.count(label)) | {"support": gold.count(label)}
    relations = sorted({relation_of(x) for x in (*labels, *gold, *pred) if x != negative})
    relx = []
    for rel in relations:
        t = sum(g == p and relation_of(g) == rel for g, p in zip(gold, pred) if g != negative)
        relx.append(_prf(t, sum(relation_of(p) == rel for p in pred if p != negative),
                         sum(relation_of(g) == rel for g in gold if g != negative))["f1"])
    return {**_prf(tp, n_pred, n_gold, "micro_"), "relx_f1": sum(relx) / len(relx) if relx else 0.0,
            "accuracy": sum(g == p for g, p in zip(gold, pred)) / max(len(gold), 1), "per_relation": per}


def _prf(tp: int, n_pred: int, n_gold: int, prefix: str = "") -> dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {prefix + "f1": 2 * p * r / (p + r) if p + r else 0.0, prefix + "precision": p, prefix + "recall": r}


class Relation(Task):
    """Entity-start relation classification (see the module docstring)."""

    name = "relation"
    head = "token"  # the concat-linear layer stored as a 2C-output token head (see the module docstring)
    main_metric = "micro_f1"
    columns = ("micro_f1", "relx_f1", "accuracy")

    def __init__(self, negative_label: str = NEGATIVE, markers: list[str] | tuple[str, ...] = MARKERS):
        super().__init__()
        if len(markers) != 4 or len(set(markers)) != 4:
            raise XlmrError(f"relation markers must be four distinct strings (e1 start, e1 end, e2 start, e2 end), "
                            f"got {list(markers)}")
        self.negative_label, self.markers = negative_label, tuple(markers)
        self.outside_label = negative_label  # --unseen-labels outside scores an unseen test relation as this

    @classmethod
    def options_from(cls, cfg) -> dict:
        if getattr(cfg, "peft", "none") != "none":
            raise XlmrError(f"--task relation trains new marker embeddings, which --peft {cfg.peft} would not save; "
                            f"use --peft none")
        return {"negative_label": getattr(cfg, "negative_label", None) or NEGATIVE}

    def options(self) -> dict:
        return {"negative_label": self.negative_label, "markers": list(self.markers)}

    # -- labels: C relations; the model's head has 2C rows -------------------------------------

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate([ROLE[0] + x for x in self.labels] + [ROLE[1] + x for x in self.labels]))

    def set_labels(self, labels) -> None:
        """A label list, or a fine-tuned model's config.id2label (2C rows `<e1> X`, `<e2> X`)."""
        super().set_labels(labels)
        half = len(self.labels) // 2
        if (self.labels and len(self.labels) % 2 == 0 and all(x.startswith(ROLE[0]) for x in self.labels[:half])
                and [x[len(ROLE[0]):] for x in self.labels[:half]] == [x[len(ROLE[1]):] for x in self.labels[half:]]):
            self.labels = [x[len(ROLE[0]):] for x in self.labels[:half]]

    def example_labels(self, example: RelationExample):
        return () if example.label is None else ((example.label, example.path, example.label_line),)

    def replace_labels(self, example: RelationExample, known: set[str], outside: str) -> list[str]:
        if example.label is None or example.label in known:
            return []
        old, example.label = example.label, outside
        return [old]

    # -- reading, model set-up, encoding -------------------------------------------------------

    def read(self, path) -> list[RelationExample]:
        """A KBP37/RELX `.txt` file or a `.jsonl` file; every sentence's markers are checked."""
        path = str(path)
        suffix = Path(path).suffix.lower()
        if suffix in (".jsonl", ".json", ".ndjson"):
            examples = read_jsonl(path, self.markers)
        elif suffix == ".txt":
            examples = read_kbp37(path)
        else:
            raise XlmrError(f"{path}: unknown format {suffix or '(no suffix)'!r}; expected .txt (KBP37/RELX) or .jsonl")
        for ex in examples:
            problem = marker_problem(ex.text, self.markers)
            if problem:
                raise XlmrError(f"{path}:{ex.line}: {problem}")
        if not examples:
            raise XlmrError(f"{path}:1: empty file: no examples found")
        return examples

    def prepare_model(self, model: nn.Module, tokenizer) -> MarkerTokens | None:
        """Add the markers to the tokenizer and their embedding rows to the model (add_marker_tokens)."""
        return add_marker_tokens(model, tokenizer, self.markers)

    def _marker_ids(self, tokenizer) -> list[int]:
        ids = tokenizer.convert_tokens_to_ids(list(self.markers))
        missing = [m for m, i in zip(self.markers, ids) if i is None]
        if missing:
            raise XlmrError(f"the tokenizer has no {' '.join(missing)} token: use a model fine-tuned with --task "
                            f"relation (fine-tuning adds the markers)")
        return ids

    def encode(self, examples, tokenizer, max_length=MAX_LENGTH, stride=STRIDE) -> list[RelationFeature]:
        """One row per example, windowed around the entities when longer than max_length (`stride` unused).
        A prediction-input example whose markers are wrong, or whose entities alone do not fit, gets
        `error` set and no row."""
        labelled = self._label_ids_ready(examples)
        ids_of = self.label2id
        marker_ids = self._marker_ids(tokenizer)
        n_special = sum(tokenizer.encode([""], max_length=None).attention_mask[0])
        budget = max_length - n_special
        feats, cut, gap = [], 0, 0
        todo = [i for i, ex in enumerate(examples) if ex.error is None]
        for s in range(0, len(todo), 512):
            idx = todo[s:s + 512]
            batch = tokenizer.encode([examples[i].text for i in idx], max_length=None)
            for i, row, mask in zip(idx, batch.input_ids, batch.attention_mask):
                row = row[:sum(mask)]
                first = min(n_special, 1)  # <s>/[CLS] before the text, the rest (</s>/[SEP]) after it
                head, content, tail = row[:first], row[first:len(row) - n_special + first], row[len(row) - n_special + first:]
                at = [content.index(m) for m in marker_ids]
                keep = window(len(content), [(at[0], at[1]), (at[2], at[3])], budget)
                ex = examples[i]
                if keep is None:
                    msg = (f"the two marked entities take {at[1] - at[0] + at[3] - at[2] + 2} tokens, more than "
                           f"max_length {max_length} leaves ({budget})")
                    if ex.path:
                        raise XlmrError(f"{ex.path}:{ex.line}: {msg}")
                    ex.error = msg
                    continue
                cut += len(keep) == 1 and keep[0] != (0, len(content))
                gap += len(keep) == 2
                ids = head + [t for a, b in keep for t in content[a:b]] + tail
                feats.append(RelationFeature(ids, ids_of[ex.label] if labelled else IGNORE, i, [0] * len(ids),
                                             e1=ids.index(marker_ids[0]), e2=ids.index(marker_ids[2])))
        if cut or gap:
            warnings.warn(f"{cut + gap} of {len(examples)} examples were longer than max_length={max_length}: "
                          f"{cut} windowed around their entities, {gap} with the entities further apart than a row "
                          f"holds (the middle of the gap between them dropped)", stacklevel=2)
        return feats

    def collate(self, features: list[RelationFeature], pad_id: int) -> dict[str, torch.Tensor]:
        """Padded (B, T) inputs, labels (B,) and the start-marker positions e1, e2 (B,)."""
        T = max(len(f) for f in features)
        pad = lambda row, v: row + [v] * (T - len(row))
        return {"input_ids": torch.tensor([pad(f.input_ids, pad_id) for f in features], dtype=torch.long),
                "attention_mask": torch.tensor([pad([1] * len(f), 0) for f in features], dtype=torch.long),
                "token_type_ids": torch.tensor([pad(f.token_type_ids, 0) for f in features], dtype=torch.long),
                "labels": torch.tensor([f.labels for f in features], dtype=torch.long),
                "e1": torch.tensor([f.e1 for f in features], dtype=torch.long),
                "e2": torch.tensor([f.e2 for f in features], dtype=torch.long)}

    def combine(self, at_e1: torch.Tensor, at_e2: torch.Tensor) -> torch.Tensor:
        """Head outputs at <e1> and <e2>, each (B, 2C) -> relation logits (B, C) = W [h1; h2] + b."""
        C = len(self.labels)
        return at_e1[:, :C] + at_e2[:, C:]

    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of the relation logits; the last layer runs at the 2B start markers only."""
        ids = batch["input_ids"]
        B, T = ids.shape
        rows = torch.arange(B, device=ids.device) * T
        at = torch.cat([rows + batch["e1"].to(ids.device), rows + batch["e2"].to(ids.device)])  # (2B,) into B*T
        out = model(ids, batch["attention_mask"], batch["token_type_ids"], positions=at)  # (2B, 2C)
        return self.loss(self.combine(out[:B], out[B:]), batch)

    def unbatch(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """Token logits (B, T, 2C) -> per-row relation logits (C,), float32."""
        rows = torch.arange(logits.shape[0], device=logits.device)
        e1, e2 = batch["e1"].to(logits.device), batch["e2"].to(logits.device)
        return list(self.combine(logits[rows, e1], logits[rows, e2]).detach().float().cpu().numpy())

    # -- predictions and metrics ---------------------------------------------------------------

    def predict(self, outputs, features, examples) -> list[RelationPrediction | None]:
        """Argmax relation and softmax probabilities per example (None for an example without a row)."""
        preds: list[RelationPrediction | None] = [None] * len(examples)
        for out, f in zip(outputs, features):
            p = softmax(out)
            preds[f.example] = RelationPrediction(self.labels[int(np.argmax(p))], [float(x) for x in p])
        return preds

    def metrics(self, examples, predictions) -> dict:
        """micro_f1/micro_precision/micro_recall without the negative label, relx_f1, accuracy, per_relation."""
        return relation_scores([ex.label for ex in examples], [p.label for p in predictions], self.negative_label,
                               self.labels)

    def report(self, examples, predictions) -> str:
        """The headline scores, then P/R/F1/support per relation."""
        m = self.metrics(examples, predictions)
        lines = [f"micro-F1 without {self.negative_label}: {m['micro_f1']:.4f} (P {m['micro_precision']:.4f}, "
                 f"R {m['micro_recall']:.4f}); RELX-script F1 {m['relx_f1']:.4f}; accuracy {m['accuracy']:.4f} over "
                 f"{len(examples)} examples", "",
                 f"{'relation':<44} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
        for label, s in m["per_relation"].items():
            lines.append(f"{label:<44} {s['precision']:>9.4f} {s['recall']:>9.4f} {s['f1']:>9.4f} {s['support']:>8}")
        return "\n".join(lines)

    def write_report_files(self, examples, predictions, out_dir, lang) -> None:
        """confusion_LANG.png (rows gold, columns predicted)."""
        from .report import write_confusion_matrix

        write_confusion_matrix([ex.label for ex in examples], [p.label for p in predictions], self.labels,
                               Path(out_dir) / f"confusion_{lang}.png", title=f"{lang} confusion matrix")

    # -- raw-text prediction (xlmr predict, xlmr serve) ----------------------------------------

    def example_from_text(self, text: str, pair: str | None = None) -> RelationExample:
        """A marked text; a text without valid markers (or with a pair) is answered with its error."""
        problem = "relation takes one marked text, not a text pair" if pair is not None else \
            marker_problem(text, self.markers)
        return RelationExample(text, error=problem)

    def empty_prediction(self, text: str) -> dict:
        return {"text": text, "relation": None, "probs": {}}

    def to_json(self, text: str, example: RelationExample, prediction: RelationPrediction | None) -> dict:
        """{"text", "relation", "score", "probs", "e1", "e2"} with the entities' character spans in `text`;
        {"text", "relation": null, "error"} when the text cannot be scored."""
        if prediction is None:
            return {"text": text, "relation": None, "error": example.error or "not scored"}
        (a1, b1), (a2, b2) = entity_spans(text, self.markers)
        probs = {label: round(p, 6) for label, p in zip(self.labels, prediction.probs)}
        return {"text": text, "relation": prediction.label, "score": probs[prediction.label], "probs": probs,
                "e1": {"start": a1, "end": b1, "text": text[a1:b1]}, "e2": {"start": a2, "end": b2, "text": text[a2:b2]}}
