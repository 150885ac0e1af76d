"""`xlmr demo`: the whole pipeline offline, on the multilingual dialogue corpus that the PyPI
package chatterbot-corpus ships (read in place, never copied into the project).

Intent classification: the first utterance of each conversation is the text, its file's category
(food, greetings, money, sports, ...) the label. English trains; every other language that shares
categories with English is a zero-shot test set. Stages: tokenizer -> MLM pretraining -> fine-tuning
on English (full and LoRA) -> zero-shot evaluation -> predictions, all under runs/demo/.
"""

from __future__ import annotations

import csv
import json
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import copy_tokenizer
from .errors import XlmrError
from .io import atomic_write_text

# File stems that name the same category in different language folders.
ALIASES = {"sport": "sports", "emotions": "emotion", "emociones": "emotion", "computer": "computers",
           "greeting": "greetings", "coversations": "conversations", "dinero": "money", "ia": "ai",
           "psicologia": "psychology", "perfilbot": "botprofile", "profile": "botprofile"}
SKIP = {"conversations", "trivia", "tech_support", "coding", "botprofile"}  # not topical, or English-only
MIN_TEST = 20  # a language needs this many examples in shared categories to be a test set
CAP = 60  # examples per category and language, so no category dominates


@dataclass
class DemoPlan:
    quick: bool
    out: Path

    @property
    def pretrain_minutes(self) -> float:
        return 0.5 if self.quick else 4.0

    @property
    def finetune_epochs(self) -> float:
        return 10 if self.quick else 30


def corpus_dir() -> Path:
    try:
        import chatterbot_corpus
    except ImportError:
        raise XlmrError("the demo needs the package chatterbot-corpus (pip install 'xlmr[demo]')") from None
    return Path(chatterbot_corpus.__file__).parent / "data"


def read_corpus(root: Path) -> tuple[dict[str, list[tuple[str, str]]], dict[str, list[str]]]:
    """Per language: (first utterance, category) pairs, and all utterances (for pretraining)."""
    import yaml

    labelled, text = {}, {}
    for lang_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        pairs, lines = [], []
        for f in sorted(lang_dir.glob("*.yml")):
            try:
                data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError:
                continue  # a malformed file in the package: skip it, as the corpus' own loader would fail
            category = ALIASES.get(f.stem.lower(), f.stem.lower())
            seen = Counter()
            for conv in data.get("conversations") or []:
                if not isinstance(conv, list) or not conv:
                    continue
                utterances = [str(u).strip() for u in conv if isinstance(u, (str, int, float)) and str(u).strip()]
                lines.extend(utterances)
                if utterances and category not in SKIP and seen[category] < CAP:
                    pairs.append((" ".join(utterances[0].split()), category))
                    seen[category] += 1
        labelled[lang_dir.name], text[lang_dir.name] = pairs, lines
    return labelled, text


def build_dataset(out: Path) -> tuple[dict[str, Path], Path, Path, Path]:
    """Write the English train/dev/test TSVs, one test TSV per other language, and per-language
    pretraining text. Splits are deterministic (hash of the text)."""
    labelled, text = read_corpus(corpus_dir())
    english = labelled.get("english") or []
    labels = sorted({c for _, c in english})
    data = out / "data"
    splits: dict[str, list] = {"train": [], "dev": [], "test": []}
    for t, c in english:
        h = zlib.crc32(t.encode()) % 10
        splits["train" if h < 7 else "dev" if h < 8 else "test"].append((t, c))
    for name, rows in splits.items():
        _write_tsv(data / "english" / f"{name}.tsv", rows)
    tests = {"english": data / "english" / "test.tsv"}
    for lang, pairs in labelled.items():
        rows = [(t, c) for t, c in pairs if c in labels]
        if lang == "english" or len(rows) < MIN_TEST or len({c for _, c in rows}) < 2:
            continue
        tests[lang] = _write_tsv(data / lang / "test.tsv", rows)
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for lang, lines in text.items():
        if len(lines) >= 20:
            (corpus / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tests, data / "english" / "train.tsv", data / "english" / "dev.tsv", corpus


def _write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


class Stages:
    """Prints each stage with its wall time."""

    def __init__(self):
        self.t0, self.times = time.perf_counter(), {}

    def __call__(self, name: str):
        stages = self

        class _Stage:
            def __enter__(self):
                print(f"\n=== {name}", flush=True)
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                stages.times[name] = time.perf_counter() - self.start
                if exc[0] is None:
                    print(f"--- {name}: {stages.times[name]:.1f} s", flush=True)

        return _Stage()


def run_demo(quick: bool = False, out: str = "runs/demo") -> dict:
    """Run every stage; return the per-language zero-shot table."""
    import torch

    from .corpus import prepare
    from .finetune import FinetuneConfig, evaluate_model, finetune
    from .checkpoint import save
    from .pretrain import PretrainConfig, build_model, pretrain
    from .tokenizer import Tokenizer
    from .tokenizer_train import format_table, train as train_tokenizer

    plan = DemoPlan(quick, Path(out))
    plan.out.mkdir(parents=True, exist_ok=True)
    stage = Stages()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    with stage("1/6 data: chatterbot-corpus intents"):
        tests, train_tsv, dev_tsv, corpus = build_dataset(plan.out)
        print(f"languages: {', '.join(tests)}; English train/dev/test from {train_tsv.parent}")
    with stage("2/6 tokenizer: SentencePiece unigram on every language"):
        tok_dir = plan.out / "tokenizer"
        _, table = train_tokenizer(corpus, tok_dir, vocab_size=5000 if quick else 8000, alpha=0.3)
        print(format_table(table))
    with stage("3/6 pretraining: tiny encoder, masked language modelling"):
        prepare(corpus, tok_dir, plan.out / "mlm_data", alpha=0.3, workers=1, log=lambda *a: None)
        # The run is bounded by time, not steps, so the lr stays constant after warm-up: an inverse-sqrt
        # decay from a 20-step warm-up left under 10% of the peak lr for most of the 4 minutes.
        cfg = PretrainConfig(data=str(plan.out / "mlm_data"), tokenizer=str(tok_dir), out=str(plan.out / "pretrain"),
                             preset="tiny", seq_len=64, batch_size=32, max_steps=100000,
                             max_minutes=plan.pretrain_minutes, schedule="constant", warmup=100, lr=1e-3,
                             eval_every=50, save_every=1000, progress=True)
        summary = pretrain(cfg)
        tok = Tokenizer.from_pretrained(tok_dir)
        scratch = plan.out / "scratch"  # the same architecture from random init: the no-pretraining row
        torch.manual_seed(0)
        save(build_model(cfg, tok), scratch)
        copy_tokenizer(tok_dir, scratch)
        print(f"pretrained {summary['steps']} steps; held-out MLM loss "
              f"{summary['eval']['eval_loss']:.3f}" if summary["eval"] else "")
    rows: dict[str, dict[str, dict]] = {}
    runs = [("pretrained", summary["final"], "none"), ("pretrained + LoRA", summary["final"], "lora"),
            ("no pretraining", str(scratch), "none")]
    for name, model_dir, peft in runs:
        with stage(f"4/6 fine-tuning on English: {name}"):
            ft_out = plan.out / ("finetune_" + name.replace(" ", "_").replace("+", "").replace("__", "_"))
            extra = {"peft": peft, "lr": 3e-3} if peft != "none" else {}
            fcfg = FinetuneConfig(model=model_dir, task="classify", train=str(train_tsv), dev=str(dev_tsv),
                                  out=str(ft_out), epochs=plan.finetune_epochs, lr=extra.pop("lr", 2e-3),
                                  batch_size=16, max_length=64, warmup=0.1, embeddings="dense", progress=False,
                                  **extra)
            finetune(fcfg)
        with stage(f"5/6 zero-shot evaluation: {name}"):
            rows[name] = evaluate_model(str(ft_out / "best"), [f"{l}={p}" for l, p in tests.items()],
                                        str(ft_out / "eval"))
    table = _zero_shot_table(rows, list(tests))
    print("\n" + table)
    atomic_write_text(plan.out / "zero_shot.md", table + "\n")
    with stage("6/6 predictions: xlmr predict"):
        _predict_examples(plan.out, tests)
    print("\nnext steps:\n"
          "  xlmr finetune --model runs/demo/pretrain/final --task classify --train your/train.tsv "
          "--dev your/dev.tsv --test de=your/de.tsv --out runs/yours\n"
          "  xlmr serve --model runs/demo/finetune_pretrained/best\n"
          f"total {time.perf_counter() - stage.t0:.0f} s; everything is in {plan.out}/")
    return rows


def _zero_shot_table(rows: dict[str, dict[str, dict]], langs: list[str]) -> str:
    """Markdown: one row per language, one column per run (accuracy), plus the zero-shot average."""
    names = list(rows)
    head = "| language | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names)
    lines = [head]
    for lang in langs:
        lines.append(f"| {lang} | " + " | ".join(f"{rows[n][lang]['accuracy']:.3f}" for n in names) + " |")
    zero = [l for l in langs if l != "english"]
    avg = [sum(rows[n][l]["accuracy"] for l in zero) / max(len(zero), 1) for n in names]
    lines.append("| **zero-shot average** | " + " | ".join(f"**{a:.3f}**" for a in avg) + " |")
    return "\n".join(lines)


def _predict_examples(out: Path, tests: dict[str, Path]) -> None:
    from .predict import Predictor

    model = out / "finetune_pretrained" / "best"
    predictor = Predictor(str(model))
    sample = []
    for lang, path in tests.items():
        with open(path, encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t"))[1:3]
        sample += [(lang, r[0], r[1]) for r in rows]
    inputs = out / "predict_input.txt"
    inputs.write_text("\n".join(t for _, t, _ in sample) + "\n", encoding="utf-8")
    results = predictor([t for _, t, _ in sample])
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for (lang, text, gold), r in zip(sample, results):
            f.write(json.dumps({"lang": lang, **r, "gold": gold}, ensure_ascii=False) + "\n")
            print(f"  [{lang}] {text[:50]!r:54} -> {r['label']:<12} (gold {gold})")
    print(f"(the same from the shell: xlmr predict --model {model} --input {inputs} "
          f"--output {out}/predictions.jsonl)", file=sys.stderr)
