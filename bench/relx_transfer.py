"""Zero-shot relation classification: fine-tune on English KBP37, test RELX in en, de, es and fr.

Two xlmr sides on the same marked sentences (`<e1> … </e1>`, `<e2> … </e2>`), the same checkpoint
(default multilingual-e5-small) and the same hyper-parameters (lr, batch 32, epochs, 10% linear
warm-up then linear decay, weight decay 0.01, seed 0, max length 128):

- `relation`: `--task relation`, the entity-start head: the markers are special tokens with their
  own embedding rows, and a linear layer reads the concatenated hidden states at `<e1>` and `<e2>`;
- `classify`: `--task classify` on the same marked text, as plain text (the markers are ordinary
  subwords), with the sentence head (mean pooling for this checkpoint): what the entity-start head adds.

The training set is a seeded random sample of `--train-n` KBP37 training sentences that holds every
label at least once (all sentences when 0); the
best epoch by micro-F1 on the first `--dev-n` dev sentences is kept and tested. Reported: micro-F1
without `no_relation` (the RELX paper's metric) and accuracy per language, the training loop's wall
and CPU time. Each side runs in its own process, one after the other (`--parallel`: at the same time).

    python bench/relx_transfer.py [--data $XLMR_DATA] [--train-n 2000] [--epochs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from sides import peak_rss_mb, run_sides, timed_xlmr_train  # noqa: E402

DATA = os.environ.get("XLMR_DATA", str(ROOT.parent / "shared" / "data"))
LANGS = ("en", "de", "es", "fr")


def write_sets(args, tmp: Path) -> dict[str, Path]:
    """The sampled train set, the dev subset and the RELX test sets, as KBP37 .txt (relation) and
    JSONL with text and label (classify), in `tmp`."""
    from xlmr.tasks.relation import read_kbp37

    sets = {"train": read_kbp37(f"{args.data}/kbp37/train.txt"), "dev": read_kbp37(f"{args.data}/kbp37/dev.txt")}
    if args.train_n:  # a seeded sample that holds every label at least once (a test label must be seen in training)
        pool = random.Random(0).sample(sets["train"], len(sets["train"]))
        firsts = {ex.label: i for i, ex in reversed(list(enumerate(pool)))}
        rest = [i for i in range(len(pool)) if i not in set(firsts.values())]
        sets["train"] = [pool[i] for i in sorted(list(firsts.values()) + rest[:max(args.train_n - len(firsts), 0)])]
    if args.dev_n:
        sets["dev"] = sets["dev"][:args.dev_n]
    for lang in LANGS:
        sets[lang] = read_kbp37(f"{args.data}/relx/RELX_{lang}.txt")[:args.test_n or None]
    paths = {}
    for name, examples in sets.items():
        paths[name] = tmp / f"{name}.txt"
        paths[name].write_text("".join(f'{i}\t"{ex.text}"\n{ex.label}\n\n' for i, ex in enumerate(examples)),
                               encoding="utf-8")
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps({"text": ex.text, "label": ex.label},
                                                              ensure_ascii=False) + "\n" for ex in examples),
                                           encoding="utf-8")
    return paths


def run_side(args) -> None:
    import torch

    import xlmr.finetune as ft
    from xlmr.predict import Predictor
    from xlmr.tasks.relation import relation_scores

    tmp = Path(args.tmp)
    suffix = ".txt" if args.side == "relation" else ".jsonl"
    out = tmp / f"out_{args.side}"
    cfg = ft.FinetuneConfig(model=args.model, task=args.side, train=str(tmp / f"train{suffix}"),
                            dev=str(tmp / f"dev{suffix}"), out=str(out), epochs=args.epochs, lr=args.lr, batch_size=32,
                            warmup=0.1, weight_decay=0.01, seed=0, max_length=128, progress=False, threads=args.threads)
    timing = {}
    with timed_xlmr_train(timing):
        summary = ft.finetune(cfg)
    # Both sides' test predictions are scored by the same function (classify itself reports accuracy and macro-F1).
    torch.set_num_threads(args.threads)
    predictor, key = Predictor(str(out / "best")), "relation" if args.side == "relation" else "label"
    scores = {}
    for lang in LANGS:
        rows = [json.loads(line) for line in (tmp / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines()]
        preds = [p[key] for s in range(0, len(rows), 64) for p in predictor([r["text"] for r in rows[s:s + 64]])]
        m = relation_scores([r["label"] for r in rows], preds)
        scores[lang] = {k: m[k] for k in ("micro_f1", "relx_f1", "accuracy")}
    print(json.dumps({"scores": scores, "steps": summary["steps"], "best_dev": summary["best_dev"],
                      "train_wall_s": timing["wall"], "train_cpu_s": timing["cpu"], "peak_rss_mb": peak_rss_mb()}))


def run_parallel(script: str, sides: list[str], argv: list[str], threads: int) -> dict[str, dict]:
    """run_sides, with every side started at once (each its own process and `threads` threads)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = {side: subprocess.Popen([sys.executable, script, "--side", side, *argv], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env) for side in sides}
    results = {}
    for side, proc in procs.items():
        out, err = proc.communicate()
        if proc.returncode:
            sys.exit(f"{side} failed:\n{err[-3000:]}")
        results[side] = json.loads(out.strip().splitlines()[-1])
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DATA, help="the data directory holding kbp37/ and relx/ ($XLMR_DATA)")
    ap.add_argument("--model", default="multilingual-e5-small")
    ap.add_argument("--sides", default="relation,classify", help="which sides run, in this order")
    ap.add_argument("--train-n", type=int, default=2000, help="KBP37 training sentences sampled (0: all 15,917)")
    ap.add_argument("--dev-n", type=int, default=400, help="first N dev sentences for model selection (0: all)")
    ap.add_argument("--test-n", type=int, default=0, help="first N sentences of every RELX test set (0: all 502)")
    ap.add_argument("--parallel", action="store_true", help="run the sides at the same time, one process each")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)  # internal: run one side
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return run_side(args)
    with tempfile.TemporaryDirectory(prefix="relx_") as tmp:
        write_sets(args, Path(tmp))
        argv = [a for a in sys.argv[1:]]
        sides = args.sides.split(",")
        results = (run_parallel if args.parallel else run_sides)(__file__, sides, [*argv, "--tmp", tmp], args.threads)
    print(f"\nRELX zero-shot, {args.model}: KBP37 train sample {args.train_n or 'all'}, {args.epochs:g} epochs, "
          f"batch 32, lr {args.lr:g}, dev {args.dev_n or 'all'} for model selection, {args.threads} threads")
    print("per side: micro-F1 without no_relation / the RELX script's F1 / accuracy")
    keys = ("micro_f1", "relx_f1", "accuracy")
    print(f"{'language':10}" + "".join(f"{s:>24}" for s in results))
    avg = {side: {k: sum(r["scores"][x][k] for x in LANGS) / len(LANGS) for k in keys} for side, r in results.items()}
    for lang, row in [*((x, {s: r["scores"][x] for s, r in results.items()}) for x in LANGS), ("average", avg)]:
        print(f"{lang:10}" + "".join(f"{' / '.join(f'{row[s][k]:.3f}' for k in keys):>24}" for s in results))
    print(f"{'train s':10}" + "".join(f"{r['train_wall_s']:24.1f}" for r in results.values()))
    print(f"{'CPU s':10}" + "".join(f"{r['train_cpu_s']:24.1f}" for r in results.values()))
    print(f"{'steps':10}" + "".join(f"{r['steps']:24d}" for r in results.values()))
    print(f"{'peak MB':10}" + "".join(f"{r['peak_rss_mb']:24.0f}" for r in results.values()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
