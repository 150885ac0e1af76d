"""NER on five African languages, before and after continued MLM pretraining: zero-shot and in-language.

    python bench/adapt_ner.py --base runs/e5-afr --adapted runs/pretrain-afr/final \
        [--pretrain-run runs/pretrain-afr] [--train-n 1000] [--test-n 200] [--json adapt_ner.json]

For each checkpoint (`base`: not adapted; `adapted`: after `xlmr pretrain --init base`), each in its own
process, the two side by side, with the same seeds and options (xlmr.finetune, seed 0, lr 5e-5 for
zero-shot, 1e-4 in-language, batch 16, max length 128, 10% warm-up, fp32):
- zero-shot: fine-tune on the first --train-n WikiANN-en training sentences (--epochs-en), test on the first
  --test-n sentences of the MasakhaNER 2.0 test sets of hau, ibo, kin, swa and yor (DATE, which WikiANN
  lacks, scored as O);
- in-language: for each language, fine-tune on its first --in-n MasakhaNER training sentences
  (--epochs-in), test on the same test sentences.
Entity F1 (seqeval rules). With --pretrain-run, the held-out MLM loss per language at the start of
the encoder's training (after the head-only warm-up) and at the end is printed from its metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(os.environ.get("XLMR_DATA", str(ROOT.parent / "shared" / "data")))
LANGS = ("hau", "ibo", "kin", "swa", "yor")


def finetune(model: str, train: str, n: int, epochs: float, lr: float, args, unseen: str) -> dict:
    import xlmr.finetune as ft

    with tempfile.TemporaryDirectory() as tmp:
        cfg = ft.FinetuneConfig(model=model, task="ner", train=train, out=tmp, max_train=n,
                                test=[f"{l}={DATA / 'masakhaner2' / l / 'test.conll'}" for l in LANGS],
                                max_eval=args.test_n, epochs=epochs, batch_size=16, lr=lr, warmup=0.1,
                                weight_decay=0.01, seed=0, max_length=128, progress=False, threads=1,
                                bf16=False, unseen_labels=unseen)
        summary = ft.finetune(cfg)
    return {lang: m["f1"] for lang, m in summary["test"].items()}


def child(args) -> None:
    """All fine-tunes of one checkpoint; JSON on the last stdout line."""
    import torch

    torch.set_num_threads(1)
    zero = finetune(args.side, str(DATA / "wikiann" / "en" / "train.conll"), args.train_n, args.epochs_en, 5e-5,
                    args, "outside")
    inlang = {}
    for lang in LANGS:
        inlang[lang] = finetune(args.side, str(DATA / "masakhaner2" / lang / "train.conll"), args.in_n,
                                args.epochs_in, 1e-4, args, "error")[lang]
        print(f"{args.side} {lang} in-language {inlang[lang]:.4f}", file=sys.stderr, flush=True)
    print(json.dumps({"zero_shot": zero, "in_language": inlang}))


def mlm_losses(run: Path) -> dict:
    """Held-out loss per language at the encoder's start (summary.json) and at the last evaluation."""
    summary = json.loads((run / "summary.json").read_text())
    start = summary.get("eval_start") or {}
    end = summary.get("eval") or {}
    langs = sorted(k[5:] for k in start if k.startswith("loss_"))
    return {lang: (start[f"loss_{lang}"], end.get(f"eval_loss_{lang}")) for lang in langs} | {
        "all": (start.get("loss"), end.get("eval_loss")), "steps": summary["steps"], "seconds": summary["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapted", required=True)
    ap.add_argument("--pretrain-run", default=None)
    ap.add_argument("--train-n", type=int, default=1000)
    ap.add_argument("--in-n", type=int, default=1000)
    ap.add_argument("--test-n", type=int, default=200)
    ap.add_argument("--epochs-en", type=float, default=1.0)
    ap.add_argument("--epochs-in", type=float, default=1.0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", choices=["base", "adapted"], default=None, help="run one side only")
    ap.add_argument("--cache", default=None, help="keep each side's results here and reuse them")
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return child(args)
    argv = ["--base", args.base, "--adapted", args.adapted, "--train-n", str(args.train_n), "--in-n", str(args.in_n),
            "--test-n", str(args.test_n), "--epochs-en", str(args.epochs_en), "--epochs-in", str(args.epochs_in)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cache = Path(args.cache) if args.cache else None
    sides = {name: path for name, path in (("base", args.base), ("adapted", args.adapted))
             if (not args.only or name == args.only) and not (cache and (cache / f"{name}.json").is_file())}
    procs = {name: subprocess.Popen([sys.executable, __file__, "--side", path, *argv], stdout=subprocess.PIPE,
                                    text=True, env=env) for name, path in sides.items()}
    results = {}
    for name, p in procs.items():
        out, _ = p.communicate()
        if p.returncode:
            sys.exit(f"{name} failed")
        results[name] = json.loads(out.strip().splitlines()[-1])
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
            (cache / f"{name}.json").write_text(json.dumps(results[name]) + "\n")
    if cache:
        results = {name: json.loads((cache / f"{name}.json").read_text()) for name in ("base", "adapted")
                   if (cache / f"{name}.json").is_file()}
    if len(results) == 2:
        report(results, args)


def report(results: dict, args) -> None:
    print(f"\nNER F1 (first {args.test_n} test sentences), seed 0")
    for setting, label in (("zero_shot", f"zero-shot from WikiANN-en ({args.train_n} sentences, "
                                         f"{args.epochs_en:g} epoch(s))"),
                           ("in_language", f"in-language ({args.in_n} MasakhaNER sentences, {args.epochs_in:g} "
                                           f"epoch(s))")):
        b, a = results["base"][setting], results["adapted"][setting]
        print(f"\n{label}\n{'language':10}{'base':>9}{'adapted':>9}{'delta':>8}")
        for lang in LANGS:
            print(f"{lang:10}{100 * b[lang]:9.1f}{100 * a[lang]:9.1f}{100 * (a[lang] - b[lang]):+8.1f}")
        mb, ma = (sum(x[l] for l in LANGS) / len(LANGS) for x in (b, a))
        print(f"{'average':10}{100 * mb:9.1f}{100 * ma:9.1f}{100 * (ma - mb):+8.1f}")
    if args.pretrain_run:
        losses = mlm_losses(Path(args.pretrain_run))
        print(f"\nheld-out MLM loss ({losses.pop('steps')} steps, {losses.pop('seconds'):.0f} s), start -> end")
        for lang, (s, e) in losses.items():
            print(f"{lang:10}{s:8.3f} -> {e:.3f}")
        results["mlm_loss"] = losses
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
