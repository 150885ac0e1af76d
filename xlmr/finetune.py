"""Fine-tuning, cross-lingual evaluation and prediction: tasks + the shared loop + checkpoints."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .batching import length_grouped_batches
from .checkpoint import TASK_FILE, copy_tokenizer, load, load_task_info, resolve
from .errors import XlmrError
from .io import atomic_write_json
from .peft_methods import PeftOptions, apply_method, language_switch, load_model, save_weights
from .tasks.base import MAX_LENGTH, STRIDE
from .tokenizer import Tokenizer
from .train import TrainConfig, apply_embedding_mode, autocast_device, seed_everything, set_threads, train



@dataclass
class FinetuneConfig(PeftOptions, TrainConfig):
    """What `xlmr finetune` takes: data, task and model options on top of TrainConfig."""

    model: str = field(default="", metadata={"help": "checkpoint directory or hub name"})
    task: str = field(default="ner", metadata={"help": "ner, classify or pos"})
    train: str = field(default="", metadata={"help": "training file"})
    dev: str = field(default="", metadata={"help": "dev file (keeps the best checkpoint by its metric)"})
    test: list[str] = field(default_factory=list, metadata={"help": "test sets as LANG=PATH"})
    out: str = field(default="runs/finetune", metadata={"help": "output directory"})
    max_length: int = field(default=MAX_LENGTH, metadata={"help": "max tokens per row (longer inputs: windows)"})
    stride: int = field(default=STRIDE, metadata={"help": "overlap of NER/POS windows, in subwords"})
    batch_size: int = field(default=32, metadata={"help": "rows per batch"})
    max_tokens: int = field(default=0, metadata={"help": "padded tokens per batch (0: no cap)"})
    max_train: int = field(default=0, metadata={"help": "use only the first N training examples (0: all)"})
    max_eval: int = field(default=0, metadata={"help": "use only the first N dev/test examples (0: all)"})
    text_column: str | None = field(default=None, metadata={"help": "classify: text column"})
    text_pair_column: str | None = field(default=None, metadata={"help": "classify: second text column"})
    label_column: str | None = field(default=None, metadata={"help": "classify: label column"})
    scheme: str = field(default="auto", metadata={"help": "ner tag scheme: auto, IOB1, IOB2, BIOES"})
    threads: int = field(default=0, metadata={"help": "CPU threads (0: the cores the load leaves idle)"})


def parse_tests(specs: list[str]) -> dict[str, str]:
    """['de=path', ...] -> {'de': 'path'}; a bare path is named after its parent directory."""
    out = {}
    for spec in specs:
        lang, sep, path = spec.partition("=")
        if not sep:
            lang, path = Path(spec).parent.name or "test", spec
        if not Path(path).is_file():
            raise XlmrError(f"{path}: no such test file (from --test {spec})")
        out[lang] = path
    return out


def task_options(cfg) -> dict:
    if cfg.task == "classify":
        return {"text_column": cfg.text_column, "text_pair_column": cfg.text_pair_column,
                "label_column": cfg.label_column}
    if cfg.task == "ner":
        return {"scheme": cfg.scheme}
    return {}


def device_of() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _limit(items: list, n: int) -> list:
    return items[:n] if n else items


def finetune(cfg: FinetuneConfig) -> dict:
    """Train on `cfg.train`, keep the best dev checkpoint in out/best, evaluate every test set."""
    from .tasks import IGNORE, get_task, run_model

    if not cfg.model or not cfg.train:
        raise XlmrError("finetune needs --model and --train")
    seed_everything(cfg.seed)
    src = resolve(cfg.model)
    tok = Tokenizer.from_pretrained(src)
    task = get_task(cfg.task, **task_options(cfg))
    train_ex = _limit(task.read(cfg.train), cfg.max_train)
    task.build_labels(train_ex)
    dev_ex = _limit(task.read(cfg.dev), cfg.max_eval) if cfg.dev else []
    task.check_labels(dev_ex)
    tests = {lang: _limit(task.read(path), cfg.max_eval) for lang, path in parse_tests(cfg.test).items()}
    for examples in tests.values():
        task.check_labels(examples)

    device = device_of()
    threads = set_threads(cfg.threads) if device.type == "cpu" else 0
    model = load(src, head=task.head, id2label=task.id2label).to(device)
    emb_mode = apply_embedding_mode(model, cfg.embeddings)
    method = apply_method(model, cfg)  # which parameters train; the loop below is the same for all
    features = task.encode(train_ex, tok, cfg.max_length, cfg.stride)
    lengths = [len(f) for f in features]
    plan = lambda epoch: length_grouped_batches(lengths, cfg.batch_size, cfg.max_tokens, cfg.seed, epoch)
    steps_per_epoch = len(plan(0)) // cfg.grad_accum

    def batches(epoch):
        for idx in plan(epoch):
            yield {k: v.to(device) for k, v in task.collate([features[i] for i in idx], tok.pad_token_id).items()}

    def loss_fn(m, b):
        if task.head == "token":  # only labelled rows reach the loss: skip the last layer's work elsewhere
            labels = b["labels"].reshape(-1)
            at = labels.ne(IGNORE).nonzero().squeeze(1)
            logits = m(b["input_ids"], b["attention_mask"], b["token_type_ids"], positions=at)  # (N, C)
            return task.loss(logits, {"labels": labels.index_select(0, at)})
        return task.loss(m(b["input_ids"], b["attention_mask"], b["token_type_ids"]), b)

    out = Path(cfg.out)
    best_dir = out / "best"
    dev_features = task.encode(dev_ex, tok, cfg.max_length, cfg.stride) if dev_ex else []

    def evaluate(m):
        preds = task.predict(run_model(m, task, dev_features, tok.pad_token_id), dev_features, dev_ex)
        return task.metrics(dev_ex, preds)

    def on_best(m, metrics):
        save_finetuned(m, best_dir, src, cfg)

    print(f"xlmr: {cfg.task} on {len(train_ex)} examples ({len(features)} rows), {len(task.labels)} labels, "
          f"{steps_per_epoch} steps/epoch, device {device}" + (f", {threads} threads" if threads else "") +
          f", {emb_mode} embeddings, {'bf16 autocast' if autocast_device(device, cfg.bf16) else 'fp32'}",
          file=sys.stderr)
    result = train(model, batches, loss_fn, cfg, steps_per_epoch=steps_per_epoch,
                   evaluate=evaluate if dev_ex else None, metric=task.main_metric, on_best=on_best, out_dir=out)
    if not dev_ex:
        save_finetuned(model, best_dir, src, cfg)
    summary = {"steps": result.steps, "train_seconds": round(result.seconds, 2), "best_dev": result.best_metric,
               "best_step": result.best_step, "model": str(best_dir), **method.report(result, best_dir)}
    if tests:
        best = load_model(best_dir, cfg.language_adapter).to(device)
        source = next((lang for lang, path in parse_tests(cfg.test).items()
                       if Path(path).parent == Path(cfg.train).parent), None)  # the training language
        summary["test"] = evaluate_sets(best, tok, task, tests, out, cfg.max_length, cfg.stride,
                                        switch=language_switch(best), report_lang=source)
    atomic_write_json(out / "summary.json", summary, indent=2)
    return summary


def save_finetuned(model, directory: Path, tokenizer_src: Path, cfg) -> None:
    """HF checkpoint + tokenizer files + the task options evaluate/predict need."""
    save_weights(model, directory, cfg)  # full checkpoint, or only what the PEFT method trained
    copy_tokenizer(tokenizer_src, directory)
    info = {"task": cfg.task, "options": task_options(cfg), "max_length": cfg.max_length, "stride": cfg.stride}
    atomic_write_json(directory / TASK_FILE, info, indent=2)


def evaluate_sets(model, tok, task, tests: dict[str, list], out: Path, max_length: int, stride: int,
                  switch=None, report_lang: str | None = None) -> dict:
    """Evaluate each language: print the table, write results.json, report.md and PNGs.
    `switch(lang)`, if given, runs before each language (swaps in its MAD-X language adapter).
    The printed report is `report_lang`'s (the training language), else the first language's."""
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
        if task.name == "classify":
            task.confusion_matrix(examples, preds, out / f"confusion_{lang}.png", title=f"{lang} confusion matrix")
    print(format_table(results, task.columns))
    shown = report_lang if report_lang in reports else next(iter(reports))
    print(f"\n{shown} report:\n{reports[shown]}")
    write_results(out, results, task.columns, reports=reports)
    return results


def evaluate_model(model_path: str, tests: list[str], out: str, task_name: str | None = None,
                   max_eval: int = 0, language_adapters: list[str] = ()) -> dict:
    """`xlmr evaluate`: one row per language plus the average; results.json and report.md in `out`."""
    from .tasks import get_task

    directory = resolve(model_path)
    info = load_task_info(directory, task_name)
    model = load_model(directory, language_adapters).to(device_of())
    task = get_task(info["task"], **info.get("options", {}))
    task.set_labels(model.config.id2label)
    tok = Tokenizer.from_pretrained(directory)
    sets = {lang: _limit(task.read(path), max_eval) for lang, path in parse_tests(tests).items()}
    for examples in sets.values():
        task.check_labels(examples)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    return evaluate_sets(model, tok, task, sets, out_dir, info.get("max_length", MAX_LENGTH), info.get("stride", STRIDE),
                         switch=language_switch(model))
