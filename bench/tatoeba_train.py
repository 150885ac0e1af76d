"""Embedding training on some Tatoeba languages, tested on the others (in-batch negatives).

    python bench/tatoeba_train.py --data ../shared/data/tatoeba --max-eval 25 --threads 1

Builds a source<TAB>target file from pairs FIRST..LAST of the training languages (so the first
--max-eval pairs, the test pairs, are never trained on) and runs `xlmr finetune --task retrieval`,
which tests the tuned model on every other language. The untuned figures on the same pairs come from
bench/tatoeba_retrieval.py with the same --max-eval.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from xlmr.cli import main as xlmr

TRAIN = "ara bul ces dan ell est fin heb hin hun".split()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/tatoeba")
    p.add_argument("--train-langs", nargs="+", default=TRAIN)
    p.add_argument("--pairs", default="26-125", help="FIRST-LAST lines of each training language (1-based)")
    p.add_argument("--max-eval", type=int, default=25)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/tatoeba-train")
    args = p.parse_args()
    first, last = map(int, args.pairs.split("-"))
    data = Path(args.data)
    rows = []
    for lang in args.train_langs:
        src = (data / lang / f"{lang}-eng.{lang}").read_text(encoding="utf-8").splitlines()[first - 1:last]
        tgt = (data / lang / f"{lang}-eng.eng").read_text(encoding="utf-8").splitlines()[first - 1:last]
        rows += [f"{s}\t{t}\n" for s, t in zip(src, tgt)]
    tests = [str(d) for d in sorted(data.iterdir()) if d.is_dir() and d.name not in args.train_langs]
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "train_pairs.tsv"
        pairs.write_text("".join(rows), encoding="utf-8")
        raise SystemExit(xlmr(["finetune", "--task", "retrieval", "--model", "multilingual-e5-small", "--prefix",
                               "query: ", "--train", str(pairs), "--test", *tests, "--max-eval", str(args.max_eval),
                               "--batch-size", "32", "--lr", "2e-5", "--epochs", "1", "--threads", str(args.threads),
                               "--no-progress", "--out", args.out]))


if __name__ == "__main__":
    main()
