"""`xlmr demo`: the whole pipeline offline, on the multilingual dialogue corpus that the PyPI
package chatterbot-corpus ships (read in place, never copied into the project).

Intent classification: the first utterance of each conversation is the text, its file's category
(food, greetings, money, sports, ...) the label. English trains; every other language that shares
categories with English is a zero-shot test set. Stages: data -> the pretrained multilingual encoder
(multilingual-e5-small, offline) -> fine-tuning on English (full and LoRA) with zero-shot evaluation
-> predictions, all under runs/demo/. `--from-scratch` replaces the encoder by a SentencePiece
tokenizer and a few minutes of MLM pretraining of a tiny encoder, beside its random-init twin.
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

DEFAULT_MODEL = "multilingual-e5-small"

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
        return 10


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


def run_demo(quick: bool = False, out: str = "runs/demo", from_scratch: bool = False,
             model: str = DEFAULT_MODEL) -> dict:
    """Run every stage; return the per-language zero-shot table ({run: {language: metrics}})."""
    import torch

    plan = DemoPlan(quick, Path(out))
    plan.out.mkdir(parents=True, exist_ok=True)
    stage = Stages()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    n = 5 if from_scratch else 4
    with stage(f"1/{n} data: chatterbot-corpus intents"):
        tests, train_tsv, dev_tsv, corpus = build_dataset(plan.out)
        print(f"languages: {', '.join(tests)}; English train/dev/test from {train_tsv.parent}")
    if from_scratch:
        runs = _pretrain_from_scratch(plan, corpus, stage, n)
    else:
        runs = _real_encoder(model, stage, n)
    if quick:  # one row: LoRA on the real encoder; pretrained and from-scratch rows from scratch
        runs = [r for r in runs if (r[2].get("peft") == "lora") != from_scratch]
    rows: dict[str, dict[str, dict]] = {}
    for name, model_dir, hp in runs:
        with stage(f"{n - 1}/{n} fine-tuning on English, then zero-shot evaluation: {name}"):
            ft_out = plan.out / ("finetune_" + _slug(name))
            _finetune_english(model_dir, train_tsv, dev_tsv, ft_out, plan, hp)
            rows[name] = _evaluate(ft_out, tests)
    table = _zero_shot_table(rows, list(tests), _majority(tests))
    print("\n" + table)
    atomic_write_text(plan.out / "zero_shot.md", table + "\n")
    first = plan.out / ("finetune_" + _slug(runs[0][0]))
    print(f"\nclassification report, {runs[0][0]}, English test set (all languages: {first}/eval/report.md):\n")
    print(_english_report(first / "eval" / "report.md"))
    print(f"confusion matrices: {first}/eval/confusion_<language>.png")
    with stage(f"{n}/{n} predictions: xlmr predict"):
        _predict_examples(first / "best", plan.out, tests)
    print("\nnext steps:\n"
          f"  xlmr finetune --model {model if not from_scratch else plan.out / 'pretrain' / 'final'} --task classify "
          "--train your/train.tsv --dev your/dev.tsv --test de=your/de.tsv --out runs/yours\n"
          f"  xlmr serve --model {first / 'best'}\n"
          f"total {time.perf_counter() - stage.t0:.0f} s; everything is in {plan.out}/")
    return rows


def _slug(name: str) -> str:
    return "_".join(name.replace("+", " ").split())


def _real_encoder(model: str, stage, n: int) -> list[tuple[str, str, dict]]:
    """Stage 2: the pretrained multilingual encoder (converted from its wheel on first use)."""
    from .checkpoint import load as load_checkpoint
    from .checkpoint import resolve
    from .io import count_parameters

    with stage(f"2/{n} model: {model}"):
        directory = resolve(model)
        m = load_checkpoint(directory)
        c = m.config
        print(f"{directory}\n{c.num_hidden_layers} layers x hidden {c.hidden_size}, vocabulary {c.vocab_size:,}, "
              f"{count_parameters(m).total / 1e6:.1f}M parameters")
        del m
    # Frozen word embeddings keep the rows of the languages English training never sees where
    # pretraining put them; LoRA leaves the encoder's weights as they are.
    return [("full fine-tuning", str(directory), {"lr": 1e-4, "embeddings": "frozen", "epochs_scale": 1.0}),
            ("LoRA", str(directory), {"lr": 3e-3, "embeddings": "frozen", "peft": "lora", "lora_r": 16,
                                      "lora_target": ["query", "key", "value", "dense"], "epochs_scale": 1.0})]


def _pretrain_from_scratch(plan: DemoPlan, corpus: Path, stage, n: int) -> list[tuple[str, str, dict]]:
    """Stages 2-3 of `--from-scratch`: a SentencePiece tokenizer, then MLM pretraining of a tiny
    encoder, and its random-init twin (the no-pretraining row)."""
    import torch

    from .checkpoint import save
    from .corpus import prepare
    from .pretrain import PretrainConfig, build_model, pretrain
    from .tokenizer import Tokenizer
    from .tokenizer_train import format_table, train as train_tokenizer

    with stage(f"2/{n} tokenizer: SentencePiece unigram on every language"):
        tok_dir = plan.out / "tokenizer"
        _, table = train_tokenizer(corpus, tok_dir, vocab_size=5000 if plan.quick else 8000, alpha=0.3)
        print(format_table(table))
    with stage(f"3/{n} pretraining: tiny encoder, masked language modelling"):
        prepare(corpus, tok_dir, plan.out / "mlm_data", alpha=0.3, workers=1, log=lambda *a: None)
        # Bounded by time, not steps, so the lr stays constant after warm-up.
        cfg = PretrainConfig(data=str(plan.out / "mlm_data"), tokenizer=str(tok_dir), out=str(plan.out / "pretrain"),
                             preset="tiny", seq_len=64, batch_size=32, max_steps=100000,
                             max_minutes=plan.pretrain_minutes, schedule="constant", warmup=100, lr=1e-3,
                             eval_every=50, save_every=1000, progress=True)
        summary = pretrain(cfg)
        scratch = plan.out / "scratch"
        torch.manual_seed(0)
        save(build_model(cfg, Tokenizer.from_pretrained(tok_dir)), scratch)
        copy_tokenizer(tok_dir, scratch)
        if summary["eval"]:
            print(f"pretrained {summary['steps']} steps; held-out MLM loss {summary['eval']['eval_loss']:.3f}")
    scratch_hp = {"lr": 2e-3, "embeddings": "dense", "epochs_scale": 3.0}
    return [("pretrained", summary["final"], scratch_hp),
            ("pretrained + LoRA", summary["final"], {**scratch_hp, "lr": 3e-3, "peft": "lora"}),
            ("no pretraining", str(scratch), scratch_hp)]


def _finetune_english(model_dir: str, train_tsv: Path, dev_tsv: Path, out: Path, plan: DemoPlan, hp: dict) -> None:
    from .finetune import FinetuneConfig, finetune

    hp = dict(hp)
    epochs = plan.finetune_epochs * hp.pop("epochs_scale")
    cfg = FinetuneConfig(model=model_dir, task="classify", train=str(train_tsv), dev=str(dev_tsv), out=str(out),
                         epochs=epochs, batch_size=16, max_length=64, warmup=0.1, progress=False, seed=0, **hp)
    finetune(cfg)


def _evaluate(ft_out: Path, tests: dict[str, Path]) -> dict[str, dict]:
    from .finetune import evaluate_model

    return evaluate_model(str(ft_out / "best"), [f"{l}={p}" for l, p in tests.items()], str(ft_out / "eval"))


def _majority(tests: dict[str, Path]) -> dict[str, float]:
    """Per language, the accuracy of always answering its most frequent label: the bar to beat."""
    out = {}
    for lang, path in tests.items():
        with open(path, encoding="utf-8", newline="") as f:
            labels = [r[1] for r in list(csv.reader(f, delimiter="\t"))[1:]]
        out[lang] = Counter(labels).most_common(1)[0][1] / len(labels)
    return out


def _english_report(report_md: Path) -> str:
    """The English section's per-class report, as evaluate wrote it in report.md."""
    text = report_md.read_text(encoding="utf-8")
    start = text.find("english")
    return text[start:].split("\n## ")[0].strip() if start >= 0 else text.strip()


def _zero_shot_table(rows: dict[str, dict[str, dict]], langs: list[str], majority: dict[str, float]) -> str:
    """Markdown: one row per language, one column per run (accuracy) and the majority-class
    accuracy beside them, plus the zero-shot average over the languages other than English."""
    names = list(rows)
    head = ("| language | " + " | ".join(names) + " | majority class |\n|---|" + "---:|" * (len(names) + 1))
    lines = [head]
    for lang in langs:
        lines.append(f"| {lang} | " + " | ".join(f"{rows[n][lang]['accuracy']:.3f}" for n in names)
                     + f" | {majority[lang]:.3f} |")
    zero = [l for l in langs if l != "english"]
    avg = [sum(rows[n][l]["accuracy"] for l in zero) / max(len(zero), 1) for n in names]
    bar = sum(majority[l] for l in zero) / max(len(zero), 1)
    lines.append("| **zero-shot average** | " + " | ".join(f"**{a:.3f}**" for a in avg) + f" | {bar:.3f} |")
    return "\n".join(lines)


def _predict_examples(model: Path, out: Path, tests: dict[str, Path]) -> None:
    """Predict two test sentences of every language (many scripts) with the fine-tuned model."""
    from .predict import Predictor

    predictor = Predictor(str(model))
    sample = []
    for lang, path in tests.items():
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))[1:3]
        sample += [(lang, r[0], r[1]) for r in rows]
    inputs = out / "predict_input.txt"
    inputs.write_text("\n".join(t for _, t, _ in sample) + "\n", encoding="utf-8")
    results = predictor([t for _, t, _ in sample])
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for (lang, text, gold), r in zip(sample, results):
            f.write(json.dumps({"lang": lang, **r, "gold": gold}, ensure_ascii=False) + "\n")
            mark = "ok" if r["label"] == gold else "  "
            print(f"  {mark} [{lang}] {text[:48]!r:52} -> {r['label']:<12} (gold {gold})")
    print(f"(the same from the shell: xlmr predict --model {model} --input {inputs} "
          f"--output {out}/predictions.jsonl)", file=sys.stderr)
