"""Build `tokenizers` backends from the slow-tokenizer files: XLM-R's SentencePiece model and BERT's vocab.txt.

Both become ordinary `tokenizers.Tokenizer` objects, so encoding always takes the Rust batch path and the
result saves as a `tokenizer.json` that `transformers` loads as is.
"""

from __future__ import annotations

from pathlib import Path

from .errors import XlmrError

# fairseq's dictionary puts these four first, then SentencePiece's normal pieces shifted by one, then <mask>.
XLMR_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
XLMR_MASK = "<mask>"
XLMR_UNK_ID = 3
SPM_UNIGRAM = 1  # TrainerSpec.model_type


def read_sentencepiece(data: bytes, source: str):
    """Parse a SentencePiece ModelProto; one XlmrError line if it is not one."""
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
    except Exception as e:  # protobuf missing or too old for sentencepiece's generated code
        raise XlmrError(f"{source}: reading SentencePiece models needs the 'protobuf' package "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception:
        proto = None
    if proto is None or not proto.pieces:
        raise XlmrError(f"{source}: not a valid SentencePiece model (cannot parse {len(data)} bytes)")
    return proto


def split_like_sentencepiece(backend) -> None:
    """SentencePiece never makes a piece across whitespace and drops it at the ends: split there, then
    prefix each word with "▁" (as transformers' XLM-R tokenizer does)."""
    from tokenizers import decoders, pre_tokenizers

    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")


def xlmr_backend_from_sentencepiece(path: Path):
    """A Unigram backend with fairseq's ids: <s>=0 <pad>=1 </s>=2 <unk>=3, piece i -> i+1, <mask> last."""
    from tokenizers import AddedToken, Tokenizer, normalizers, processors
    from tokenizers.models import Unigram

    data = _read_bytes(path)
    proto = read_sentencepiece(data, str(path))
    spec = proto.trainer_spec
    if spec.model_type != SPM_UNIGRAM:
        raise XlmrError(f"{path}: SentencePiece model type {spec.model_type} is not unigram (1), "
                        f"as XLM-R's is")
    if (spec.unk_id, spec.bos_id, spec.eos_id) != (0, 1, 2) or len(proto.pieces) < 4:
        raise XlmrError(f"{path}: not laid out as XLM-R's model (<unk>, <s>, </s> at ids 0, 1, 2; got "
                        f"{spec.unk_id}, {spec.bos_id}, {spec.eos_id})")
    vocab = [(t, 0.0) for t in XLMR_SPECIALS]
    vocab += [(p.piece, p.score) for p in proto.pieces[3:]]
    vocab.append((XLMR_MASK, 0.0))
    backend = Tokenizer(Unigram(vocab, unk_id=XLMR_UNK_ID, byte_fallback=False))
    charsmap = proto.normalizer_spec.precompiled_charsmap
    if charsmap:  # SentencePiece's own normalisation table (e.g. nmt_nfkc), applied byte for byte
        backend.normalizer = normalizers.Precompiled(charsmap)
    split_like_sentencepiece(backend)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (*XLMR_SPECIALS, XLMR_MASK)])
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return backend, data


def bert_backend_from_vocab(path: Path, config: dict):
    """A WordPiece backend from BERT's vocab.txt (one token per line, id = line number)."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise XlmrError(f"{path}: not UTF-8 at byte {e.start} ({e.reason})") from None
    vocab: dict[str, int] = {}
    for i, token in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")):
        vocab[token.rstrip("\r")] = i  # a repeated line keeps its last id, as transformers' load_vocab does
    tokens = {role: config.get(role, default) for role, default in
              (("unk_token", "[UNK]"), ("sep_token", "[SEP]"), ("pad_token", "[PAD]"), ("cls_token", "[CLS]"),
               ("mask_token", "[MASK]"))}
    tokens = {k: (v.get("content") if isinstance(v, dict) else v) for k, v in tokens.items()}
    for role in ("unk_token", "sep_token", "cls_token", "pad_token"):
        if tokens[role] not in vocab:
            raise XlmrError(f"{path}: no {role} {tokens[role]!r} in the vocabulary")
    backend = Tokenizer(WordPiece(vocab, unk_token=tokens["unk_token"], max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
        strip_accents=config.get("strip_accents"), lowercase=bool(config.get("do_lower_case", True)))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    specials = [t for t in tokens.values() if t in vocab]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    cls, sep = tokens["cls_token"], tokens["sep_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    return backend


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise XlmrError(f"{path}: cannot read ({e.strerror})") from None
