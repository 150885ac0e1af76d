"""Fine-tuning, cross-lingual evaluation and prediction: tasks + the shared loop + checkpoints."""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from . import resume
from .batching import EpochBatches
from .checkpoint import TASK_FILE, check_length, copy_tokenizer, load, load_task_info, read_config, resolve
from .errors import XlmrError
from .io import atomic_write_json
from .options import lang_values
from .peft_methods import PeftOptions, apply_method, language_switch, load_model, save_weights
from .rundir import run_directory
from .tasks.base import MAX_LENGTH, STRIDE
from .tokenizer import Tokenizer
from .train import LoopState, TrainConfig, apply_embedding_mode, autocast_device, seed_everything, set_threads, train


@dataclass
class FinetuneConfig(PeftOptions, resume.ResumeOptions, TrainConfig):
    """What `xlmr finetune` takes: data, task and model options on top of TrainConfig."""

    model: str = field(default="", metadata={"help": "checkpoint directory or hub name"})
    task: str = field(default="ner", metadata={"help": "ner, classify, pos, qa, relation or retrieval (or a registered task)"})
    train: str = field(default="", metadata={"help": "training file"})
    dev: str = field(default="", metadata={"help": "dev file (keeps the best checkpoint by its metric)"})
    test: list[str] = field(default_factory=list, metadata={"help": "test sets as LANG=PATH"})
    unseen_labels: Literal["error", "outside"] = field(default="error", metadata={
        "help": "a test-set gold label that training never saw: an error, or (ner) scored as O, with a "
                "warning and a line in report.md"})
    out: str = field(default="runs/finetune", metadata={"help": "output directory"})
    max_length: int = field(default=MAX_LENGTH, metadata={"min": 1, "help": "max tokens per row (longer inputs: windows)"})
    stride: int = field(default=STRIDE, metadata={
        "help": "overlap of windows (NER/POS, QA contexts, and classify with --windows), in subwords"})
    batch_size: int = field(default=32, metadata={"min": 1, "help": "rows per batch"})
    max_tokens: int = field(default=0, metadata={"help": "padded tokens per batch (0: no cap)"})
    max_train: int = field(default=0, metadata={"help": "use only the first N training examples (0: all)"})
    max_eval: int = field(default=0, metadata={"help": "use only the first N dev/test examples (0: all)"})
    text_column: str | None = field(default=None, metadata={"help": "classify: text column"})
    text_pair_column: str | None = field(default=None, metadata={"help": "classify: second text column"})
    label_column: str | None = field(default=None, metadata={"help": "classify: label column"})
    windows: bool = field(default=False, metadata={
        "help": "classify: read the whole text in windows of --max-length tokens overlapping by --stride, in "
                "training and prediction, and pool them by --doc-pooling (off: only the first --max-length tokens)"})
    doc_pooling: Literal["first", "mean", "max"] | None = field(default=None, metadata={
        "help": "classify with --windows: how a document's window logits become one: the first window's, their "
                "mean or their per-label max (unset: mean)"})
    scheme: str = field(default="auto", metadata={"help": "ner tag scheme: auto, IOB1, IOB2, BIOES"})
    negative_label: str = field(default="no_relation", metadata={
        "help": "relation: the label meaning no relation, left out of micro-F1"})
    classifier_pooling: Literal["auto", "cls", "mean"] = field(default="auto", metadata={
        "help": "classify: what the sentence head reads: the first token (cls, as transformers), the mean of "
                "the last hidden states (mean), or auto (the checkpoint's; mean for a BERT checkpoint "
                "without a pooler, such as multilingual-e5-small)"})
    pooling: Literal["mean", "cls", "max"] = field(default="mean", metadata={
        "help": "retrieval: how the token vectors become one sentence vector"})
    prefix: str = field(default="", metadata={"help": "retrieval: text put before every sentence (e5: 'query: ')"})
    teacher: str = field(default="", metadata={
        "help": "retrieval: distil this model's embeddings of each source into both sides of its pair "
                "(default: in-batch negatives)"})
    threads: int = field(default=0, metadata={"help": "CPU threads (0: the cores the load leaves idle)"})
    save_every: int = field(default=0, metadata={
        "help": "write a training checkpoint to out/checkpoints every N steps, so that the same command "
                "resumes an interrupted run (0: never)"})

    def __post_init__(self):
        from .tasks.classify import check_windows

        super().__post_init__()
        check_windows(self.windows, self.doc_pooling, self.task)


def parse_tests(specs: list[str]) -> dict[str, str]:
    """['de=path', ...] -> {'de': 'path'}; a bare path is named after its parent directory (a directory,
    which the retrieval task reads, after itself); a language given twice is an error."""
    bare = lambda spec: (Path(spec).name if Path(spec).is_dir() else Path(spec).parent.name) or "test"
    out = lang_values(specs, "--test", bare=bare)
    for lang, path in out.items():
        if not Path(path).exists():
            raise XlmrError(f"{path}: no such test file (from --test {lang}={path})")
    return out


def device_of() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _limit(items: list, n: int) -> list:
    return items[:n] if n else items


def finetune(cfg: FinetuneConfig) -> dict:
    """Train on `cfg.train`, keep the best dev checkpoint in out/best, evaluate every test set.
    Holds the lock on `cfg.out` for the whole run (see xlmr.rundir)."""
    if not cfg.model or not cfg.train:
        raise XlmrError("finetune needs --model and --train")
    with run_directory(cfg.out) as run:
        return _finetune(cfg, run.run_id)


def _finetune(cfg: FinetuneConfig, run_id: str) -> dict:
    from .tasks import run_model, task_from_config

    seed_everything(cfg.seed)
    src = resolve(cfg.model)
    check_length(read_config(src)[0], cfg.max_length, "--max-length", src)
    tok = Tokenizer.from_pretrained(src)
    task = task_from_config(cfg)
    train_ex, dev_ex, tests, unseen = _read_sets(task, cfg)

    device = device_of()
    threads = set_threads(cfg.threads) if device.type == "cpu" else 0
    pooling = None if cfg.classifier_pooling == "auto" else cfg.classifier_pooling
    model = load(src, head=task.head, id2label=task.id2label, classifier_pooling=pooling).to(device)
    saved_tok = tok if task.prepare_model(model, tok) else None  # a tokenizer the task changed is saved as is
    emb_mode = apply_embedding_mode(model, cfg.embeddings)
    method = apply_method(model, cfg)  # which parameters train; the loop below is the same for all
    features = task.encode(train_ex, tok, cfg.max_length, cfg.stride)
    plan = lambda epoch: task.train_batches(features, cfg.batch_size, cfg.max_tokens, cfg.seed, epoch)
    steps_per_epoch = len(plan(0)) // cfg.grad_accum
    batches = EpochBatches(plan, lambda idx: {k: v.to(device) for k, v in
                                              task.collate([features[i] for i in idx], tok.pad_token_id).items()})

    out = Path(cfg.out)
    best_dir = out / "best"
    dev_features = task.encode(dev_ex, tok, cfg.max_length, cfg.stride) if dev_ex else []

    def evaluate(m):
        preds = task.predict(run_model(m, task, dev_features, tok.pad_token_id), dev_features, dev_ex)
        return task.metrics(dev_ex, preds)

    def on_best(m, metrics):
        save_finetuned(m, best_dir, src, cfg, task, saved_tok)

    print(f"xlmr: {cfg.task} on {len(train_ex)} examples ({len(features)} rows), {len(task.labels)} labels, "
          f"{steps_per_epoch} steps/epoch, device {device}" + (f", {threads} threads" if threads else "") +
          f", {emb_mode} embeddings, {'bf16 autocast' if autocast_device(device, cfg.bf16) else 'fp32'}"
          + task.model_note(model), file=sys.stderr)
    restore, on_step = _checkpoint_hooks(out / "checkpoints", model, cfg, batches)
    result = train(model, batches, task.training_loss, cfg, steps_per_epoch=steps_per_epoch,
                   evaluate=evaluate if dev_ex else None, metric=task.main_metric, on_best=on_best, out_dir=out,
                   restore=restore, on_step=on_step, run_id=run_id)
    if not dev_ex:
        save_finetuned(model, best_dir, src, cfg, task, saved_tok)
    summary = {"steps": result.steps, "train_seconds": round(result.seconds, 2), "best_dev": result.best_metric,
               "best_step": result.best_step, "model": str(best_dir), **method.report(result, best_dir)}
    if tests:
        summary["test"] = _test_best(best_dir, tok, task, tests, unseen, cfg, device)
    atomic_write_json(out / "summary.json", summary, indent=2)
    return summary


def _read_sets(task, cfg: FinetuneConfig):
    """Training examples (labels built from them), dev examples and test sets {lang: examples}, all
    checked against the label set; plus the unseen-label counts of check_test_labels."""
    train_ex = _limit(task.read(cfg.train), cfg.max_train)
    task.build_labels(train_ex)
    dev_ex = _limit(task.read(cfg.dev), cfg.max_eval) if cfg.dev else []
    task.check_labels(dev_ex)
    tests = {lang: _limit(task.read(path), cfg.max_eval) for lang, path in parse_tests(cfg.test).items()}
    return train_ex, dev_ex, tests, check_test_labels(task, tests, cfg.unseen_labels)


def _test_best(best_dir: Path, tok, task, tests: dict[str, list], unseen, cfg: FinetuneConfig, device) -> dict:
    """Evaluate the saved best model on every test set; the training language's report is the one printed."""
    best = load_model(best_dir, cfg.language_adapter).to(device)
    source = next((lang for lang, path in parse_tests(cfg.test).items()
                   if Path(path).parent == Path(cfg.train).parent), None)  # the training language
    return evaluate_sets(best, tok, task, tests, Path(cfg.out), cfg.max_length, cfg.stride,
                         switch=language_switch(best), report_lang=source, unseen=unseen)


def _checkpoint_hooks(root: Path, model, cfg: FinetuneConfig, batches: EpochBatches):
    """The loop's restore and on_step for training checkpoints (see resume.Resumer)."""
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    ckpt = resume.Resumer(root, model, cfg, batches.state_dict, batches.load_state_dict, log=log)

    def restore(m, optimizers) -> LoopState | None:
        loop = ckpt.restore(m, optimizers)
        if loop is not None and batches.epoch_done():  # saved at an epoch's last step: go on with the next
            loop.epoch += 1
            batches.load_state_dict({"epoch": loop.epoch, "taken": 0})
        return loop

    return restore, ckpt.on_step


def check_test_labels(task, tests: dict[str, list], policy: str = "error") -> dict[str, dict[str, int]] | None:
    """Test-set gold labels against the training label set. 'error': the first unseen one is an error.
    'outside': unseen ones are scored as the task's outside label (O), with one warning for all sets;
    returns {lang: {label: count}} for the report (None under 'error')."""
    if policy == "error":
        for examples in tests.values():
            task.check_labels(examples)
        return None
    unseen = {lang: task.relabel_unseen(examples) for lang, examples in tests.items()}
    if any(unseen.values()):
        warnings.warn(f"--unseen-labels outside: gold labels not seen in training are scored as "
                      f"'{task.outside_label}': {unseen_note(unseen)}")
    return unseen


def unseen_note(unseen: dict[str, dict[str, int]]) -> str:
    """'sw: B-DATE 12, I-DATE 7; yo: none' (tag counts per language)."""
    return "; ".join(f"{lang}: " + (", ".join(f"{label} {n}" for label, n in counts.items()) or "none")
                     for lang, counts in unseen.items())


def save_finetuned(model, directory: Path, tokenizer_src: Path, cfg, task, tokenizer=None) -> None:
    """HF checkpoint + tokenizer files + the task options evaluate/predict need. `tokenizer`, when the
    task changed it (Task.prepare_model), is saved over the copied source files."""
    save_weights(model, directory, cfg)  # full checkpoint, or only what the PEFT method trained
    copy_tokenizer(tokenizer_src, directory)
    if tokenizer is not None:
        tokenizer.save(directory)
    info = {"task": cfg.task, "options": task.options(), "max_length": cfg.max_length, "stride": cfg.stride}
    atomic_write_json(directory / TASK_FILE, info, indent=2)


def evaluate_sets(model, tok, task, tests: dict[str, list], out: Path, max_length: int, stride: int,
                  switch=None, report_lang: str | None = None, unseen: dict[str, dict[str, int]] | None = None) -> dict:
    """Evaluate each language: print the table, write results.json, report.md and PNGs.
    `switch(lang)`, if given, runs before each language (swaps in its MAD-X language adapter).
    The printed report is `report_lang`'s (the training language), else the first language's.
    `unseen` (from check_test_labels) is stated in report.md and results.json."""
    from .tasks import evaluate, format_table, write_results

    results, reports = {}, {}
    for lang, examples in tests.items():
        if switch:
            switch(lang)
        t0 = time.perf_counter()
        preds, metrics = evaluate(model, task, examples, tok, max_length, stride)
        metrics["seconds"] = round(time.perf_counter() - t0, 3)
        results[lang] = metrics
        reports[lang] = task.report(examples, preds)
        task.write_report_files(examples, preds, out, lang)
    print(format_table(results, task.columns))
    shown = report_lang if report_lang in reports else next(iter(reports))
    print(f"\n{shown} report:\n{reports[shown]}")
    meta = None
    if unseen is not None:
        for lang, counts in unseen.items():
            results[lang]["unseen_labels_scored_as_outside"] = counts
        meta = {"unseen labels": f"gold labels not seen in training are scored as '{task.outside_label}' "
                                 f"(--unseen-labels outside): {unseen_note(unseen)}"}
    write_results(out, results, task.columns, reports=reports, meta=meta)
    return results


def evaluate_model(model_path: str, tests: list[str], out: str, task_name: str | None = None,
                   max_eval: int = 0, language_adapters: list[str] = (), unseen_labels: str = "error",
                   options: dict | None = None) -> dict:
    """`xlmr evaluate`: one row per language plus the average; results.json and report.md in `out`
    (held locked while it runs, see xlmr.rundir). `options` override the task options the model was
    saved with (retrieval: pooling, prefix)."""

    with run_directory(out) as run:
        directory = resolve(model_path)
        info = load_task_info(directory, task_name)
        model = load_model(directory, language_adapters).to(device_of())
        task = task_with_options(info["task"], {**info.get("options", {}), **(options or {})})
        task.set_labels(model.config.id2label)
        tok = Tokenizer.from_pretrained(directory)
        sets = {lang: _limit(task.read(path), max_eval) for lang, path in parse_tests(tests).items()}
        unseen = check_test_labels(task, sets, unseen_labels)
        return evaluate_sets(model, tok, task, sets, run.out, info.get("max_length", MAX_LENGTH),
                             info.get("stride", STRIDE), switch=language_switch(model), unseen=unseen)


def task_with_options(name: str, options: dict):
    """The task `name` with `options`; an option the task does not take is an XlmrError naming it."""
    import inspect

    from .tasks import task_class

    cls = task_class(name)
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    extra = sorted(set(options) - known)
    if extra:
        raise XlmrError(f"the {name} task takes no option {', '.join('--' + k.replace('_', '-') for k in extra)}")
    return cls(**options)
