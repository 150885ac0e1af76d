"""Trim multilingual-e5-small to the SIB-200 languages of the corpus; check it is exact; fine-tune both.

    python bench/trim_real.py [--model multilingual-e5-small] [--epochs 3] [--threads 1] [--json trim.json]

1. `xlmr tokenizer trim` on the corpus files (`../shared/corpus`, debian_X counts as X) of the languages
   that have a SIB-200 test set (20), timed;
2. vocabulary, parameters and model.safetensors size, before and after;
3. exactness on every SIB-200 test sentence of those languages: the share whose trimmed ids map one to
   one onto the untrimmed ids (same pieces), and the largest |difference| of the last hidden states
   (fp32) over the sentences that map;
4. the trimmed encoder, saved bare, loads in transformers (`AutoModel`, `AutoTokenizer`): same hidden
   states (the mean-pooling sequence head is xlmr's own, which transformers does not have);
5. the same fine-tune of both checkpoints on `eng_Latn/train.tsv` (xlmr.finetune defaults, lr 1e-4,
   batch 32, --epochs, seed 0, max length 128), each side in its own process, one after the other:
   zero-shot accuracy over the 19 other languages (first --test-n test sentences each), training wall
   and CPU time, peak resident memory. Both start from the same classification head: the untrimmed
   model gets a seeded fresh head and is saved, and that checkpoint is trimmed head and all; each side
   re-seeds after loading, so both draw the same dropout masks whatever their vocabulary size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
from sides import peak_rss_mb, run_sides, timed_xlmr_train  # noqa: E402

SHARED = Path(os.environ.get("XLMR_DATA", str(ROOT.parent / "shared" / "data"))).parent
SIB = SHARED / "data" / "sib200"
CORPUS = Path(os.environ.get("XLMR_CORPUS", str(SHARED / "corpus")))
SOURCE = "eng_Latn"


def languages() -> list[str]:
    return sorted(p.name for p in SIB.iterdir() if (p / "test.tsv").is_file())


def corpus_subset(langs: list[str], directory: Path) -> Path:
    """Symlinks to the corpus files of `langs` (no copy of the data)."""
    from xlmr.sources import language_of

    directory.mkdir(parents=True, exist_ok=True)
    for f in sorted(CORPUS.glob("*.txt")):
        if language_of(f) in langs:
            (directory / f.name).symlink_to(f.resolve())
    return directory


def test_texts(lang: str, n: int = 0) -> list[str]:
    from xlmr.tasks import get_task

    texts = [ex.text for ex in get_task("classify").read(str(SIB / lang / "test.tsv"))]
    return texts[:n] if n else texts


def with_head(full_dir: Path, out: Path) -> Path:
    """The untrimmed checkpoint with a seeded fresh SIB-200 classification head, saved with its tokenizer."""
    import torch

    import xlmr
    from xlmr.checkpoint import copy_tokenizer
    from xlmr.tasks import get_task

    task = get_task("classify")
    labels = task.build_labels(task.read(str(SIB / SOURCE / "train.tsv")))
    torch.manual_seed(0)
    xlmr.save(xlmr.load(full_dir, head="sequence", id2label=dict(enumerate(labels))), out)
    copy_tokenizer(full_dir, out)
    return out


def exactness(full_dir: Path, small_dir: Path, langs: list[str], n: int) -> dict:
    """Share of test sentences whose pieces are kept, and the worst hidden-state difference on them."""
    import torch

    import xlmr
    from xlmr.tokenizer import Tokenizer

    tok, small_tok = Tokenizer.from_pretrained(full_dir), Tokenizer.from_pretrained(small_dir)
    old_of = [tok.backend.token_to_id(small_tok.backend.id_to_token(i)) for i in range(small_tok.vocab_size)]
    full, small = xlmr.load(full_dir, head="base"), xlmr.load(small_dir, head="base")
    per_lang, worst, mapped, total = {}, 0.0, 0, 0
    for lang in langs:
        texts, same = test_texts(lang, n), 0
        for i in range(0, len(texts), 32):
            a, b = tok.encode(texts[i:i + 32], max_length=128), small_tok.encode(texts[i:i + 32], max_length=128)
            unpadded = lambda enc: [[t for t, m in zip(ids, mask) if m] for ids, mask in zip(enc.input_ids,
                                                                                            enc.attention_mask)]
            rows = [r for r, (x, y) in enumerate(zip(unpadded(a), unpadded(b))) if x == [old_of[j] for j in y]]
            same += len(rows)
            if not rows:
                continue
            rows_t = torch.tensor(rows)
            (ids, mask, _), (small_ids, small_mask, _) = a.tensors(), b.tensors()
            with torch.no_grad():  # each batch padded to its own longest row: compare the real tokens only
                h1 = full(ids[rows_t], mask[rows_t])
                h2 = small(small_ids[rows_t], small_mask[rows_t])
            T = min(h1.shape[1], h2.shape[1])
            real = mask[rows_t, :T].bool()
            worst = max(worst, (h1[:, :T][real] - h2[:, :T][real]).abs().max().item())
        per_lang[lang] = same / len(texts)
        mapped, total = mapped + same, total + len(texts)
    return {"mapped": mapped, "sentences": total, "mapped_per_language": per_lang, "max_abs_diff": worst}


def transformers_loads(small_dir: Path, tmp: Path) -> float:
    """Largest |difference| between transformers' and xlmr's hidden states on the trimmed encoder. The
    mean-pooling sequence head is xlmr's own (transformers has none), so the encoder is saved bare first."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    import xlmr
    from xlmr.checkpoint import copy_tokenizer

    texts = test_texts(SOURCE)[:16] + test_texts("yor_Latn")[:16]
    bare = tmp / "trimmed-encoder"
    ours = xlmr.load(small_dir, head="base")
    xlmr.save(ours, bare)
    copy_tokenizer(small_dir, bare)
    hf_tok = AutoTokenizer.from_pretrained(bare)
    hf = AutoModel.from_pretrained(bare).eval()
    enc = hf_tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        a = hf(**enc).last_hidden_state
        b = ours(enc["input_ids"], enc["attention_mask"])
    real = enc["attention_mask"].bool()
    return (a[real] - b[real]).abs().max().item()


def child(args) -> None:
    """Fine-tune one checkpoint in this process; results as JSON on the last stdout line."""
    import torch

    import xlmr.finetune as ft

    torch.set_num_threads(args.threads)
    real_load = ft.load

    def load_then_seed(*a, **kw):  # the same RNG stream after loading, whatever the vocabulary size
        model = real_load(*a, **kw)
        torch.manual_seed(0)
        return model

    ft.load = load_then_seed
    timing = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ft.FinetuneConfig(model=args.side_model, task="classify", train=str(SIB / SOURCE / "train.tsv"),
                                test=[f"{lang}={SIB / lang / 'test.tsv'}" for lang in languages()], out=tmp,
                                max_eval=args.test_n,
                                epochs=args.epochs, batch_size=32, lr=1e-4, warmup=0.1, weight_decay=0.01,
                                seed=0, max_length=128, progress=False, threads=args.threads)
        with timed_xlmr_train(timing):
            summary = ft.finetune(cfg)
    acc = {lang: m["accuracy"] for lang, m in summary["test"].items()}
    print(json.dumps({"accuracy": acc, "train_wall_s": timing["wall"], "train_cpu_s": timing["cpu"],
                      "peak_rss_mb": peak_rss_mb()}))


def zero_shot(acc: dict) -> float:
    others = [v for k, v in acc.items() if k != SOURCE]
    return sum(others) / len(others)


def sizes(directory: Path) -> dict:
    import xlmr
    from xlmr.tokenizer_trim import parameter_counts

    counts = parameter_counts(xlmr.load(directory, head="base"))
    return {**counts, "file_mb": (directory / "model.safetensors").stat().st_size / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="multilingual-e5-small")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--check-n", type=int, default=0, help="test sentences per language for the exactness check "
                    "(0: all, -1: skip it)")
    ap.add_argument("--test-n", type=int, default=0, help="test sentences per language after fine-tuning (0: all; "
                    "the files are ordered by topic, so the first N are mostly one topic)")
    ap.add_argument("--out", default=None, help="keep the trimmed checkpoint here (default: a temporary dir)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--reuse", nargs=2, metavar=("HEADED", "TRIMMED"), default=None,
                    help="skip the trim: the headed untrimmed and the trimmed directories of an earlier run")
    ap.add_argument("--parallel", action="store_true", help="run the two fine-tunes at the same time")
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)  # internal: fine-tune one checkpoint
    ap.add_argument("--side-model", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return child(args)
    from xlmr.checkpoint import resolve

    full_dir, langs = resolve(args.model), languages()
    with tempfile.TemporaryDirectory() as tmp:
        small_dir = Path(args.out or Path(tmp) / "trimmed")
        subset = corpus_subset(langs, Path(tmp) / "corpus")
        headed = Path(args.reuse[0]) if args.reuse else with_head(full_dir, Path(tmp) / "full-head")
        small_dir = Path(args.reuse[1]) if args.reuse else small_dir
        cmd = [sys.executable, "-m", "xlmr", "tokenizer", "trim", "--model", str(headed), "--corpus", str(subset),
               "--out", str(small_dir)]
        print(f"$ xlmr tokenizer trim --model {args.model}+head --corpus <{len(langs)} SIB-200 languages, "
              f"{len(list(subset.iterdir()))} files> --out trimmed/", flush=True)
        w = time.perf_counter()
        if not args.reuse:
            subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads),
                                                 "PYTHONPATH": str(ROOT)})
        r = {"trim_wall_s": time.perf_counter() - w, "before": sizes(headed), "after": sizes(small_dir)}
        if args.check_n >= 0:  # -1: fine-tune only
            r["exact"] = exactness(full_dir, small_dir, langs, args.check_n)
            r["transformers_max_abs_diff"] = transformers_loads(small_dir, Path(tmp))
            report_exact(r)
        r["finetune"] = fine_tunes(args, {"full": headed, "trimmed": small_dir})
    report_finetune(r, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **r}, indent=2) + "\n")


def fine_tunes(args, dirs: dict) -> dict:
    """Each side in its own process: one after the other, or both at once with --parallel."""
    argv = lambda d: ["--epochs", str(args.epochs), "--threads", str(args.threads), "--test-n", str(args.test_n),
                      "--side-model", str(d)]
    if not args.parallel:
        return {name: run_sides(__file__, [name], argv(d), args.threads)[name] for name, d in dirs.items()}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    procs = {name: subprocess.Popen([sys.executable, __file__, "--side", name, *argv(d)], stdout=subprocess.PIPE,
                                    text=True, env=env) for name, d in dirs.items()}
    out = {}
    for name, p in procs.items():
        stdout, _ = p.communicate()
        if p.returncode:
            sys.exit(f"{name} failed")
        out[name] = json.loads(stdout.strip().splitlines()[-1])
    return out


def report_exact(r: dict) -> None:
    b, a = r["before"], r["after"]
    print(f"\ntrimmed in {r['trim_wall_s']:.0f} s\n{'':<20}{'before':>14}{'after':>14}{'kept':>8}")
    for label, key in (("vocabulary", "vocab"), ("embedding params", "embedding"), ("total params", "total"),
                       ("model.safetensors MB", "file_mb")):
        print(f"{label:<20}{b[key]:>14,.0f}{a[key]:>14,.0f}{100 * a[key] / b[key]:>7.1f}%")
    e = r["exact"]
    worst = min(e["mapped_per_language"].items(), key=lambda kv: kv[1])
    print(f"SIB-200 test sentences whose ids map one to one: {e['mapped']}/{e['sentences']} "
          f"(lowest: {worst[0]} {100 * worst[1]:.1f}%); max |hidden state difference| on them "
          f"{e['max_abs_diff']:.2e}")
    print(f"transformers AutoModel on the trimmed directory vs xlmr: max |difference| "
          f"{r['transformers_max_abs_diff']:.2e}", flush=True)


def report_finetune(r: dict, args) -> None:
    f, t = r["finetune"]["full"], r["finetune"]["trimmed"]
    print(f"\nSIB-200 fine-tune on {SOURCE}, {args.epochs:g} epochs, batch 32, lr 1e-4, seed 0, "
          f"first {args.test_n or 'all'} test sentences per language, "
          f"{args.threads} thread(s)\n{'language':10}{'full':>10}{'trimmed':>10}")
    for lang in sorted(f["accuracy"]):
        print(f"{lang:10}{f['accuracy'][lang]:10.3f}{t['accuracy'][lang]:10.3f}")
    print(f"{'zero-shot':10}{zero_shot(f['accuracy']):10.3f}{zero_shot(t['accuracy']):10.3f}")
    for label, key, fmt in (("train s", "train_wall_s", ".1f"), ("CPU s", "train_cpu_s", ".1f"),
                            ("peak MB", "peak_rss_mb", ".0f")):
        print(f"{label:10}{f[key]:10{fmt}}{t[key]:10{fmt}}")
    print(f"trimmed vs full: zero-shot {100 * (zero_shot(t['accuracy']) - zero_shot(f['accuracy'])):+.1f} points, "
          f"train time {t['train_wall_s'] / f['train_wall_s']:.3f}x (CPU {t['train_cpu_s'] / f['train_cpu_s']:.3f}x), "
          f"peak memory {t['peak_rss_mb'] / f['peak_rss_mb']:.3f}x")


if __name__ == "__main__":
    main()
