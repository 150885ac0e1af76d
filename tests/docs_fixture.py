"""A tiny fake copy of the project's `shared/` tree (same layout and formats, a few lines per file),
so the commands in the docs run as written, in seconds."""

from __future__ import annotations

import random
from pathlib import Path

# The SIB-200 languages the docs name, and those with a corpus file (pretraining.md pairs them for TLM).
SIB_LANGS = ["eng_Latn", "deu_Latn", "fra_Latn", "zho_Hans", "arb_Arab", "swh_Latn", "yor_Latn"]
SIB_LABELS = ["science/technology", "travel", "politics", "sports", "health", "entertainment", "geography"]
SYLLABLES = ["ka", "to", "ri", "me", "lo", "sa", "nu", "pe", "di", "ga", "fo", "li", "mo", "ze", "ba", "xu"]
NAMES = {"PER": ["Anna Berg", "Karl Otto", "Mia Sol"], "LOC": ["Paris", "Lima", "Oslo Fjord"],
         "ORG": ["Red Cross", "FIFA", "Acme Corp"]}


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3)))


def _conll(path: Path, n: int, rng: random.Random, date: bool = False) -> None:
    sentences = []
    for _ in range(n):
        rows = [(_word(rng), "O") for _ in range(rng.randint(2, 6))]
        kind = rng.choice(list(NAMES) + (["DATE"] if date else []))
        words = (rng.choice(NAMES[kind]) if kind != "DATE" else "12 May").split()
        at = rng.randint(0, len(rows))
        rows[at:at] = [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]
        sentences.append("\n".join(f"{w}\t{t}" for w, t in rows))
    path.write_text("\n\n".join(sentences) + "\n", encoding="utf-8")


def make_shared(root: Path, seed: int = 0) -> Path:
    """Write the fake tree under `root` (data/wikiann, data/sib200, data/masakhaner2, corpus)."""
    rng = random.Random(seed)
    for lang in ("en", "de", "fr", "nl"):
        d = root / "data" / "wikiann" / lang
        d.mkdir(parents=True)
        for split, n in (("train", 60), ("dev", 20), ("test", 20)):
            _conll(d / f"{split}.conll", n, rng)
    for lang in ("hau", "swa", "yor", "ibo", "kin"):
        d = root / "data" / "masakhaner2" / lang
        d.mkdir(parents=True)
        for split, n in (("train", 40), ("dev", 15), ("test", 15)):
            _conll(d / f"{split}.conll", n, rng, date=True)
    topic_words = {label: [_word(rng) for _ in range(4)] for label in SIB_LABELS}
    for lang in SIB_LANGS:
        d = root / "data" / "sib200" / lang
        d.mkdir(parents=True)
        (d / "labels.txt").write_text("\n".join(SIB_LABELS) + "\n", encoding="utf-8")
        idx = 0
        for split, n in (("train", 42), ("dev", 14), ("test", 14)):
            lines = ["index_id\tcategory\ttext"]
            for i in range(n):
                label = SIB_LABELS[i % len(SIB_LABELS)]
                text = " ".join([rng.choice(topic_words[label]), *(_word(rng) for _ in range(5)), lang[:3]])
                lines.append(f"{idx}\t{label}\t{text}")
                idx += 1
            (d / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    for name in ("eng_Latn", "deu_Latn", "fra_Latn", "debian_deu_Latn", "swh_Latn", "yor_Latn", "nld_Latn",
                 "hau_Latn", "ibo_Latn", "kin_Latn"):
        lines = [" ".join(_word(rng) for _ in range(rng.randint(4, 12))) for _ in range(300)]
        (corpus / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
