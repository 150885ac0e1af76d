"""Real-corpus tokenizer runs (`make bench` / `pytest -m benchmark`), outside the default suite.

The corpus is $XLMR_CORPUS, else /work/shared/corpus; skipped when absent. Numbers are in docs/tokenizers.md.
"""

import os
import time
from pathlib import Path

import pytest

CORPUS = Path(os.environ.get("XLMR_CORPUS", "/work/shared/corpus"))

pytestmark = [pytest.mark.benchmark,
              pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no corpus at {CORPUS} (set XLMR_CORPUS)")]


def test_train_32k_on_the_corpus(tmp_path):
    from xlmr.tokenizer_train import fertility, format_table, read_corpus, train

    start = time.perf_counter()
    corpus = read_corpus(CORPUS)
    tok, table = train(CORPUS, tmp_path, vocab_size=32000, alpha=0.3, corpus=corpus)
    seconds = time.perf_counter() - start
    stats = fertility(tok, corpus)
    print(format_table(table, stats), f"\ntrained in {seconds:.0f} s")
    assert tok.vocab_size == 32002
    assert seconds < 300
    assert max(s.unk_rate for s in stats) < 0.03
