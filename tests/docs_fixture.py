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


def _squad(path: Path, n: int, rng: random.Random) -> None:
    """A SQuAD v1.1 file: n paragraphs, each with two questions whose answers are names in the context."""
    import json

    paragraphs = []
    for _ in range(n):
        kind = rng.choice(list(NAMES))
        name = rng.choice(NAMES[kind])
        before = " ".join(_word(rng) for _ in range(rng.randint(3, 12)))
        context = f"{before} {name} {' '.join(_word(rng) for _ in range(rng.randint(3, 12)))}."
        qas = [{"id": f"{path.parent.name}-{len(paragraphs)}-{k}", "question": f"{q} {_word(rng)}?",
                "answers": [{"text": name, "answer_start": len(before) + 1}]} for k, q in enumerate(("who", "which"))]
        paragraphs.append({"context": context, "qas": qas})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}), encoding="utf-8")


RELATIONS = ["per:employee_of(e1,e2)", "per:employee_of(e2,e1)", "org:city_of_headquarters(e1,e2)", "no_relation"]


def _relations(data: Path, rng: random.Random) -> None:
    """kbp37/{train,dev,test}.txt and relx/RELX_{en,de,es,fr}.txt in the KBP37 block format."""
    def block(i: int) -> str:
        label = RELATIONS[i % len(RELATIONS)]
        words = " ".join(_word(rng) for _ in range(rng.randint(2, 5)))
        per, org = rng.choice(NAMES["PER"]), rng.choice(NAMES["ORG"])
        return f'{i}\t"<e1> {per} </e1> {words} <e2> {org} </e2> ."\n{label}\n\n\n'

    (data / "kbp37").mkdir(parents=True)
    (data / "relx").mkdir(parents=True)
    for name, n in (("kbp37/train", 48), ("kbp37/dev", 12), ("kbp37/test", 12), *((f"relx/RELX_{x}", 12) for x in
                                                                                  ("en", "de", "es", "fr"))):
        (data / f"{name}.txt").write_text("".join(block(i) for i in range(n)), encoding="utf-8")


def make_shared(root: Path, seed: int = 0) -> Path:
    """Write the fake tree under `root` (data/wikiann, data/sib200, data/masakhaner2, data/xquad, data/kbp37,
    data/relx, data/tatoeba, corpus)."""
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
    for lang in ("deu", "fra"):  # Tatoeba-style parallel files: line i of one translates line i of the other
        d = root / "data" / "tatoeba" / lang
        d.mkdir(parents=True)
        eng = [" ".join(_word(rng) for _ in range(5)) for _ in range(30)]
        (d / f"{lang}-eng.eng").write_text("\n".join(eng) + "\n", encoding="utf-8")
        (d / f"{lang}-eng.{lang}").write_text("\n".join(f"{lang[:2]} {e}" for e in eng) + "\n", encoding="utf-8")
    qa_rng = random.Random(seed + 1)  # its own stream: the files above and below stay as they were
    for lang in ("en", "de", "zh"):
        d = root / "data" / "xquad" / lang
        d.mkdir(parents=True)
        for split, n in (("train", 6), ("test", 2)):
            _squad(d / f"{split}.json", n, qa_rng)
    _relations(root / "data", random.Random(seed + 37))  # its own generator: the other files stay as they were
    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    for name in ("eng_Latn", "deu_Latn", "fra_Latn", "debian_deu_Latn", "swh_Latn", "yor_Latn", "nld_Latn",
                 "hau_Latn", "ibo_Latn", "kin_Latn"):
        lines = [" ".join(_word(rng) for _ in range(rng.randint(4, 12))) for _ in range(300)]
        (corpus / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
