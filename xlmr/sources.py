"""Raw-text sources: which `*.txt` files a corpus directory holds and which language each one is.

One rule serves `data prepare`, `tokenizer train` and TLM's parallel files: the language is the
FLORES-200 code that ends the file name (`eng_Latn.txt` is `eng_Latn`); anything before it names
another source of the same language (`debian_eng_Latn.txt`, `wiki_eng_Latn.txt` are `eng_Latn`).
A name without a FLORES code is its own language, whole (`en.txt` is `en`, `debian_en.txt` is
`debian_en`): without a code there is no telling a source prefix from part of a name.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import XlmrError

FLORES = re.compile(r"(?:.+_)?([a-z]{2,3}_[A-Z][a-z]{3})$")


def language_of(path: Path) -> str:
    """`debian_deu_Latn.txt` -> `deu_Latn`; a name without a FLORES code is its own language."""
    m = FLORES.match(path.stem)
    return m.group(1) if m else path.stem


def find_sources(corpus: Path) -> list[Path]:
    """The `*.txt` files of a corpus directory, checked for emptiness."""
    if not corpus.is_dir():
        raise XlmrError(f"{corpus}: not a directory")
    files = sorted(p for p in corpus.glob("*.txt") if p.is_file())
    if not files:
        raise XlmrError(f"{corpus}: no *.txt files (one document per line, named like eng_Latn.txt)")
    for p in files:
        if p.stat().st_size == 0:
            raise XlmrError(f"{p}: empty file")
    return files
