"""Zero-shot extractive QA on XQuAD: fine-tune on English, test eight languages; xlmr vs HF Trainer.

Both sides fine-tune the same checkpoint (default: multilingual-e5-small) on the first --train-n
questions of `xquad/en/train.json` with the same hyper-parameters: --epochs, batch 16, lr 1e-4, 10%
linear warm-up then linear decay, weight decay 0.01, clipping 1.0, seed 0, fp32, windows of
--max-length tokens with a --stride token overlap, length-grouped batches. Each then answers the first
--test-n questions of every language's `test.json` (articles the training set does not hold), with
the same decoding: the 20 best starts and ends per window, answers of at most 30 tokens, the best
start + end logit over all windows. Both sides are scored by the same SQuAD v1.1 EM/F1 code
(xlmr.tasks.qa.squad_scores), with the official normalisation and with the MLQA-style one (zh scored
by characters).

Sides, each in its own process, one after the other, with the same thread count:
- `hf`: transformers `AutoModelForQuestionAnswering` + `Trainer`, the question-answering recipe's
  preprocessing (fast tokenizer, `truncation="only_second"`, overflowing windows, offset mappings,
  CLS labels for windows without the answer) and post-processing, written here;
- `xlmr`: `xlmr.finetune.finetune(task="qa")` with its defaults.

    python bench/xquad_transfer.py [--data $XLMR_DATA/xquad] [--train-n 925] [--test-n 265] [--threads 1]
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

DATA = os.path.join(os.environ.get("XLMR_DATA", str(ROOT.parent / "shared" / "data")), "xquad")
LANGS = ("en", "de", "es", "ru", "zh", "ar", "hi", "vi")
HYPER = dict(batch_size=16, lr=1e-4, warmup=0.1, weight_decay=0.01, seed=0)


def scores(task, examples, answers: list[str]) -> dict:
    from xlmr.tasks.qa import squad_scores

    golds = [[t for t, _ in ex.answers] for ex in examples]
    return {**squad_scores(answers, golds), "f1_mlqa": squad_scores(answers, golds, "mlqa")["f1"]}


def run_xlmr(args, model: str, out: Path) -> dict:
    import xlmr.finetune as ft
    from xlmr.tasks import get_task

    timing = {}
    cfg = ft.FinetuneConfig(model=model, task="qa", train=f"{args.data}/en/train.json",
                            test=[f"{lang}={args.data}/{lang}/test.json" for lang in LANGS], out=str(out),
                            max_train=args.train_n, max_eval=args.test_n, epochs=args.epochs,
                            max_length=args.max_length, stride=args.stride, progress=False, threads=args.threads,
                            bf16=False, **HYPER)
    with timed_xlmr_train(timing):
        summary = ft.finetune(cfg)
    task = get_task("qa")
    res = {}
    for lang in LANGS:  # rescore the saved answers, so that both sides go through the same scoring code
        examples = task.read(f"{args.data}/{lang}/test.json")[:args.test_n]
        answers = json.loads((out / f"predictions_{lang}.json").read_text(encoding="utf-8"))
        res[lang] = scores(task, examples, [answers[ex.id] for ex in examples])
    return {"scores": res, "steps": summary["steps"], "train_wall_s": timing["wall"], "train_cpu_s": timing["cpu"]}


def hf_features(tok, examples, max_length: int, stride: int, labelled: bool) -> list[dict]:
    """The recipe's windows: question first, context truncated into overflowing windows of max_length."""
    enc = tok([ex.question for ex in examples], [ex.context for ex in examples], truncation="only_second",
              max_length=max_length, stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    feats = []
    for i in range(len(enc["input_ids"])):
        ex_i, seq = enc["overflow_to_sample_mapping"][i], enc.sequence_ids(i)
        offsets = [o if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq)]
        f = {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "example": ex_i,
             "offsets": offsets}
        if "token_type_ids" in enc:
            f["token_type_ids"] = enc["token_type_ids"][i]
        if labelled:
            text, a = examples[ex_i].answers[0]
            z = a + len(text)
            ctx = [k for k, o in enumerate(offsets) if o is not None]
            f["start_positions"] = f["end_positions"] = 0
            if offsets[ctx[0]][0] <= a and offsets[ctx[-1]][1] >= z:
                f["start_positions"] = next(k for k in ctx if offsets[k][1] > a)
                f["end_positions"] = [k for k in ctx if offsets[k][0] < z][-1]
        feats.append(f)
    return feats


def hf_answers(examples, feats, start_logits, end_logits, n_best: int = 20, max_answer: int = 30) -> list[str]:
    """The recipe's post-processing: n-best starts x ends per window, best start + end logit overall."""
    import numpy as np

    best = [(-np.inf, "")] * len(examples)
    for f, s_log, e_log in zip(feats, start_logits, end_logits):
        offs = f["offsets"]
        s_log, e_log = s_log[:len(offs)], e_log[:len(offs)]
        for s in np.argsort(s_log)[::-1][:n_best]:
            if offs[s] is None:
                continue
            for e in np.argsort(e_log)[::-1][:n_best]:
                if offs[e] is None or e < s or e - s + 1 > max_answer:
                    continue
                score = s_log[s] + e_log[e]
                if score > best[f["example"]][0]:
                    ctx = examples[f["example"]].context
                    best[f["example"]] = (score, ctx[offs[s][0]:offs[e][1]])
    return [text for _, text in best]


def run_hf(args, model: str, out: Path) -> dict:
    import numpy as np
    import torch
    from transformers import (AutoModelForQuestionAnswering, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from xlmr.tasks import get_task

    task = get_task("qa")
    train = task.read(f"{args.data}/en/train.json")[:args.train_n]
    tok = AutoTokenizer.from_pretrained(model)
    keys = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions")
    rows = [{k: f[k] for k in keys if k in f} for f in hf_features(tok, train, args.max_length, args.stride, True)]
    torch.manual_seed(0)
    net = AutoModelForQuestionAnswering.from_pretrained(model)
    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=HYPER["batch_size"],
                              per_device_eval_batch_size=64, learning_rate=HYPER["lr"], num_train_epochs=args.epochs,
                              warmup_steps=HYPER["warmup"], weight_decay=HYPER["weight_decay"], seed=HYPER["seed"],
                              lr_scheduler_type="linear", train_sampling_strategy="group_by_length",
                              save_strategy="no", eval_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
                              dataloader_num_workers=0)
    trainer = Trainer(model=net, args=targs, train_dataset=rows, data_collator=DataCollatorWithPadding(tok))
    w, c = time.perf_counter(), time.process_time()
    result = trainer.train()
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    res = {}
    for lang in LANGS:
        test = task.read(f"{args.data}/{lang}/test.json")[:args.test_n]
        feats = hf_features(tok, test, args.max_length, args.stride, False)
        pred = trainer.predict([{k: f[k] for k in keys if k in f} for f in feats])
        start, end = (np.asarray(x) for x in pred.predictions)  # (N, T) each, padded with -100
        res[lang] = scores(task, test, hf_answers(test, feats, start, end))
    return {"scores": res, "steps": result.global_step, "train_wall_s": wall, "train_cpu_s": cpu}


def child(args) -> None:
    """One side in this process; results as JSON on the last line of stdout."""
    import torch

    from xlmr.checkpoint import resolve

    torch.set_num_threads(args.threads)
    model = str(resolve(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        r = run_hf(args, model, Path(tmp)) if args.side == "hf" else run_xlmr(args, model, Path(tmp))
    r["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(r))


def avg(r: dict, key: str) -> float:
    return sum(m[key] for m in r["scores"].values()) / len(r["scores"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DATA, help="XQuAD directory ($XLMR_DATA/xquad)")
    ap.add_argument("--model", default="multilingual-e5-small")
    ap.add_argument("--sides", default="hf,xlmr", help="which sides run, in this order")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--train-n", type=int, default=925, help="the first N training questions")
    ap.add_argument("--test-n", type=int, default=265, help="the first N questions of each test set")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)  # internal: run one side
    args = ap.parse_args()
    if args.side:
        return child(args)
    if not Path(args.data, "en", "train.json").is_file():
        sys.exit(f"no XQuAD data at {args.data} (see --data)")
    argv = ["--data", args.data, "--model", args.model, "--epochs", str(args.epochs), "--train-n", str(args.train_n),
            "--test-n", str(args.test_n), "--max-length", str(args.max_length), "--stride", str(args.stride),
            "--threads", str(args.threads)]
    t0 = time.perf_counter()
    results = run_sides(__file__, args.sides.split(","), argv, args.threads)
    print(f"\nXQuAD, {args.model}: trained on the first {args.train_n} en questions, {args.epochs:g} epochs, batch "
          f"{HYPER['batch_size']}, lr {HYPER['lr']:g}, max length {args.max_length}, stride {args.stride}, "
          f"{args.test_n} test questions per language, {args.threads} thread(s); EM / F1 (SQuAD v1.1), "
          f"F1m (MLQA normalisation)\n")
    print(f"{'language':9}" + "".join(f"{s + ' EM':>10}{s + ' F1':>10}{s + ' F1m':>10}" for s in results))
    for lang in LANGS:
        print(f"{lang:9}" + "".join(f"{r['scores'][lang]['exact_match']:10.1f}{r['scores'][lang]['f1']:10.1f}"
                                    f"{r['scores'][lang]['f1_mlqa']:10.1f}" for r in results.values()))
    print(f"{'average':9}" + "".join(f"{avg(r, 'exact_match'):10.1f}{avg(r, 'f1'):10.1f}{avg(r, 'f1_mlqa'):10.1f}"
                                     for r in results.values()))
    for key, name in (("train_wall_s", "train s"), ("train_cpu_s", "CPU s"), ("peak_rss_mb", "peak MB"),
                      ("steps", "steps")):
        print(f"{name:9}" + "".join(f"{r[key]:30.1f}" for r in results.values()))
    if "hf" in results and "xlmr" in results:
        x, h = results["xlmr"], results["hf"]
        print(f"xlmr vs hf: average F1 {avg(x, 'f1') - avg(h, 'f1'):+.1f} points (MLQA F1 "
              f"{avg(x, 'f1_mlqa') - avg(h, 'f1_mlqa'):+.1f}), train time {x['train_wall_s'] / h['train_wall_s']:.3f}x "
              f"(CPU {x['train_cpu_s'] / h['train_cpu_s']:.3f}x)")
    print(f"whole run: {time.perf_counter() - t0:.0f} s wall")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
