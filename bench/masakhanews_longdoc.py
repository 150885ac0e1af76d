"""Long documents: MasakhaNEWS topic classification, trained on English, tested zero-shot; windows vs truncation.

Both sides fine-tune the same checkpoint (default: multilingual-e5-small) on English (`eng/dev.tsv`:
English has no train split, its dev set is the training set for transfer) and test every other
language's `test.tsv`, zero-shot, on the documents whose topic English has (the labels the two share).
Same hyper-parameters on both sides; what differs:

- `truncate`: classify as it is without `--windows`: each text's first `--max-length` tokens;
- `windows`: `--windows --doc-pooling mean`: the whole text in windows of `--max-length` tokens
  overlapping by `--stride`, their logits averaged, in training (one loss term per document) and in
  testing. Its batch holds `--batch` x `--window-batch` rows, so that a step sees about as many
  documents as a truncate step.

To fit a 2-core machine, documents can be cut to their first `--doc-tokens` tokens before either side
sees them (windows then read all of what is left; truncation its first `--max-length` tokens), and
`--train-n` / `--test-n` documents are drawn at random (seed 0) from each split. Each side runs in its
own process; `--parallel` runs them at the same time, each on `--threads` threads.

    python bench/masakhanews_longdoc.py [--data $XLMR_DATA/masakhanews] [--parallel] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sides import peak_rss_mb, timed_xlmr_train  # noqa: E402

DATA = os.path.join(os.environ.get("XLMR_DATA", str(ROOT.parent / "shared" / "data")), "masakhanews")
SOURCE = "eng"


def read_split(path: Path) -> list[tuple[str, str]]:
    """(text, label) per article of a MasakhaNEWS TSV (quoted fields may hold newlines)."""
    from xlmr.tasks import Classify

    return [(ex.text, ex.label) for ex in Classify(text_column="text", label_column="category").read(path)]


def sample(rows: list, n: int, seed: int = 0) -> list:
    import numpy as np

    if not n or n >= len(rows):
        return rows
    keep = sorted(np.random.default_rng(seed).permutation(len(rows))[:n].tolist())
    return [rows[i] for i in keep]


def cut(rows: list[tuple[str, str]], tok, doc_tokens: int) -> list[tuple[str, str]]:
    """Each text up to the end of its `doc_tokens`-th content token (0: whole)."""
    if not doc_tokens:
        return rows
    out = []
    for s in range(0, len(rows), 128):
        chunk = rows[s:s + 128]
        batch = tok.encode([t for t, _ in chunk], max_length=None)
        for (text, label), offsets, wids in zip(chunk, batch.offsets, batch.word_ids):
            ends = [e for (_, e), w in zip(offsets, wids) if w is not None]
            out.append((text[:ends[doc_tokens - 1]] if len(ends) > doc_tokens else text, label))
    return out


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> str:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["text", "label"])
        for text, label in rows:
            w.writerow([text.replace("\t", " "), label])  # a tab inside a multi-line quoted field is refused
    return str(path)


def prepare(args, tok, out: Path) -> dict:
    """The sampled, cut data as TSV files; returns {train, tests, stats}."""
    train = cut(sample(read_split(Path(args.data, SOURCE, "dev.tsv")), args.train_n), tok, args.doc_tokens)
    labels = {label for _, label in train}
    tests, stats = {}, {}
    for lang in sorted(p.name for p in Path(args.data).iterdir() if (p / "test.tsv").is_file()):
        if lang == SOURCE:
            continue
        rows = [r for r in read_split(Path(args.data, lang, "test.tsv")) if r[1] in labels]
        rows = cut(sample(rows, args.test_n), tok, args.doc_tokens)
        tests[lang] = write_tsv(out / f"{lang}.tsv", rows)
        lengths = sorted(len(x) for x in tok.encode([t for t, _ in rows], max_length=None).attention_mask)
        stats[lang] = {"docs": len(rows), "median_tokens": lengths[len(lengths) // 2]}
    return {"train": write_tsv(out / "train.tsv", train), "tests": tests, "stats": stats}


def child(args) -> None:
    """One side in this process; results as JSON on the last line of stdout."""
    import torch

    import xlmr.finetune as ft
    from xlmr.checkpoint import resolve
    from xlmr.tokenizer import Tokenizer

    torch.set_num_threads(args.threads)
    model = str(resolve(args.model))
    windows = args.side == "windows"
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare(args, Tokenizer.from_pretrained(model), Path(tmp))
        cfg = ft.FinetuneConfig(
            model=model, task="classify", train=data["train"], test=[f"{l}={p}" for l, p in data["tests"].items()],
            out=str(Path(tmp, "run")), epochs=args.epochs, lr=args.lr, warmup=0.1, weight_decay=0.01, seed=0,
            max_length=args.max_length, stride=args.stride, progress=False, threads=args.threads,
            batch_size=args.batch * (args.window_batch if windows else 1), windows=windows,
            doc_pooling="mean" if windows else None)
        timing: dict = {}
        t0 = time.perf_counter()
        with timed_xlmr_train(timing):
            summary = ft.finetune(cfg)
    acc = {lang: m["accuracy"] for lang, m in summary["test"].items()}
    print(json.dumps({"accuracy": acc, "stats": data["stats"], "steps": summary["steps"],
                      "train_wall_s": timing["wall"], "train_cpu_s": timing["cpu"],
                      "total_wall_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}))


def run(args, sides: list[str], argv: list[str]) -> dict[str, dict]:
    """Each side in its own process, one after the other, or all at once with --parallel."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    procs = {}
    results = {}
    for side in sides:
        print(f"running {side} ...", file=sys.stderr, flush=True)
        procs[side] = subprocess.Popen([sys.executable, __file__, "--side", side, *argv], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, env=env)
        if not args.parallel:
            results[side] = finish(side, procs[side])
    for side, proc in procs.items():
        if side not in results:
            results[side] = finish(side, proc)
    return results


def finish(side, proc) -> dict:
    out, err = proc.communicate()
    if proc.returncode:
        sys.exit(f"{side} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DATA, help="MasakhaNEWS directory ($XLMR_DATA/masakhanews)")
    ap.add_argument("--model", default="multilingual-e5-small")
    ap.add_argument("--sides", default="truncate,windows")
    ap.add_argument("--max-length", type=int, default=32, help="tokens per window (truncate: per text)")
    ap.add_argument("--stride", type=int, default=4, help="overlap of the windows, in subwords")
    ap.add_argument("--doc-tokens", type=int, default=128, help="cut every text to its first N tokens (0: whole)")
    ap.add_argument("--train-n", type=int, default=40, help="English training articles (0: all 472)")
    ap.add_argument("--test-n", type=int, default=40, help="test articles per language (0: all)")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch", type=int, default=8, help="documents per step (truncate: rows)")
    ap.add_argument("--window-batch", type=int, default=5, help="windows side: rows per batch = batch x this")
    ap.add_argument("--threads", type=int, default=1, help="threads per side")
    ap.add_argument("--parallel", action="store_true", help="run the sides at the same time")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)  # internal: run one side
    args = ap.parse_args()
    if args.side:
        return child(args)
    if not Path(args.data, SOURCE, "dev.tsv").is_file():
        sys.exit(f"no MasakhaNEWS data at {args.data} (see --data)")
    argv = [a for a in sys.argv[1:] if a not in ("--parallel",)]
    t0 = time.perf_counter()
    results = run(args, args.sides.split(","), argv)
    wall = time.perf_counter() - t0
    first = next(iter(results.values()))
    print(f"\nMasakhaNEWS, {args.model}: trained on {args.train_n or 'all'} {SOURCE} articles, {args.epochs:g} "
          f"epochs, lr {args.lr:g}, max length {args.max_length}, stride {args.stride}, documents cut to "
          f"{args.doc_tokens or 'no limit'} tokens, {args.test_n or 'all'} test articles per language\n")
    print(f"{'language':10}{'docs':>6}{'median tok':>11}" + "".join(f"{s:>10}" for s in results))
    for lang, st in first["stats"].items():
        print(f"{lang:10}{st['docs']:6d}{st['median_tokens']:11d}"
              + "".join(f"{r['accuracy'][lang]:10.3f}" for r in results.values()))
    mean = {s: sum(r["accuracy"].values()) / len(r["accuracy"]) for s, r in results.items()}
    print(f"{'average':27}" + "".join(f"{v:10.3f}" for v in mean.values()))
    for key in ("steps", "train_wall_s", "train_cpu_s", "peak_rss_mb"):
        print(f"{key:27}" + "".join(f"{r[key]:10.0f}" for r in results.values()))
    if "truncate" in mean and "windows" in mean:
        print(f"windows - truncate: {100 * (mean['windows'] - mean['truncate']):+.1f} points on average")
    print(f"bench wall time {wall:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
