"""Zero-shot topic classification on SIB-200: fine-tune on English, test 20 languages; xlmr vs HF Trainer.

Every side fine-tunes the same checkpoint (default: multilingual-e5-small) on `eng_Latn/train.tsv`
with the same hyper-parameters: lr 1e-4, batch 32, 10 epochs, 10% linear warm-up then linear decay,
weight decay 0.01, clipping 1.0, seed 0, max length 128, length-grouped batches. Sides:

- `xlmr`: `xlmr.finetune.finetune` with its defaults (the sequence head's pooling is the checkpoint's
  default: mean for a BERT checkpoint with no pooler);
- `xlmr-lora`: the same with `peft="lora"` (rank 16 on query, key, value and every dense layer,
  frozen word embeddings) at lr 1e-3 (--lora-lr): LoRA's low-rank updates need a larger rate;
- `hf`: transformers `Trainer` with `AutoModelForSequenceClassification` (BERT's pooler head, which
  this checkpoint ships without: the pooler starts from random weights).

Each side runs in its own process, one after the other, with the same thread count. Reported per
side: accuracy per language, the zero-shot average over the 19 non-English languages, the training
loop's wall and CPU time, and the process's peak resident memory.

    python bench/sib200_transfer.py [--data $XLMR_DATA/sib200] [--sides hf,xlmr,xlmr-lora] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
from sides import peak_rss_mb, run_sides, timed_xlmr_train  # noqa: E402

DATA = os.path.join(os.environ.get("XLMR_DATA", str(ROOT.parent / "shared" / "data")), "sib200")
SOURCE = "eng_Latn"
LORA = {"peft": "lora", "lora_r": 16, "lora_target": ["query", "key", "value", "dense"], "embeddings": "frozen"}


def languages(data: str) -> list[str]:
    return sorted(p.name for p in Path(data).iterdir() if (p / "test.tsv").is_file())


def run_xlmr(args, model: str, out: Path, peft: str) -> dict:
    import xlmr.finetune as ft

    timing = {}
    method = {**LORA, "lr": args.lora_lr} if peft == "lora" else {"lr": args.lr}
    cfg = ft.FinetuneConfig(model=model, task="classify", train=f"{args.data}/{SOURCE}/train.tsv",
                            test=[f"{lang}={args.data}/{lang}/test.tsv" for lang in languages(args.data)],
                            out=str(out), epochs=args.epochs, batch_size=32, warmup=0.1, weight_decay=0.01,
                            seed=0, max_length=128, progress=False, threads=args.threads, **method)
    with timed_xlmr_train(timing):
        summary = ft.finetune(cfg)
    acc = {lang: m["accuracy"] for lang, m in summary["test"].items()}
    return {"accuracy": acc, "steps": summary["steps"], "train_wall_s": timing["wall"], "train_cpu_s": timing["cpu"]}


def run_hf(args, model: str, out: Path) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from xlmr.tasks import get_task

    task = get_task("classify")
    train = task.read(f"{args.data}/{SOURCE}/train.tsv")
    labels = task.build_labels(train)
    label2id = {l: i for i, l in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(model)

    def encode(examples):
        enc = tok([ex.text for ex in examples], truncation=True, max_length=128)
        return [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                 "labels": label2id[ex.label]} for i, ex in enumerate(examples)]

    torch.manual_seed(0)
    net = AutoModelForSequenceClassification.from_pretrained(
        model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=32, per_device_eval_batch_size=64,
                              learning_rate=args.lr, num_train_epochs=args.epochs, warmup_steps=0.1,
                              weight_decay=0.01, seed=0, lr_scheduler_type="linear",
                              train_sampling_strategy="group_by_length", save_strategy="no", eval_strategy="no",
                              report_to=[], disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)
    from transformers import DataCollatorWithPadding

    trainer = Trainer(model=net, args=targs, train_dataset=encode(train), data_collator=DataCollatorWithPadding(tok))
    w, c = time.perf_counter(), time.process_time()
    result = trainer.train()
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    acc = {}
    for lang in languages(args.data):
        test = task.read(f"{args.data}/{lang}/test.tsv")
        pred = trainer.predict(encode(test))  # rows may come back reordered: score against its label_ids
        acc[lang] = float(np.mean(pred.predictions.argmax(-1) == pred.label_ids))
    return {"accuracy": acc, "steps": result.global_step, "train_wall_s": wall, "train_cpu_s": cpu}


def child(args) -> None:
    """One side in this process; results as JSON on the last line of stdout."""
    import torch

    from xlmr.checkpoint import resolve

    torch.set_num_threads(args.threads)
    model = str(resolve(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        if args.side == "hf":
            r = run_hf(args, model, Path(tmp))
        else:
            r = run_xlmr(args, model, Path(tmp), "lora" if args.side == "xlmr-lora" else "none")
    r["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(r))


def zero_shot(acc: dict) -> float:
    others = [v for k, v in acc.items() if k != SOURCE]
    return sum(others) / len(others)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DATA, help="SIB-200 directory ($XLMR_DATA/sib200)")
    ap.add_argument("--model", default="multilingual-e5-small")
    ap.add_argument("--sides", default="hf,xlmr,xlmr-lora", help="which sides run, in this order")
    ap.add_argument("--epochs", type=float, default=10.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--lora-lr", type=float, default=1e-3, help="the learning rate of the xlmr-lora side")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)  # internal: run one side
    args = ap.parse_args()
    if args.side:
        return child(args)
    if not Path(args.data, SOURCE, "train.tsv").is_file():
        sys.exit(f"no SIB-200 data at {args.data} (see --data)")
    argv = ["--data", args.data, "--model", args.model,
            "--epochs", str(args.epochs), "--lr", str(args.lr), "--lora-lr", str(args.lora_lr),
            "--threads", str(args.threads)]
    results = run_sides(__file__, args.sides.split(","), argv, args.threads)
    langs = sorted(next(iter(results.values()))["accuracy"])
    print(f"\nSIB-200, {args.model}: trained on {SOURCE}, {args.epochs:g} epochs, batch 32, lr {args.lr:g} "
          f"(LoRA {args.lora_lr:g}), {args.threads} thread(s)\n")
    print(f"{'language':10}" + "".join(f"{s:>11}" for s in results))
    for lang in langs:
        print(f"{lang:10}" + "".join(f"{r['accuracy'][lang]:11.3f}" for r in results.values()))
    print(f"{'zero-shot':10}" + "".join(f"{zero_shot(r['accuracy']):11.3f}" for r in results.values()))
    print(f"{'train s':10}" + "".join(f"{r['train_wall_s']:11.1f}" for r in results.values()))
    print(f"{'CPU s':10}" + "".join(f"{r['train_cpu_s']:11.1f}" for r in results.values()))
    print(f"{'peak MB':10}" + "".join(f"{r['peak_rss_mb']:11.0f}" for r in results.values()))
    if "hf" in results:
        hf = results["hf"]
        for side, r in results.items():
            if side != "hf":
                print(f"{side} vs hf: zero-shot {100 * (zero_shot(r['accuracy']) - zero_shot(hf['accuracy'])):+.1f} "
                      f"points, train time {r['train_wall_s'] / hf['train_wall_s']:.3f}x "
                      f"(CPU {r['train_cpu_s'] / hf['train_cpu_s']:.3f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
