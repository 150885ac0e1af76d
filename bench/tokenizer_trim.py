"""Trim a real-size tokenizer (and a model over it) to a few languages; check outputs stay identical.

    PYTHONPATH=. python bench/tokenizer_trim.py --tokenizer TOK_DIR --corpus CORPUS_DIR \
        --languages eng_Latn,deu_Latn,fra_Latn --preset small

Builds a randomly initialised MLM model of `--preset` over the tokenizer's vocabulary, saves it with the
tokenizer, runs `xlmr tokenizer trim` on the chosen languages' files (debian_X files count as X), then
compares hidden states of the full and trimmed model on lines of those languages.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import xlmr  # noqa: E402
from xlmr.cli import main as cli  # noqa: E402
from xlmr.tokenizer import Tokenizer  # noqa: E402
from xlmr.sources import language_of  # noqa: E402
from xlmr.tokenizer_train import read_corpus  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--languages", default="eng_Latn,deu_Latn,fra_Latn")
    p.add_argument("--preset", default="small", choices=list(xlmr.PRESETS))
    p.add_argument("--check-lines", type=int, default=200)
    args = p.parse_args(argv)
    langs = set(args.languages.split(","))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subset = tmp / "corpus"
        subset.mkdir()
        for f in sorted(Path(args.corpus).glob("*.txt")):
            if language_of(f) in langs:
                (subset / f.name).symlink_to(f.resolve())  # no copy of the data
        tok = Tokenizer.from_pretrained(args.tokenizer)
        torch.manual_seed(0)
        config = dataclasses.replace(xlmr.PRESETS[args.preset], vocab_size=tok.vocab_size, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
        model = xlmr.Model(config, "mlm").eval()
        xlmr.save(model, tmp / "full")
        tok.save(tmp / "full")
        print(f"$ xlmr tokenizer trim --model full/ --corpus {{{args.languages}}} --out small/")
        assert cli(["tokenizer", "trim", "--model", str(tmp / "full"), "--corpus", str(subset),
                    "--out", str(tmp / "small")]) == 0
        small, small_tok = xlmr.load(tmp / "small"), Tokenizer.from_pretrained(tmp / "small")
        lines = [s for ls in read_corpus(subset).values() for s in ls]
        lines = random.Random(0).sample(lines, min(args.check_lines, len(lines)))
        worst, same = 0.0, 0
        for i in range(0, len(lines), 16):
            a, b = tok.encode(lines[i:i + 16], max_length=128), small_tok.encode(lines[i:i + 16], max_length=128)
            same += sum(tok.convert_ids_to_tokens(x) == small_tok.convert_ids_to_tokens(y)
                        for x, y in zip(a.input_ids, b.input_ids))
            ids, mask, _ = a.tensors()
            with torch.no_grad():
                h1 = model.encoder_model(ids, mask)[mask.bool()]
                h2 = small.encoder_model(b.tensors()[0], mask)[mask.bool()]
            worst = max(worst, (h1 - h2).abs().max().item())
        print(f"{len(lines)} lines of {args.languages}: {same} encode to the same pieces; "
              f"max |hidden state difference| {worst:.2e}")


if __name__ == "__main__":
    main()
