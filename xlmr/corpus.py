"""`xlmr data prepare`: tokenize per-language text files into sharded, memory-mapped token files.

Input: a directory of UTF-8 `*.txt` files, one document per line. The language is the FLORES code
at the end of the file name (`eng_Latn.txt`); a prefix names a second source of the same language
(`debian_eng_Latn.txt` is more `eng_Latn`). Other names are their own language (`en.txt` -> `en`).

Output layout:
  manifest.json                   languages, counts, shards, dtype, tokenizer sha256 (written last)
  plan.json                       the shard plan (byte ranges), reused by a re-run on unchanged inputs
  <lang>/<source>.<k:05d>.bin     tokens of shard k of one source file, raw uint16 (uint32 if vocab > 65535)
  <lang>/<source>.<k:05d>.idx     int64 document offsets, shape (docs + 1,): doc i is bin[idx[i]:idx[i+1]]
  <lang>/<source>.<k:05d>.json    shard record, written after .bin/.idx: its presence means "finished"

Every document is stored exactly as the tokenizer encodes it, with its special tokens
(`<s> ... </s>` for XLM-R, `[CLS] ... [SEP]` for BERT), so packing is a plain slice of the stream.
Held-out documents are those whose line hashes (crc32) under `valid_fraction`: the split is stable,
needs no second pass, and exact duplicates never straddle it. In each shard the training documents
come first, the held-out ones after; `train_docs` / `train_tokens` mark the split.

A shard is a byte range of one source file, cut at line ends, sized to hold about `shard_tokens`
tokens (bytes per token estimated on the first 64 KiB). Workers stream their range in batches of
lines and append to the shard files, so memory does not grow with the corpus.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import XlmrError
from .io import atomic_write_text
from .rundir import run_directory
from .sources import find_sources, language_of

FORMAT = 1


@dataclass(frozen=True)
class ShardPlan:
    """One unit of work: bytes [start, end) of `source`, written to `<out>/<name>.{bin,idx,json}`."""

    lang: str
    name: str
    source: str
    start: int
    end: int
    source_size: int
    source_mtime_ns: int
    pairs: bool = False  # lines are `a<TAB>b` sentence pairs (TLM, see xlmr.tlm)


def sampling_probs(tokens, alpha: float) -> np.ndarray:
    """XLM-R language sampling: p_i proportional to share_i ** alpha, shares from token counts."""
    n = np.asarray(tokens, dtype=np.float64)
    if n.sum() <= 0:
        return np.zeros_like(n)
    q = (n / n.sum()) ** alpha
    q[n == 0] = 0.0
    return q / q.sum()


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 65535 else np.uint32


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_tokenizer(data_dir: Path, manifest: dict, tokenizer: str | os.PathLike, fix: str) -> str:
    """The sha256 of `tokenizer`'s tokenizer.json; raises unless it is the one the manifest of the
    prepared `data_dir` names (a manifest without one, i.e. a fresh directory, accepts any). `fix`
    ends the error: what the user can do about it."""
    path = Path(tokenizer)
    tok_file = path if path.is_file() else path / "tokenizer.json"
    if not tok_file.is_file():
        raise XlmrError(f"{path}: no tokenizer.json (preparing data and pretraining read that file)")
    sha = file_sha256(tok_file)
    want = manifest.get("tokenizer_sha256")
    if want is not None and want != sha:
        raise XlmrError(f"{Path(data_dir) / 'manifest.json'}: prepared with another tokenizer (sha256 "
                        f"{str(want)[:12]}, --tokenizer {tok_file} has {sha[:12]}); {fix}")
    return sha



# ---------------------------------------------------------------------------------------------------
# Planning


def bytes_per_token(backend, path: Path, sample: int = 1 << 16) -> float:
    """Average input bytes per stored token on the first `sample` bytes (one encode per line: the
    parent must not start the Rust thread pool before forking workers)."""
    with open(path, "rb") as f:
        data = f.read(sample)
    lines = data.split(b"\n")
    if len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut
    n_bytes = sum(len(x) + 1 for x in lines)
    n_tokens = sum(len(backend.encode(x.decode("utf-8", "replace")).ids) for x in lines if x.strip())
    return max(1.0, n_bytes / max(n_tokens, 1))


def line_cuts(path: Path, size: int, step: int) -> list[int]:
    """Byte offsets [0, ..., size] cutting the file at line ends about every `step` bytes."""
    cuts = [0]
    with open(path, "rb") as f:
        pos = step
        while pos < size:
            f.seek(pos)
            f.readline()
            cut = f.tell()
            if cut >= size:
                break
            cuts.append(cut)
            pos = cut + step
    cuts.append(size)
    return cuts


def plan_shards(files: list[Path], backend, shard_tokens: int, pair_files=()) -> list[ShardPlan]:
    """Deterministic shard plan (same files, tokenizer and shard size give the same plan)."""
    plans = []
    pair_files = {p.resolve() for p in pair_files}
    for path in files:
        st = path.stat()
        step = max(1, int(shard_tokens * bytes_per_token(backend, path)))
        cuts = line_cuts(path, st.st_size, step)
        lang = language_of(path)
        for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
            plans.append(ShardPlan(lang, f"{lang}/{path.stem}.{k:05d}", str(path.resolve()), a, b, st.st_size,
                                   st.st_mtime_ns, path.resolve() in pair_files))
    return plans


def cached_plan(out: Path, files: list[Path], backend, sha: str, shard_tokens: int, pair_files=()) -> list[ShardPlan]:
    """`plan_shards`, reusing `out/plan.json` when the sources (size, mtime), tokenizer and shard size
    are unchanged: a re-run then starts without tokenizing samples."""
    key = {"tokenizer_sha256": sha, "shard_tokens": shard_tokens,
           "sources": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]}
    plan_file = out / "plan.json"
    try:
        cached = json.loads(plan_file.read_text(encoding="utf-8"))
        if cached["key"] == key:
            return [ShardPlan(**p) for p in cached["shards"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    plans = plan_shards(files, backend, shard_tokens, pair_files)
    atomic_write_text(plan_file, json.dumps({"key": key, "shards": [asdict(p) for p in plans]}) + "\n")
    return plans


# ---------------------------------------------------------------------------------------------------
# Workers

_BACKEND = None  # per worker process: (tokenizer path, tokenizers.Tokenizer)


def _backend(path: str):
    global _BACKEND
    if _BACKEND is None or _BACKEND[0] != path:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(path)
        tok.no_padding()
        tok.no_truncation()
        _BACKEND = (path, tok)
    return _BACKEND[1]


def _worker_init() -> None:
    # Parallelism comes from processes; one Rust thread each avoids oversubscribing the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _line_number(path: str, offset: int) -> int:
    """1-based line of a byte offset (only computed on the error path)."""
    n = 1
    with open(path, "rb") as f:
        done = 0
        while done < offset:
            block = f.read(min(1 << 20, offset - done))
            if not block:
                break
            n += block.count(b"\n")
            done += len(block)
    return n


@dataclass
class _Part:
    """Tokens and document ends of one side (train or held-out) of a shard being written."""

    bin_path: Path
    idx_path: Path
    tokens: int = 0
    docs: int = 0

    def open(self):
        self.fb, self.fi = open(self.bin_path, "wb"), open(self.idx_path, "wb")

    def add(self, ids: list[list[int]], dtype) -> None:
        if not ids:
            return
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))
        self.fb.write(flat.tobytes())
        self.fi.write((np.cumsum(lengths) + self.tokens).tobytes())  # document ends
        self.tokens += int(lengths.sum())
        self.docs += len(ids)

    def close(self):
        self.fb.close()
        self.fi.close()


def encode_shard(job: tuple) -> dict:
    """Tokenize one planned byte range into `<name>.bin/.idx`, then write `<name>.json`; return it."""
    plan, out, tokenizer_file, tokenizer_sha, dtype_name, valid_fraction, batch_lines = job
    backend = _backend(tokenizer_file)
    dtype = np.dtype(dtype_name)
    base = Path(out) / plan.name
    base.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{base}.json").unlink(missing_ok=True)  # an old record must not vouch for files being rewritten
    tmp = f".{os.getpid()}.tmp"
    train = _Part(Path(f"{base}.bin{tmp}"), Path(f"{base}.idx{tmp}"))
    valid = _Part(Path(f"{base}.valid.bin{tmp}"), Path(f"{base}.valid.idx{tmp}"))
    cut = int(valid_fraction * 2 ** 32)  # held out: crc32(line) < cut
    train.open()
    valid.open()
    try:
        texts, held = [], []

        def flush():
            encs = backend.encode_batch(texts, add_special_tokens=True)
            ids = [e.ids for e in encs]
            train.add([x for x, h in zip(ids, held) if not h and x], dtype)
            valid.add([x for x, h in zip(ids, held) if h and x], dtype)
            texts.clear()
            held.clear()

        for text, raw in _documents(plan):
            texts.append(text)
            held.append(zlib.crc32(raw.rstrip(b"\r\n")) < cut)
            if len(texts) >= batch_lines:
                flush()
        if texts:
            flush()
        train.close()
        valid.close()
        _finish(base, train, valid)
    finally:
        train.close()
        valid.close()
        for p in (train.bin_path, train.idx_path, valid.bin_path, valid.idx_path, Path(f"{train.idx_path}.all")):
            p.unlink(missing_ok=True)
    record = {"format": FORMAT, "tokenizer_sha256": tokenizer_sha, "dtype": dtype.name,
              "valid_fraction": valid_fraction, **asdict(plan), "docs": train.docs + valid.docs,
              "tokens": train.tokens + valid.tokens, "train_docs": train.docs, "train_tokens": train.tokens}
    atomic_write_text(Path(f"{base}.json"), json.dumps(record, indent=1) + "\n")
    return record


def _documents(plan):
    """(text, raw line) per non-blank line of the plan's byte range; text is a (first, second) pair for a
    pair file. Bad UTF-8 or a pair line without a TAB is an XlmrError naming the line."""
    with open(plan.source, "rb") as f:
        f.seek(plan.start)
        pos = plan.start
        while pos < plan.end:
            raw = f.readline()
            if not raw:
                break
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                at = pos + e.start
                raise XlmrError(f"{plan.source}: line {_line_number(plan.source, at)}, byte {at}: "
                                f"not valid UTF-8 ({e.reason})") from None
            pos += len(raw)
            text = text.rstrip("\r\n")
            if not text.strip():
                continue  # blank lines separate nothing here: one line is one document
            if plan.pairs:
                a, tab, b = text.partition("\t")
                if not tab:
                    raise XlmrError(f"{plan.source}: line {_line_number(plan.source, pos - len(raw))}: "
                                    f"a pair line needs a TAB between the two sentences")
                yield (a, b), raw
            else:
                yield text, raw


def _finish(base: Path, train: _Part, valid: _Part) -> None:
    """Append the held-out part after the training part and rename into place (.bin, then .idx)."""
    import shutil

    with open(train.bin_path, "ab") as fb, open(valid.bin_path, "rb") as vb:
        shutil.copyfileobj(vb, fb)
    idx_tmp = Path(f"{train.idx_path}.all")
    with open(idx_tmp, "wb") as fo:
        fo.write(np.zeros(1, np.int64).tobytes())
        with open(train.idx_path, "rb") as fi:
            shutil.copyfileobj(fi, fo)
        with open(valid.idx_path, "rb") as fi:
            for block in iter(lambda: fi.read(1 << 20), b""):
                fo.write((np.frombuffer(block, np.int64) + train.tokens).tobytes())
    os.replace(train.bin_path, f"{base}.bin")
    os.replace(idx_tmp, f"{base}.idx")


def finished(plan: ShardPlan, out: Path, tokenizer_sha: str, dtype_name: str, valid_fraction: float) -> dict | None:
    """The shard's record if it was completed with the same inputs and its files are whole, else None.

    A record written with another tokenizer is an error: mixing tokenizations would corrupt the data.
    """
    meta = out / f"{plan.name}.json"
    if not meta.is_file():
        return None
    try:
        rec = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if rec.get("tokenizer_sha256") != tokenizer_sha:
        raise XlmrError(f"{meta}: prepared with another tokenizer (sha256 {str(rec.get('tokenizer_sha256'))[:12]}, "
                        f"now {tokenizer_sha[:12]}); use a new --out directory or delete this one")
    same = (rec.get("format") == FORMAT and rec.get("dtype") == dtype_name
            and rec.get("valid_fraction") == valid_fraction and all(rec.get(k) == v for k, v in asdict(plan).items()))
    if not same:
        return None
    whole = (_size(out / f"{plan.name}.bin") == rec["tokens"] * np.dtype(dtype_name).itemsize
             and _size(out / f"{plan.name}.idx") == (rec["docs"] + 1) * 8)
    return rec if whole else None


def _size(p: Path) -> int:
    return p.stat().st_size if p.is_file() else -1


# ---------------------------------------------------------------------------------------------------
# Driver


def prepare(corpus, tokenizer, out, *, alpha: float = 0.3, workers: int | None = None,
            shard_tokens: int = 1 << 24, valid_fraction: float = 0.01, batch_lines: int = 2048,
            parallel=None, tlm_pivot: str | None = None, log=print) -> dict:
    """Tokenize `corpus/*.txt` with `tokenizer/tokenizer.json` into `out`; return the manifest.
    With `parallel` (a directory of aligned `<lang>.txt` files), sentence pairs are added for TLM,
    one pair language per language pair (only pairs with `tlm_pivot` if given; see xlmr.tlm).

    Finished shards of an earlier run with the same inputs are skipped. Prints a table of languages.
    Holds the lock on `out` while it runs (see xlmr.rundir).
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise XlmrError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    if shard_tokens < 1:
        raise XlmrError(f"shard_tokens must be positive, got {shard_tokens}")
    with run_directory(out):
        return _prepare(Path(corpus), Path(tokenizer), Path(out), alpha, workers, shard_tokens, valid_fraction,
                        batch_lines, parallel, tlm_pivot, log)


def _prepare(corpus: Path, tok_dir: Path, out: Path, alpha, workers, shard_tokens, valid_fraction, batch_lines,
             parallel, tlm_pivot, log) -> dict:
    from .tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(tok_dir)
    tok_file = tok_dir if tok_dir.is_file() else tok_dir / "tokenizer.json"
    manifest_file = out / "manifest.json"
    old = read_manifest(out) if manifest_file.is_file() else {}
    old_languages = list(old.get("languages", {}))
    sha = check_tokenizer(out, old, tok_dir, fix="use a new --out directory or delete this one")
    dtype_name = np.dtype(token_dtype(tok.vocab_size)).name
    files = find_sources(corpus)
    out.mkdir(parents=True, exist_ok=True)
    pair_files = []
    if parallel:
        from .tlm import stage_pairs

        pair_files = stage_pairs(parallel, out / "tlm_pairs", tlm_pivot)
    plans = cached_plan(out, files + pair_files, tok.backend, sha, shard_tokens, pair_files)

    records: dict[str, dict] = {}
    todo = []
    for p in plans:
        rec = finished(p, out, sha, dtype_name, valid_fraction)
        if rec is not None:
            records[p.name] = rec
        else:
            todo.append(p)
    skipped_tokens = sum(r["tokens"] for r in records.values())
    log(f"{len(plans)} shards from {len(files)} files: {len(records)} already finished (skipped, "
        f"{skipped_tokens:,} tokens), {len(todo)} to tokenize")
    jobs = [(p, str(out), str(tok_file.resolve()), sha, dtype_name, valid_fraction, batch_lines) for p in todo]
    for rec in _run(jobs, workers):
        records[rec["name"]] = rec

    manifest = build_manifest(plans, records, tok, sha, dtype_name, alpha, valid_fraction, shard_tokens)
    atomic_write_text(manifest_file, json.dumps(manifest, indent=1) + "\n")
    _remove_stale(out, plans, old_languages)
    log(format_table(manifest, alpha))
    return manifest


def _run(jobs: list[tuple], workers: int | None):
    """Yield shard records as they finish, from worker processes (or in-process for one worker)."""
    from tqdm import tqdm

    workers = min(workers or os.cpu_count() or 1, max(len(jobs), 1))
    bar = tqdm(total=len(jobs), unit="shard", desc="tokenizing", disable=None)
    try:
        if workers <= 1:
            for job in jobs:
                yield encode_shard(job)
                bar.update()
            return
        import multiprocessing as mp

        # fork: workers need only this module and the tokenizer file, not a fresh interpreter.
        with mp.get_context("fork").Pool(workers, initializer=_worker_init) as pool:
            for rec in pool.imap_unordered(encode_shard, jobs):
                yield rec
                bar.update()
    finally:
        bar.close()


def build_manifest(plans, records, tok, sha, dtype_name, alpha, valid_fraction, shard_tokens) -> dict:
    """Per-language counts and shard lists (in plan order), checked for sources with no documents."""
    per_source: dict[str, int] = {}
    languages: dict[str, dict] = {}
    for p in plans:
        r = records[p.name]
        per_source[p.source] = per_source.get(p.source, 0) + r["docs"]
        lang = languages.setdefault(p.lang, {"sources": [], "docs": 0, "tokens": 0, "train_docs": 0,
                                             "train_tokens": 0, "shards": []})
        if p.source not in lang["sources"]:
            lang["sources"].append(p.source)
        for k in ("docs", "tokens", "train_docs", "train_tokens"):
            lang[k] += r[k]
        lang["shards"].append({k: r[k] for k in ("name", "source", "start", "end", "docs", "tokens",
                                                  "train_docs", "train_tokens")})
    for src, docs in per_source.items():
        if docs == 0:
            raise XlmrError(f"{src}: no documents (only blank lines)")
    names = sorted(languages)
    probs = sampling_probs([languages[n]["train_tokens"] for n in names], alpha)
    total = sum(languages[n]["train_tokens"] for n in names)
    for n, p in zip(names, probs):
        languages[n]["share"] = languages[n]["train_tokens"] / max(total, 1)
        languages[n]["prob"] = float(p)
    specials = sorted({t.content: i for i, t in tok.backend.get_added_tokens_decoder().items()
                       if t.special}.items(), key=lambda kv: kv[1])
    return {"format": FORMAT, "tokenizer_sha256": sha, "vocab_size": tok.vocab_size, "dtype": dtype_name,
            "pad_token_id": tok.pad_token_id, "mask_token_id": tok.mask_token_id,
            "special_tokens": dict(specials), "alpha": alpha, "valid_fraction": valid_fraction,
            "shard_tokens": shard_tokens, "languages": {n: languages[n] for n in names}}


def _remove_stale(out: Path, plans: list[ShardPlan], old_languages) -> None:
    """Delete shard files of an earlier plan (changed source or shard size) that the manifest no
    longer lists, in language folders of this plan or of the previous manifest only."""
    keep = {p.name for p in plans}
    pattern = re.compile(r"^(.+\.\d{5})\.(bin|idx|json)$")
    for d in {p.lang for p in plans} | set(old_languages):
        if not (out / d).is_dir():
            continue
        for f in (out / d).glob("*.*"):
            m = pattern.match(f.name)
            if m and f"{d}/{m.group(1)}" not in keep:
                f.unlink()


def read_manifest(out) -> dict:
    """The manifest of a prepared directory, with a clear error if it is missing or unreadable."""
    path = Path(out) / "manifest.json"
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise XlmrError(f"{path}: no such file (run `xlmr data prepare` first)") from None
    except ValueError as e:
        raise XlmrError(f"{path}: not valid JSON ({e})") from None
    if m.get("format") != FORMAT:
        raise XlmrError(f"{path}: unknown format {m.get('format')!r} (expected {FORMAT})")
    return m


def format_table(manifest: dict, alpha: float) -> str:
    """Languages with training docs, tokens, token share and sampling probability at `alpha`."""
    langs = manifest["languages"]
    names = list(langs)
    probs = sampling_probs([langs[n]["train_tokens"] for n in names], alpha)
    w = max([12, *(len(n) + 2 for n in names)])
    head = f"{'language':<{w}}{'docs':>10}{'tokens':>13}{'share':>8}{f'p(a={alpha:g})':>10}{'held-out':>10}"
    rows = [head, "-" * len(head)]
    for n, p in zip(names, probs):
        L = langs[n]
        rows.append(f"{n:<{w}}{L['train_docs']:>10,}{L['train_tokens']:>13,}{100 * L['share']:>7.2f}%"
                    f"{100 * p:>9.2f}%{L['docs'] - L['train_docs']:>10,}")
    docs = sum(L["train_docs"] for L in langs.values())
    toks = sum(L["train_tokens"] for L in langs.values())
    held = sum(L["docs"] - L["train_docs"] for L in langs.values())
    rows += ["-" * len(head), f"{'total':<{w}}{docs:>10,}{toks:>13,}{100:>7.2f}%{100:>9.2f}%{held:>10,}"]
    return "\n".join(rows)
