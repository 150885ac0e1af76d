"""MAD-X on a real multilingual base: language adapters for hau, ibo, kin, swa, yor (and en) from the corpus,
a task adapter on WikiANN-en, zero-shot on the five MasakhaNER 2.0 test sets.

    python bench/madx_african.py --model runs/e5-afr [--lang-steps 60] [--task-steps 100] [--json madx.json]

1. `xlmr adapt-language` on each language's corpus file (`../shared/corpus/<lang>.txt`: MLM on the frozen
   base, --lang-steps steps of --lang-batch lines; the base ships no MLM head, so a fresh head's
   transform trains alongside and is not saved);
2. `xlmr finetune --peft adapter` on the first --train-sentences WikiANN-en sentences: a task adapter
   alone (no language adapter), above the English adapter (MAD-X), and MAD-X 2.0 (--madx2: no adapter
   in the last layer);
3. zero-shot F1 on the first --test-sentences of each MasakhaNER test set, with that language's adapter
   swapped in (DATE, which WikiANN lacks, scored as O).
Jobs of a stage run in parallel, one thread each. Reported: held-out MLM loss of each language adapter
before and after, its training minutes and stored MB, and the F1 table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from madx_wikiann import run_all  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = Path(os.environ.get("XLMR_DATA", str(SHARED / "data")))
CORPUS_DIR = Path(os.environ.get("XLMR_CORPUS", str(SHARED / "corpus")))
CORPUS = {"en": "eng_Latn.txt", "hau": "hau_Latn.txt", "ibo": "ibo_Latn.txt", "kin": "kin_Latn.txt",
          "swa": "swh_Latn.txt", "yor": "yor_Latn.txt"}
TARGETS = ("hau", "ibo", "kin", "swa", "yor")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--lang-steps", type=int, default=60)
    p.add_argument("--lang-batch", type=int, default=16)
    p.add_argument("--task-steps", type=int, default=100)
    p.add_argument("--train-sentences", type=int, default=2000)
    p.add_argument("--test-sentences", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", default="runs/bench_madx_african")
    p.add_argument("--json", default="")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    x = [sys.executable, "-m", "xlmr"]
    langs = ["en", *TARGETS]
    run_all({f"lang_{l}": x + ["adapt-language", "--model", args.model, "--corpus", str(CORPUS_DIR / CORPUS[l]),
                               "--language", l, "--out", str(out / f"la_{l}"), "--max-steps", str(args.lang_steps),
                               "--batch-size", str(args.lang_batch), "--max-length", "64", "--lr", "1e-3",
                               "--no-progress"] for l in langs}, out, env)
    tests = [f"{l}={DATA / 'masakhaner2' / l / 'test.conll'}" for l in TARGETS]
    las = [f"{l}={out / f'la_{l}'}" for l in langs]
    common = x + ["finetune", "--model", args.model, "--task", "ner", "--train",
                  str(DATA / "wikiann" / "en" / "train.conll"), "--test", *tests, "--unseen-labels", "outside",
                  "--max-train", str(args.train_sentences), "--max-eval", str(args.test_sentences),
                  "--max-steps", str(args.task_steps), "--batch-size", "16", "--lr", str(args.lr), "--peft", "adapter",
                  "--threads", "1", "--no-bf16", "--no-progress"]
    runs = {"task adapter alone": common + ["--out", str(out / "no_lang_adapter")],
            "MAD-X": common + ["--language-adapter", *las, "--out", str(out / "madx")],
            "MAD-X 2.0": common + ["--language-adapter", *las, "--madx2", "--out", str(out / "madx2")]}
    run_all({k.replace(" ", "_").replace(".", ""): v for k, v in runs.items()}, out, env)
    dirs = {"task adapter alone": "no_lang_adapter", "MAD-X": "madx", "MAD-X 2.0": "madx2"}
    rows = {name: json.loads((out / d / "summary.json").read_text()) for name, d in dirs.items()}
    lang_summaries = {l: json.loads((out / f"la_{l}" / "summary.json").read_text()) for l in langs}
    print("\n| language adapter | held-out MLM loss before -> after | params | minutes | stored MB |")
    print("|---|---|---|---|---|")
    for l, s in lang_summaries.items():
        print(f"| {l} | {s['held_out_before']['loss']:.3f} -> {s['held_out_after']['loss']:.3f} | "
              f"{s['trainable_params']:,} | {s['train_seconds'] / 60:.1f} | {s['saved_bytes'] / 1e6:.2f} |")
    print("\n| setup | " + " | ".join(f"{l} F1" for l in TARGETS) + " | average |")
    print("|---|" + "---|" * (len(TARGETS) + 1))
    for name, s in rows.items():
        f1 = [100 * s["test"][l]["f1"] for l in TARGETS]
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in f1) + f" | {sum(f1) / len(f1):.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "lang": lang_summaries, "task": rows}, indent=2)
                                   + "\n")


if __name__ == "__main__":
    main()
