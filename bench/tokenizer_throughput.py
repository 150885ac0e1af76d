"""Batch-encoding throughput: xlmr.Tokenizer vs transformers' fast tokenizer, same files, same process.

    PYTHONPATH=. python bench/tokenizer_throughput.py --tokenizer TOK_DIR --corpus CORPUS_DIR

Both load the same tokenizer directory and encode the same lines in batches, padded and truncated to
--max-length (xlmr converts word ids, offsets and type ids from the Rust encodings when first read).
Each library is timed returning ids + mask (transformers' default) and also offsets + word ids (what NER
needs). Prints lines/s and the ratios xlmr / transformers.
Runs are interleaved and the best of --repeats is kept, as the machine may be shared.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xlmr.tokenizer import Tokenizer  # noqa: E402
from xlmr.tokenizer_train import read_corpus  # noqa: E402


def best_of(repeats, fns):
    """Fastest wall time of each function over `repeats` interleaved rounds (the runs least disturbed
    by other processes on a shared machine; interleaving spreads any slow period over all of them)."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [min(t) for t in times]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, help="tokenizer directory (both libraries load it)")
    p.add_argument("--corpus", required=True, help="directory of .txt files")
    p.add_argument("--lines", type=int, default=50_000, help="lines sampled from the corpus")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from transformers import AutoTokenizer

    lines = [s for ls in read_corpus(args.corpus).values() for s in ls]
    lines = random.Random(0).sample(lines, min(args.lines, len(lines)))
    batches = [lines[i:i + args.batch_size] for i in range(0, len(lines), args.batch_size)]
    ours = Tokenizer.from_pretrained(args.tokenizer)
    hf = AutoTokenizer.from_pretrained(args.tokenizer)
    n = args.max_length

    def run_ours():
        for b in batches:
            ours.encode(b, max_length=n)

    def run_ours_offsets():
        for b in batches:
            batch = ours.encode(b, max_length=n)
            batch.offsets, batch.word_ids

    def run_hf():
        for b in batches:
            hf(b, padding=True, truncation=True, max_length=n)

    def run_hf_offsets():
        for b in batches:
            enc = hf(b, padding=True, truncation=True, max_length=n, return_offsets_mapping=True)
            [enc.word_ids(i) for i in range(len(b))]

    check = ours.encode(batches[0], max_length=n)
    want = hf(batches[0], padding=True, truncation=True, max_length=n, return_offsets_mapping=True)
    assert check.input_ids == want["input_ids"] and check.offsets == [list(map(tuple, r)) for r in want["offset_mapping"]]
    chars = sum(map(len, lines))
    print(f"{len(lines):,} lines ({chars:,} chars) from {args.corpus}, batch {args.batch_size}, "
          f"max_length {n}, tokenizer {args.tokenizer} ({type(hf).__name__}), best of {args.repeats}")
    times = best_of(args.repeats, [run_ours, run_hf, run_ours_offsets, run_hf_offsets])
    rows = [("xlmr.Tokenizer.encode", "ids, mask"), ("transformers fast", "ids, mask"),
            ("xlmr.Tokenizer.encode", "ids, mask, offsets, word ids"),
            ("transformers fast", "ids, mask, offsets, word ids")]
    print("| encoder | returns | seconds | lines/s |")
    print("|---|---|---:|---:|")
    for (name, what), t in zip(rows, times):
        print(f"| {name} | {what} | {t:.2f} | {len(lines) / t:,.0f} |")
    print(f"ratio xlmr / transformers throughput: {times[1] / times[0]:.2f} (ids, mask), "
          f"{times[3] / times[2]:.2f} (with offsets and word ids)")


if __name__ == "__main__":
    main()
