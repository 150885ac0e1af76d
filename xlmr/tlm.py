"""TLM (XLM's translation language modelling) data: aligned parallel files become sentence-pair sources.

A parallel directory holds one UTF-8 `<lang>.txt` per language, line i of every file being the same
sentence (FLORES-style). `stage_pairs` writes, for each language pair, `<out>/<a>-<b>.txt` with one
`sentence_a<TAB>sentence_b` line per aligned sentence (the order alternates line by line, so each
side comes first half of the time). `xlmr data prepare --parallel DIR` tokenizes those lines as
pairs, `<s> a </s></s> b </s>` (`[CLS] a [SEP] b [SEP]` for WordPiece), and each pair is one more
"language" in the manifest, so alpha-sampling mixes pair sequences with the monolingual ones and
the masked-token loss on a pair can read the translation. Positions are not reset at the second
sentence and there are no language embeddings (XLM-R has none): a pair is packed like a document.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from .errors import XlmrError
from .io import atomic_write_text
from .sources import find_sources, language_of


def read_aligned(parallel: Path) -> dict[str, tuple[Path, list[str]]]:
    """{language: (file, lines)} of a parallel directory, checked to align line by line."""
    texts: dict[str, tuple[Path, list[str]]] = {}
    for path in find_sources(parallel):
        lang = language_of(path)
        if lang in texts:
            raise XlmrError(f"{path}: a second parallel file for {lang} (after {texts[lang][0].name})")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise XlmrError(f"{path}: byte {e.start}: not valid UTF-8 ({e.reason})") from None
        for i, line in enumerate(lines, 1):
            if "\t" in line:
                raise XlmrError(f"{path}: line {i}: contains a TAB; parallel lines must not")
        texts[lang] = (path, lines)
    if len(texts) < 2:
        raise XlmrError(f"{parallel}: TLM needs aligned files in at least two languages, found {len(texts)}")
    p0, l0 = next(iter(texts.values()))
    for path, lines in texts.values():
        if len(lines) != len(l0):
            raise XlmrError(f"{path}: {len(lines)} lines, but {p0.name} has {len(l0)}; parallel files must "
                            f"align line by line")
    return texts


def stage_pairs(parallel, out, pivot: str | None = None) -> list[Path]:
    """Write one `<a>-<b>.txt` pair file per language pair (only pairs with `pivot` if given) into
    `out`; return their paths. A file whose content is unchanged is not rewritten, so a re-run of
    `data prepare` still skips its finished shards."""
    texts = read_aligned(Path(parallel))
    langs = sorted(texts)
    if pivot and pivot not in texts:
        raise XlmrError(f"{parallel}: no file for the TLM pivot {pivot} (languages: {', '.join(langs)})")
    pairs = [(pivot, b) for b in langs if b != pivot] if pivot else list(itertools.combinations(langs, 2))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staged = []
    for a, b in pairs:
        rows = [(x, y) if i % 2 == 0 else (y, x)
                for i, (x, y) in enumerate(zip(texts[a][1], texts[b][1])) if x.strip() and y.strip()]
        body = "".join(f"{x}\t{y}\n" for x, y in rows)
        path = out / f"{a}-{b}.txt"
        if not (path.is_file() and path.read_text(encoding="utf-8") == body):
            atomic_write_text(path, body)
        staged.append(path)
    return staged
