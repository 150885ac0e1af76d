"""`xlmr tokenizer train | trim`: train a multilingual SentencePiece tokenizer, or cut one (and its model) down."""

from __future__ import annotations

import time

from ..options import add_command


def register(sub) -> None:
    p = add_command(sub, "tokenizer", "train or trim tokenizers",
                    "xlmr tokenizer train --corpus corpus/ --vocab-size 32000 --alpha 0.3 --out tok/")
    tsub = p.add_subparsers(title="tokenizer commands", metavar="ACTION", required=True)

    t = add_command(tsub, "train", "train an XLM-R-style SentencePiece unigram tokenizer on per-language files",
                    "xlmr tokenizer train --corpus corpus/ --vocab-size 32000 --alpha 0.3 --out tok/")
    t.add_argument("--corpus", required=True, help="directory of <language>.txt files (debian_X.txt counts as X)")
    t.add_argument("--vocab-size", type=int, default=32000,
                   help="SentencePiece pieces; the model vocabulary gets 2 more ids (<pad>, <mask>)")
    t.add_argument("--alpha", type=float, default=0.3, help="language sampling exponent: prob ∝ share^alpha")
    t.add_argument("--out", required=True, help="output directory (sentencepiece.bpe.model, tokenizer.json, ...)")
    t.add_argument("--sample-chars", type=int, default=10_000_000,
                   help="characters of alpha-sampled text SentencePiece trains on")
    t.add_argument("--character-coverage", type=float, default=0.9995, help="share of characters kept as pieces")
    t.add_argument("--threads", type=int, default=2, help="SentencePiece training threads")
    t.add_argument("--seed", type=int, default=0, help="seed of the language sampling")
    t.set_defaults(func=run_train)

    m = add_command(tsub, "trim", "keep only the pieces a corpus uses, in the tokenizer and the model",
                    "xlmr tokenizer trim --model xlmr_dir/ --corpus my_langs/ --out small_dir/")
    m.add_argument("--model", required=True, help="checkpoint directory with its tokenizer files")
    m.add_argument("--corpus", required=True, help="directory of .txt files in the languages to keep")
    m.add_argument("--out", required=True, help="output checkpoint directory (model + tokenizer)")
    m.set_defaults(func=run_trim)


def run_train(args) -> int:
    from ..tokenizer_train import fertility, format_table, read_corpus, train

    start = time.perf_counter()
    corpus = read_corpus(args.corpus)
    tok, table = train(args.corpus, args.out, args.vocab_size, args.alpha, args.sample_chars,
                       args.character_coverage, args.threads, args.seed, corpus=corpus)
    trained = time.perf_counter() - start
    stats = fertility(tok, corpus)
    print(format_table(table, stats))
    worst = max(stats, key=lambda s: s.unk_rate)
    print(f"\n{len(table)} languages, vocabulary {tok.vocab_size:,} ids; trained in {trained:.0f} s; "
          f"highest <unk> rate {100 * worst.unk_rate:.3f}% ({worst.name})")
    print(f"wrote {args.out}/sentencepiece.bpe.model, tokenizer.json, tokenizer_config.json")
    return 0


def run_trim(args) -> int:
    from ..tokenizer_trim import trim

    r = trim(args.model, args.corpus, args.out)
    b, a = r["before"], r["after"]
    print(f"{'':<22}{'before':>14}{'after':>14}{'kept':>8}")
    for label, x, y in (("vocabulary", b["vocab"], a["vocab"]), ("embedding params", b["embedding"], a["embedding"]),
                        ("total params", b["total"], a["total"])):
        print(f"{label:<22}{x:>14,}{y:>14,}{100 * y / max(x, 1):>7.1f}%")
    print(f"wrote {args.out} (model.safetensors, config.json, tokenizer.json)")
    return 0
