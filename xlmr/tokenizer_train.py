"""Train an XLM-R-style SentencePiece unigram tokenizer on a directory of per-language text files.

Languages are sampled as in XLM-R: language i gets probability q_i = p_i^alpha / sum_j p_j^alpha, where
p_i is its share of the corpus characters. Low-resource languages are thus up-sampled (their lines
repeat) and the big ones down-sampled, within a fixed character budget. SentencePiece trains on that
sample; the result is written as XLM-R's files (sentencepiece.bpe.model + tokenizer.json + configs).
"""

from __future__ import annotations

import io
import random
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import XlmrError
from .io import atomic_write_bytes
from .sources import language_of
from .tokenizer import SENTENCEPIECE_FILE, Tokenizer


@dataclass
class Language:
    """One language of the corpus, its size and its sampling probability."""

    name: str
    files: list[str]
    lines: int
    chars: int
    share: float = 0.0  # of all corpus characters
    prob: float = 0.0  # sampling probability, share^alpha normalised


def read_text_file(file: Path) -> list[str]:
    """Non-empty lines of a UTF-8 file; a byte that is not UTF-8 is an error naming file, byte and line."""
    try:
        data = file.read_bytes()
    except OSError as e:
        raise XlmrError(f"{file}: cannot read ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise XlmrError(f"{file}: not UTF-8 at byte offset {e.start} (line {line}): {e.reason}") from None
    text = text.removeprefix("\ufeff")
    return [s for s in (line.strip() for line in text.split("\n")) if s]


def read_corpus(directory: str | Path) -> dict[str, list[str]]:
    """language -> lines, from every *.txt file in `directory` (languages by `xlmr.sources.language_of`)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise XlmrError(f"{directory}: no such corpus directory")
    files = sorted(directory.glob("*.txt"))
    if not files:
        raise XlmrError(f"{directory}: corpus directory has no .txt files (one file per language, e.g. eng_Latn.txt)")
    corpus: dict[str, list[str]] = {}
    for f in files:
        corpus.setdefault(language_of(f), []).extend(read_text_file(f))
    corpus = {lang: lines for lang, lines in corpus.items() if lines}
    if not corpus:
        raise XlmrError(f"{directory}: all {len(files)} .txt files are empty")
    return corpus


def sampling_table(corpus: dict[str, list[str]], alpha: float, files: dict[str, list[str]] | None = None
                   ) -> list[Language]:
    """Per-language lines, characters, share of characters and sampling probability ∝ share^alpha."""
    if not 0 <= alpha <= 1:
        raise XlmrError(f"--alpha must be in [0, 1], got {alpha}")
    table = [Language(lang, (files or {}).get(lang, []), len(lines), sum(map(len, lines)))
             for lang, lines in corpus.items()]
    total = sum(t.chars for t in table)
    for t in table:
        t.share = t.chars / total
    norm = sum(t.share ** alpha for t in table)
    for t in table:
        t.prob = t.share ** alpha / norm
    return sorted(table, key=lambda t: -t.chars)


def sample_lines(corpus: dict[str, list[str]], table: list[Language], budget_chars: int, seed: int = 0
                 ) -> list[str]:
    """About prob_i * budget_chars characters of each language: whole copies of its lines, then a random
    subset of them (so small languages repeat and large ones are cut), shuffled together."""
    rng = random.Random(seed)
    out: list[str] = []
    for t in table:
        lines = corpus[t.name]
        want = max(1, round(t.prob * budget_chars / (t.chars / t.lines)))  # lines needed for its char budget
        copies, rest = divmod(want, len(lines))
        out.extend(lines * copies)
        out.extend(rng.sample(lines, rest))
    rng.shuffle(out)
    return out


def train_sentencepiece(lines: list[str], vocab_size: int, character_coverage: float = 0.9995,
                        threads: int = 2, max_sentence_length: int = 8192, source: str = "corpus") -> bytes:
    """A unigram SentencePiece model (bytes) with XLM-R's layout: <unk>=0, <s>=1, </s>=2, nmt_nfkc."""
    import sentencepiece as spm

    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=writer, model_type="unigram", vocab_size=vocab_size,
            character_coverage=character_coverage, normalization_rule_name="nmt_nfkc",
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=threads, max_sentence_length=max_sentence_length,
            input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2)
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        most = re.search(r"value <= (\d+)", msg)
        if most:
            raise XlmrError(f"{source}: --vocab-size {vocab_size} is larger than this corpus supports "
                            f"(at most {most.group(1)} pieces)") from None
        few = re.search(r"smaller than required_chars\. \d+ vs (\d+)", msg)
        if few:
            raise XlmrError(f"{source}: --vocab-size {vocab_size} is smaller than the {few.group(1)} characters "
                            f"this corpus needs (raise it, or lower --character-coverage)") from None
        raise XlmrError(f"{source}: SentencePiece training failed ({msg[:300]})") from None
    return writer.getvalue()


def train(corpus_dir: str | Path, out: str | Path, vocab_size: int = 32000, alpha: float = 0.3,
          sample_chars: int = 20_000_000, character_coverage: float = 0.9995, threads: int = 2, seed: int = 0,
          corpus: dict[str, list[str]] | None = None) -> tuple[Tokenizer, list[Language]]:
    """Train on `corpus_dir` and write the tokenizer to `out`; returns it and the language table.

    `vocab_size` counts SentencePiece pieces; the model vocabulary is vocab_size + 2 (fairseq's <pad>
    and <mask>), as XLM-R's 250000 pieces make 250002 ids.
    """
    if vocab_size < 8:
        raise XlmrError(f"--vocab-size must be at least 8, got {vocab_size}")
    corpus = corpus if corpus is not None else read_corpus(corpus_dir)
    files: dict[str, list[str]] = {}
    for f in sorted(Path(corpus_dir).glob("*.txt")):
        files.setdefault(language_of(f), []).append(f.name)
    table = sampling_table(corpus, alpha, files)
    lines = sample_lines(corpus, table, sample_chars, seed)
    model = train_sentencepiece(lines, vocab_size, character_coverage, threads, source=str(corpus_dir))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / SENTENCEPIECE_FILE, model)
    tok = Tokenizer.from_pretrained(out / SENTENCEPIECE_FILE)
    tok.save(out)
    return tok, table


@dataclass
class Fertility:
    """How a tokenizer cuts one language: tokens per whitespace word and the share of <unk> tokens."""

    name: str
    lines: int
    words: int
    tokens: int
    unk: int

    @property
    def tokens_per_word(self) -> float:
        return self.tokens / max(self.words, 1)

    @property
    def unk_rate(self) -> float:
        return self.unk / max(self.tokens, 1)


def fertility(tok: Tokenizer, corpus: dict[str, list[str]], max_lines: int = 2000, seed: int = 0) -> list[Fertility]:
    """Per language, on up to `max_lines` random lines: tokens/word and <unk> rate (no special tokens).

    Words are whitespace-separated, so scripts written without spaces (Thai, Japanese, Chinese) show
    high tokens/word by construction.
    """
    import numpy as np

    rng = random.Random(seed)
    out = []
    for lang, lines in corpus.items():
        chosen = lines if len(lines) <= max_lines else rng.sample(lines, max_lines)
        encs = tok.backend.encode_batch(chosen, add_special_tokens=False)
        ids = np.fromiter((i for e in encs for i in e.ids), dtype=np.int64)
        unk = int((ids == tok.unk_token_id).sum()) if tok.unk_token_id is not None else 0
        out.append(Fertility(lang, len(chosen), sum(len(s.split()) for s in chosen), len(ids), unk))
    return out


def format_table(table: list[Language], stats: list[Fertility] | None = None) -> str:
    """The language table as aligned text (markdown-compatible)."""
    by_lang = {s.name: s for s in stats or []}
    head = "| language | lines | chars | share | sampling prob |"
    rule = "|---|---:|---:|---:|---:|"
    if stats:
        head += " tokens/word | <unk> rate |"
        rule += "---:|---:|"
    rows = [head, rule]
    for t in table:
        row = f"| {t.name} | {t.lines:,} | {t.chars:,} | {t.share:.4f} | {t.prob:.4f} |"
        if t.name in by_lang:
            s = by_lang[t.name]
            row += f" {s.tokens_per_word:.2f} | {100 * s.unk_rate:.3f}% |"
        rows.append(row)
    return "\n".join(rows)
