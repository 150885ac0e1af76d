"""Fine-tuning tasks: classify, ner, pos, qa, relation, retrieval. Each task reads files, encodes, computes
loss and metrics.

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
    task.write_report_files(examples, preds, out_dir, lang)   # extra files (classify: confusion PNG)
    loss = task.training_loss(model, batch)          # what the fine-tuning loop minimises
    task.options(), Task.options_from(cfg)           # constructor options: saved / taken from the CLI
    ex = task.example_from_text(text, pair)          # raw text -> unlabelled example (predict, serve)
    exs = task.examples_from_raw(texts, tokenizer)   # the same, words from the tokenizer (zh, ja, th...)
    task.to_json(text, ex, pred), task.empty_prediction(text)   # one prediction as JSON
    predictions, metrics = evaluate(model, task, examples, tokenizer, max_length, stride)

A new task is one file: subclass Task (or WordTask), set `name` and `head`, implement the methods
above, and call `register_task(cls)`; finetune, evaluate, predict and serve then take `--task NAME`.

Model head: `task.head` ('token', 'sequence', 'qa' or 'base'); labels: `task.labels`, `task.id2label`.
Word extras: `split_words(text)`, `words.tokenizer_words(texts, tokenizer)`;
NER: `ner.char_entities(text, spans, tags, scores)`.
Relation extras: `task.prepare_model(model, tokenizer)` adds the entity markers (see relation.py).
Retrieval (parallel files or source<TAB>target TSV; head 'base'): see tasks/retrieval.py.
Classify extras: `Classify.read(path, labelled=False)`, `Classify.confusion_matrix(examples, preds, png)`.
QA extras: `qa.read_squad(path)`, `qa.squad_scores(predictions, golds, normalizer)`, `qa.normalize_answer`.
Reports: `report.format_table(results, columns)`, `report.write_results(out_dir, results, columns, ...)`.
"""

from .base import IGNORE, Feature, Task, evaluate, run_model
from .classify import ClassPrediction, Classify, TextExample
from .ner import Ner, char_entities
from .pos import Pos
from .retrieval import PairExample, Retrieval
from .report import format_table, write_confusion_matrix, write_results
from .words import WordExample, WordPrediction, WordTask, split_words

TASKS: dict[str, type[Task]] = {"classify": Classify, "ner": Ner, "pos": Pos, "retrieval": Retrieval}


def register_task(cls: type[Task]) -> type[Task]:
    """Make a Task subclass available by its `name` to get_task (and so to every command); usable as a
    class decorator. A name already taken by another class is an error."""
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"register_task takes a Task subclass, got {cls!r}")
    if TASKS.get(cls.name, cls) is not cls:
        raise ValueError(f"task name {cls.name!r} is already registered to {TASKS[cls.name].__qualname__}")
    TASKS[cls.name] = cls
    return cls


from .qa import Qa, QaExample  # noqa: E402 (registered through the same door as any new task)

register_task(Qa)
from .relation import Relation  # noqa: E402

register_task(Relation)


def task_class(name: str) -> type[Task]:
    """The registered task class called `name`; an unknown name is an XlmrError listing the known ones."""
    from ..errors import XlmrError

    if name not in TASKS:
        raise XlmrError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[name]


def get_task(name: str, **options) -> Task:
    """A task by name, with its options (e.g. scheme for ner, column names for classify)."""
    return task_class(name)(**options)


def task_from_config(cfg) -> Task:
    """The task `cfg.task` names, with its options taken from the config (see Task.options_from)."""
    cls = task_class(cfg.task)
    return cls(**cls.options_from(cfg))


__all__ = ["TASKS", "get_task", "register_task", "task_class", "task_from_config", "Task", "WordTask", "Feature",
           "IGNORE", "run_model", "evaluate",
           "Classify", "TextExample", "ClassPrediction", "Ner", "Pos", "Qa", "QaExample", "Relation", "Retrieval",
           "PairExample", "WordExample", "WordPrediction",
           "split_words", "char_entities", "format_table", "write_results", "write_confusion_matrix"]
