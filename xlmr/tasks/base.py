"""The task interface shared by classify, ner and pos, plus batched inference over features.

A task turns files into examples, examples into unpadded features (one model input row each), and
model outputs back into per-example predictions and metrics. The training loop only needs
`encode`, `collate`, `training_loss`, and for evaluation `run_model` + `predict` + `metrics`.
Everything that differs between tasks lives on the task (its CLI options, its loss, its report
files, its prediction JSON), so that finetune, predict and serve never ask which task they hold.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..batching import length_grouped_batches, sorted_batches
from ..errors import XlmrError

IGNORE = -100  # label id that cross-entropy skips (non-first subwords, special tokens, padding)
MAX_LENGTH = 128  # default tokens per model row (longer inputs are cut into windows)
STRIDE = 32  # default overlap of the windows of a long NER/POS sentence, in subwords


@dataclass
class Feature:
    """One unpadded model input row.

    labels: per token for tagging tasks (IGNORE off the first subword of a word), one class id for
    sequence tasks (IGNORE when unlabelled). `example` indexes the example the row came from.
    Tagging rows also carry `words` (per token: the word whose label sits there, else -1) and
    `window` = (start, end, total, prefix): the row holds content subwords [start, end) of `total`,
    after `prefix` special tokens.
    """

    input_ids: list[int]
    labels: Any
    example: int
    token_type_ids: list[int] | None = None
    words: list[int] | None = None
    window: tuple[int, int, int, int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


class Task:
    """Base class: subclasses set `name`, `head`, `main_metric`, `columns` and implement the I/O."""

    name = "task"
    head = "token"  # model head: 'token' -> logits (B, T, C); 'sequence' -> (B, C)
    main_metric = "accuracy"  # the dev metric to keep the best checkpoint by (higher is better)
    columns: tuple[str, ...] = ("accuracy",)  # metrics shown in the per-language table
    outside_label: str | None = None  # what an unseen gold label can be scored as (ner: "O"); None: no such label
    pair_required = False  # True: every raw input is a text and its pair (qa: question and context)

    def __init__(self) -> None:
        self.labels: list[str] = []

    # -- options: what the CLI sets and xlmr_task.json keeps ----------------------------------

    @classmethod
    def options_from(cls, cfg) -> dict:
        """This task's constructor options, taken from a fine-tuning config (e.g. FinetuneConfig.scheme)."""
        return {}

    def options(self) -> dict:
        """The constructor options saved with a fine-tuned model: `type(self)(**options)` rebuilds the task."""
        return {}

    # -- labels --------------------------------------------------------------------------------

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    def example_labels(self, example) -> Iterable[tuple[str, str, int]]:
        """(label, path, line) for every gold label of one example; empty when unlabelled."""
        raise NotImplementedError

    def label_list(self, found: set[str]) -> list[str]:
        """The label set to train with, from the labels found in training data."""
        return sorted(found)

    def build_labels(self, examples: list) -> list[str]:
        """Set (and return) the label list from training examples."""
        found = {label for ex in examples for label, _, _ in self.example_labels(ex)}
        if not found:
            files = sorted({str(getattr(ex, "path", "")) for ex in examples} - {""})
            raise XlmrError(f"{', '.join(files) or 'training data'}: training data has no labels")
        self.labels = self.label_list(found)
        return self.labels

    def set_labels(self, labels: list[str] | dict[int, str]) -> None:
        """Use a fixed label list, e.g. a fine-tuned model's `config.id2label`."""
        self.labels = [labels[i] for i in sorted(labels, key=int)] if isinstance(labels, dict) else list(labels)

    def check_labels(self, examples: list) -> None:
        """Raise on the first gold label outside the label set, naming its file, line and the known labels."""
        known = self.label2id
        for ex in examples:
            for label, path, line in self.example_labels(ex):
                if label not in known:
                    raise XlmrError(f"{path}:{line}: label {label!r} was not seen in training; "
                                    f"known labels: {', '.join(self.labels)}")

    def relabel_unseen(self, examples: list) -> dict[str, int]:
        """Replace every gold label outside the label set by `outside_label`, in place (XTREME-style
        transfer: a test set's entity types that training never saw count as O). Returns {label: count}."""
        if self.outside_label is None:
            raise XlmrError(f"--unseen-labels outside scores unseen labels as the outside label O, which the "
                            f"{self.name} task does not have (ner does)")
        counts: dict[str, int] = {}
        for ex in examples:
            for label in self.replace_labels(ex, set(self.labels), self.outside_label):
                counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items()))

    def replace_labels(self, example, known: set[str], outside: str) -> list[str]:
        """Set the example's gold labels outside `known` to `outside`; return the labels replaced."""
        raise NotImplementedError

    def _label_ids_ready(self, examples: list) -> bool:
        """True when the examples carry gold labels (checked against the label set)."""
        labelled = any(True for ex in examples[:1] for _ in self.example_labels(ex))
        if labelled:
            if not self.labels:
                raise ValueError("no label set: call build_labels(train) or set_labels(...) first")
            self.check_labels(examples)
        return labelled

    # -- reading, encoding, batching -----------------------------------------------------------

    def read(self, path: str | os.PathLike) -> list:
        """Read and validate one data file."""
        raise NotImplementedError

    def encode(self, examples: list, tokenizer, max_length: int = MAX_LENGTH, stride: int = STRIDE) -> list[Feature]:
        """Examples -> unpadded features (labels checked against the label set)."""
        raise NotImplementedError

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        """Pad features into a batch: input_ids, attention_mask, token_type_ids (B, T) and labels."""
        T = max(len(f) for f in features)
        ids = [f.input_ids + [pad_id] * (T - len(f)) for f in features]
        mask = [[1] * len(f) + [0] * (T - len(f)) for f in features]
        types = [(f.token_type_ids or [0] * len(f)) + [0] * (T - len(f)) for f in features]
        if self.head == "token":
            labels = [list(f.labels) + [IGNORE] * (T - len(f)) for f in features]  # (B, T)
        else:
            labels = [f.labels for f in features]  # (B,)
        return {"input_ids": torch.tensor(ids, dtype=torch.long),
                "attention_mask": torch.tensor(mask, dtype=torch.long),
                "token_type_ids": torch.tensor(types, dtype=torch.long),
                "labels": torch.tensor(labels, dtype=torch.long)}

    def train_batches(self, features: list[Feature], batch_size: int, max_tokens: int = 0, seed: int = 0,
                      epoch: int = 0) -> list[list[int]]:
        """One epoch's training batches (indices into `features`): length-grouped rows."""
        return length_grouped_batches([len(f) for f in features], batch_size, max_tokens, seed, epoch)

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy over labelled positions (IGNORE skipped); computed in float32."""
        labels = batch["labels"].to(logits.device)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                               ignore_index=IGNORE, reduction=reduction)

    def training_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of one training batch. A token task runs the last layer at labelled rows only
        (`positions`, flat row indices into (B*T)): the others never reach the loss."""
        ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        if self.head == "token":
            labels = batch["labels"].reshape(-1)  # (B*T,)
            at = labels.ne(IGNORE).nonzero().squeeze(1)  # (N,)
            logits = model(ids, mask, types, positions=at)  # (N, C)
            return self.loss(logits, {"labels": labels.index_select(0, at)})
        return self.loss(model(ids, mask, types), batch)

    def unbatch(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """Split batch logits into per-row float32 arrays: (T_i, C) for tagging, (C,) for sequences."""
        out = logits.detach().float().cpu().numpy()
        if self.head == "sequence":
            return list(out)
        lengths = batch["attention_mask"].sum(1).tolist()
        return [row[:n] for row, n in zip(out, lengths)]

    # -- predictions and metrics ---------------------------------------------------------------

    def predict(self, outputs: list[np.ndarray], features: list[Feature], examples: list) -> list:
        """Per-feature outputs (aligned with `features`) -> one prediction per example."""
        raise NotImplementedError

    def metrics(self, examples: list, predictions: list) -> dict:
        """Metrics as a JSON-able dict; `columns` name its headline floats."""
        raise NotImplementedError

    def report(self, examples: list, predictions: list) -> str:
        """A printable report (classification reports)."""
        raise NotImplementedError

    def write_report_files(self, examples: list, predictions: list, out_dir: Path, lang: str) -> None:
        """Extra files next to results.json for one test language (classify: a confusion matrix)."""

    def prepare_model(self, model: torch.nn.Module, tokenizer):
        """Fit a freshly loaded model and its tokenizer to the task before training, in place (relation:
        new marker tokens and their embedding rows). Returns what it changed, or None when nothing: then
        the fine-tuned directory copies the source's tokenizer files, else it saves `tokenizer`."""
        return None

    def model_note(self, model: torch.nn.Module) -> str:
        """What to say about the loaded model in the start-of-training line (sequence head: its pooling)."""
        return f", {model.config.classifier_pooling} pooling" if self.head == "sequence" else ""

    # -- raw-text prediction (xlmr predict, xlmr serve) ----------------------------------------

    def example_from_text(self, text: str, pair: str | None = None):
        """An unlabelled example for one raw input text (and optional pair text)."""
        raise NotImplementedError

    def examples_from_raw(self, texts: list[str], tokenizer, pairs: list[str | None] | None = None) -> list:
        """Unlabelled examples for raw texts whose words the tokenizer finds (word tasks; `--words
        tokenizer`); a task that reads whole texts takes them as `example_from_text` does."""
        return [self.example_from_text(t, pairs[i] if pairs else None) for i, t in enumerate(texts)]

    def empty_prediction(self, text: str) -> dict:
        """The JSON answer for a blank text, which never reaches the model."""
        raise NotImplementedError

    def to_json(self, text: str, example, prediction) -> dict:
        """The JSON answer for one raw text, its example (from example_from_text) and its prediction."""
        raise NotImplementedError


@torch.no_grad()
def run_model(model: torch.nn.Module, task: Task, features: list[Feature], pad_id: int, max_tokens: int = 16384,
              autocast_dtype: torch.dtype | None = None) -> list[np.ndarray]:
    """Logits for every feature, in the order of `features` (batched by length, model in eval mode)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs: list[np.ndarray | None] = [None] * len(features)
    try:
        for idx in sorted_batches([len(f) for f in features], batch_size=512, max_tokens=max_tokens):
            batch = task.collate([features[i] for i in idx], pad_id)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                               batch["token_type_ids"].to(device))
            for i, row in zip(idx, task.unbatch(logits, batch)):
                outputs[i] = row
    finally:
        model.train(was_training)
    return outputs


def evaluate(model: torch.nn.Module, task: Task, examples: list, tokenizer, max_length: int = MAX_LENGTH,
             stride: int = STRIDE, **kw) -> tuple[list, dict]:
    """Encode, run, predict and score: returns (predictions, metrics). `kw` goes to run_model."""
    features = task.encode(examples, tokenizer, max_length, stride)
    predictions = task.predict(run_model(model, task, features, tokenizer.pad_token_id, **kw), features, examples)
    return predictions, task.metrics(examples, predictions)


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 file's text (BOM dropped); a decode error names the line."""
    p = Path(path)
    if not p.is_file():
        raise XlmrError(f"{p}: no such file")
    data = p.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise XlmrError(f"{p}:{line}: not valid UTF-8 ({e.reason})") from None


def lines_of(text: str) -> list[str]:
    """Lines split on \\n only (str.splitlines would also split on U+2028, U+0085, ... inside tokens)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json.loads hook: a key given twice in one object is an error (json would keep the last silently)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def json_object(path: str | os.PathLike, line: int, raw: str) -> dict:
    """One JSONL line as a JSON object; invalid JSON, another type or a key given twice names the line."""
    try:
        rec = json.loads(raw, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise XlmrError(f"{path}:{line}: not valid JSON ({e.msg})") from None
    except _DuplicateKey as e:
        raise XlmrError(f"{path}:{line}: key {e.args[0]!r} appears twice in one object") from None
    except RecursionError:
        raise XlmrError(f"{path}:{line}: JSON nested too deeply") from None
    if not isinstance(rec, dict):
        raise XlmrError(f"{path}:{line}: expected a JSON object, found {type(rec).__name__}")
    return rec


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 for stable scores."""
    z = np.asarray(x, dtype=np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)
