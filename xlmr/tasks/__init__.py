"""Fine-tuning tasks: classify, ner, pos. Each task reads files, encodes, computes loss and metrics.

API (every task class has the same methods; `TASKS` maps names to classes):

    task = get_task("ner", scheme="auto")          # or Classify(text_column=..., label_column=...), Pos()
    train = task.read(path)                        # validated examples; XlmrError "file:line: problem"
    task.build_labels(train)                       # label list from training data (or task.set_labels(id2label))
    feats = task.encode(examples, tokenizer, max_length=128, stride=32)   # unpadded Features
    batch = task.collate(feats[i:j], tokenizer.pad_token_id)              # dict of tensors, labels -100 padded
    loss = task.loss(model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]), batch)
    outputs = run_model(model, task, feats, pad_id)  # per-feature logits, batched by length
    preds = task.predict(outputs, feats, examples)   # one prediction per example (windows merged)
    task.metrics(examples, preds) -> dict           # headline keys: task.columns; task.main_metric
    task.report(examples, preds) -> str             # classification report(s)
    predictions, metrics = evaluate(model, task, examples, tokenizer, max_length, stride)

Model head: `task.head` ('token' or 'sequence'); labels: `task.labels`, `task.id2label`.
NER extras: `ner.split_words(text)`, `ner.char_entities(text, spans, tags, scores)`.
Classify extras: `Classify.read(path, labelled=False)`, `Classify.confusion_matrix(examples, preds, png)`.
Reports: `report.format_table(results, columns)`, `report.write_results(out_dir, results, columns, ...)`.
"""

from .base import IGNORE, Feature, Task, evaluate, run_model
from .classify import ClassPrediction, Classify, TextExample
from .ner import Ner, char_entities, split_words
from .pos import Pos
from .report import format_table, write_confusion_matrix, write_results
from .words import WordExample, WordPrediction

TASKS: dict[str, type[Task]] = {"classify": Classify, "ner": Ner, "pos": Pos}


def get_task(name: str, **options) -> Task:
    """A task by name, with its options (e.g. scheme for ner, column names for classify)."""
    from ..errors import XlmrError

    if name not in TASKS:
        raise XlmrError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[name](**options)


__all__ = ["TASKS", "get_task", "Task", "Feature", "IGNORE", "run_model", "evaluate",
           "Classify", "TextExample", "ClassPrediction", "Ner", "Pos", "WordExample", "WordPrediction",
           "split_words", "char_entities", "format_table", "write_results", "write_confusion_matrix"]
