"""Zero-shot NER: fine-tune on WikiANN-en, test WikiANN de/fr/nl and five MasakhaNER languages;
xlmr vs HF Trainer, and both against the step's matrix-multiplication floor.

Both sides fine-tune the same checkpoint (default: multilingual-e5-small) on the first 5,000
WikiANN-en training sentences with the same hyper-parameters: 3 epochs, batch 32, lr 5e-5, 10%
linear warm-up then linear decay, weight decay 0.01, clipping 1.0, seed 0, max length 128,
length-grouped batches, fp32. Test sets: the first 2,000 sentences of the WikiANN en/de/fr/nl test
sets and of the MasakhaNER 2.0 test sets of hau, ibo, kin, swa and yor. MasakhaNER has DATE entities,
which WikiANN-en has not: both sides score them as `O` (xlmr: `unseen_labels="outside"`). Entity
F1 with seqeval (conlleval rules).

Sides, each in its own process, one after the other, with the same thread count:
- `hf`: transformers `Trainer` + `DataCollatorForTokenClassification`, `group_by_length`;
- `xlmr`: `xlmr.finetune.finetune` with its defaults;
- `floor`: the matrix multiplications of the same training steps alone (xlmr's batch plan, every
  linear layer's forward, input-gradient and weight-gradient GEMM and the attention's batched GEMMs
  at the padded batch shapes, fp32), timed with torch on random data: the compute floor of a step.

Reported: F1 per language, the zero-shot average, training wall and CPU time, peak resident memory
(VmHWM of each side's process), and the ratios xlmr/hf and xlmr/floor.

    python bench/ner_transfer.py [--data $XLMR_DATA] [--sides hf,xlmr,floor] [--threads 2]
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

DATA = os.environ.get("XLMR_DATA", str(ROOT.parent / "shared" / "data"))
WIKIANN = ("en", "de", "fr", "nl")
MASAKHA = ("hau", "ibo", "kin", "swa", "yor")


def test_sets(data: str, n: int) -> dict[str, tuple[str, int]]:
    """language -> (test file, how many of its first sentences to use)."""
    sets = {lang: (f"{data}/wikiann/{lang}/test.conll", n) for lang in WIKIANN}
    sets.update({lang: (f"{data}/masakhaner2/{lang}/test.conll", n) for lang in MASAKHA})
    return sets


def train_features(args, model: str):
    from xlmr.tasks import get_task
    from xlmr.tokenizer import Tokenizer

    task = get_task("ner")
    train = task.read(f"{args.data}/wikiann/en/train.conll")[:args.train_n]
    task.build_labels(train)
    return task, train, task.encode(train, Tokenizer.from_pretrained(model), 128, 32)


def run_xlmr(args, model: str, out: Path) -> dict:
    import xlmr.finetune as ft

    timing = {}
    sets = test_sets(args.data, args.test_n)
    cfg = ft.FinetuneConfig(model=model, task="ner", train=f"{args.data}/wikiann/en/train.conll",
                            test=[f"{lang}={path}" for lang, (path, _) in sets.items()], out=str(out),
                            max_train=args.train_n, max_eval=args.test_n, epochs=args.epochs, batch_size=32, lr=5e-5,
                            warmup=0.1, weight_decay=0.01, seed=0, max_length=128, progress=False,
                            threads=args.threads, bf16=False, unseen_labels="outside")
    with timed_xlmr_train(timing):
        summary = ft.finetune(cfg)
    f1 = {lang: m["f1"] for lang, m in summary["test"].items()}
    return {"f1": f1, "steps": summary["steps"], "train_wall_s": timing["wall"], "train_cpu_s": timing["cpu"]}


def run_hf(args, model: str, out: Path) -> dict:
    import torch
    from seqeval.metrics import f1_score
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              Trainer, TrainingArguments)

    from xlmr.tasks import get_task

    task = get_task("ner")
    train = task.read(f"{args.data}/wikiann/en/train.conll")[:args.train_n]
    labels = task.build_labels(train)
    label2id = {l: i for i, l in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(model)

    def encode(examples):
        enc = tok([ex.words for ex in examples], is_split_into_words=True, truncation=True, max_length=128)
        rows = []
        for i, ex in enumerate(examples):
            prev, lab = None, []
            for w in enc.word_ids(i):  # unseen tags (DATE) are scored as O, as on the xlmr side
                lab.append(-100 if w is None or w == prev else label2id.get(ex.tags[w], label2id["O"]))
                prev = w
            rows.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                         "labels": lab})
        return rows

    torch.manual_seed(0)
    net = AutoModelForTokenClassification.from_pretrained(
        model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=32, per_device_eval_batch_size=64,
                              learning_rate=5e-5, num_train_epochs=args.epochs, warmup_steps=0.1, weight_decay=0.01,
                              seed=0, lr_scheduler_type="linear", train_sampling_strategy="group_by_length",
                              save_strategy="no", eval_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
                              dataloader_num_workers=0)
    trainer = Trainer(model=net, args=targs, train_dataset=encode(train),
                      data_collator=DataCollatorForTokenClassification(tok))
    w, c = time.perf_counter(), time.process_time()
    result = trainer.train()
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    f1 = {}
    for lang, (path, n) in test_sets(args.data, args.test_n).items():
        test = task.read(path)
        pred = trainer.predict(encode(test[:n]))  # rows may be reordered: use its label_ids
        y_true, y_pred = [], []
        for logits, gold in zip(pred.predictions, pred.label_ids):
            keep = gold != -100
            y_true.append([labels[i] for i in gold[keep]])
            y_pred.append([labels[i] for i in logits.argmax(-1)[keep]])
        f1[lang] = f1_score(y_true, y_pred)
    return {"f1": f1, "steps": result.global_step, "train_wall_s": wall, "train_cpu_s": cpu}


def run_floor(args, model: str, out: Path) -> dict:
    """Time the GEMMs of every training step (fwd + both backward GEMMs) at the padded shapes."""
    import torch

    from xlmr.batching import length_grouped_batches
    from xlmr.checkpoint import read_config

    cfg = read_config(Path(model))[0]  # the shapes only: no weights
    _, _, feats = train_features(args, model)
    lengths = [len(f) for f in feats]
    D, F, H, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_hidden_layers
    shapes = []  # (B, T) of every step, in order
    epochs = int(args.epochs + 0.999)
    for epoch in range(epochs):
        shapes += [(len(b), max(lengths[i] for i in b)) for b in length_grouped_batches(lengths, 32, 0, 0, epoch)]
    shapes = shapes[:int(round(len(shapes) * args.epochs / epochs))]
    weights = {k: torch.randn(*k) for k in [(D, 3 * D), (D, D), (D, F), (F, D)]}  # (in, out) of each linear

    def step(B, T):
        N = B * T
        x = {D: torch.randn(N, D), F: torch.randn(N, F)}
        g = {D: torch.randn(N, D), 3 * D: torch.randn(N, 3 * D), F: torch.randn(N, F)}
        q, k = torch.randn(B * H, T, D // H), torch.randn(B * H, D // H, T)
        p = torch.randn(B * H, T, T)
        for _ in range(L):
            for (i, o), w in weights.items():
                torch.mm(x[i], w)          # forward
                torch.mm(g[o], w.t())      # input gradient
                torch.mm(x[i].t(), g[o])   # weight gradient
            torch.bmm(q, k), torch.bmm(p, q)  # scores (T x d x T), context (T x T x d)
            torch.bmm(q, k)  # grad of the probabilities: d_context @ v^T
            for _ in range(3):  # grads of v, q and k: (T x T) @ (T x d) each
                torch.bmm(p, q)

    for B, T in shapes[:3]:
        step(B, T)  # warm-up
    w, c = time.perf_counter(), time.process_time()
    for B, T in shapes:
        step(B, T)
    return {"steps": len(shapes), "train_wall_s": time.perf_counter() - w, "train_cpu_s": time.process_time() - c}


def child(args) -> None:
    import torch

    from xlmr.checkpoint import resolve

    torch.set_num_threads(args.threads)
    model = str(resolve(args.model))
    run = {"hf": run_hf, "xlmr": run_xlmr, "floor": run_floor}[args.side]
    with tempfile.TemporaryDirectory() as tmp:
        r = run(args, model, Path(tmp))
    r["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(r))


def zero_shot(f1: dict) -> float:
    others = [v for k, v in f1.items() if k != "en"]
    return sum(others) / len(others)


def report(args, results: dict) -> None:
    scored = {s: r for s, r in results.items() if "f1" in r}
    print(f"\nNER, {args.model}: WikiANN-en {args.train_n} sentences x {args.epochs:g} epochs, batch 32, lr 5e-5, "
          f"fp32, {args.threads} thread(s)\n")
    if scored:
        print(f"{'language':10}" + "".join(f"{s:>10}" for s in scored))
        for lang in next(iter(scored.values()))["f1"]:
            print(f"{lang:10}" + "".join(f"{r['f1'][lang]:10.4f}" for r in scored.values()))
        print(f"{'zero-shot':10}" + "".join(f"{zero_shot(r['f1']):10.4f}" for r in scored.values()))
    print()
    print(f"{'side':6} {'steps':>6} {'train wall s':>12} {'CPU s':>8} {'s/step':>7} {'peak MB':>8}")
    for s, r in results.items():
        print(f"{s:6} {r['steps']:6d} {r['train_wall_s']:12.1f} {r['train_cpu_s']:8.1f} "
              f"{r['train_wall_s'] / r['steps']:7.3f} {r['peak_rss_mb']:8.0f}")
    ours = results.get("xlmr")
    if ours and "hf" in results:
        hf = results["hf"]
        print(f"\nxlmr vs hf: English F1 {100 * (ours['f1']['en'] - hf['f1']['en']):+.2f} points, zero-shot "
              f"{100 * (zero_shot(ours['f1']) - zero_shot(hf['f1'])):+.2f} points; train time "
              f"{ours['train_wall_s'] / hf['train_wall_s']:.3f}x (CPU {ours['train_cpu_s'] / hf['train_cpu_s']:.3f}x); "
              f"peak memory {ours['peak_rss_mb'] / hf['peak_rss_mb']:.3f}x")
    if ours and "floor" in results:
        fl = results["floor"]
        print(f"xlmr step time / GEMM floor: {(ours['train_wall_s'] / ours['steps']) / (fl['train_wall_s'] / fl['steps']):.3f}")
    if "hf" in results and "floor" in results:
        hf, fl = results["hf"], results["floor"]
        print(f"hf step time / GEMM floor: {(hf['train_wall_s'] / hf['steps']) / (fl['train_wall_s'] / fl['steps']):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DATA, help="the data directory holding wikiann/ and masakhaner2/ ($XLMR_DATA)")
    ap.add_argument("--model", default="multilingual-e5-small")
    ap.add_argument("--sides", default="hf,xlmr,floor", help="which sides run, in this order")
    ap.add_argument("--train-n", type=int, default=5000)
    ap.add_argument("--test-n", type=int, default=2000, help="the first N sentences of each test set")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)  # internal: run one side
    args = ap.parse_args()
    if args.side:
        return child(args)
    if not Path(args.data, "wikiann", "en", "train.conll").is_file():
        sys.exit(f"no WikiANN data under {args.data} (see --data)")
    argv = ["--data", args.data, "--model", args.model,
            "--train-n", str(args.train_n), "--test-n", str(args.test_n), "--epochs", str(args.epochs),
            "--threads", str(args.threads)]
    results = run_sides(__file__, args.sides.split(","), argv, args.threads)
    report(args, results)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
