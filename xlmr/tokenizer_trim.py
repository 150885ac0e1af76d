"""Trim a tokenizer and its model to the pieces a corpus uses.

Kept: every piece the tokenizer produces on the corpus, the special tokens, and every single-character
piece (also "▁c" and "##c") for the characters the corpus contains, so unseen words still split into
characters. Ids keep their relative order. The model's word-embedding rows and MLM decoder/bias are cut
to the kept ids. A text whose pieces are all kept encodes to the same pieces and gives the same outputs;
a dropped piece can no longer be produced: Unigram picks the best path over the kept pieces (falling back
to characters, then <unk>), WordPiece turns a word it cannot cover into [UNK].
"""

from __future__ import annotations

import dataclasses
import json

from .errors import XlmrError
from .io import count_parameters
from .tokenizer import Tokenizer, as_batch

# Parameters whose first dimension is the vocabulary (the decoder weight is tied to word_embeddings).
VOCAB_ROWS = ("embeddings.word_embeddings.weight", "decoder.weight", "decoder.bias", "lm_head.bias",
              "predictions.bias")


def used_ids(tok: Tokenizer, texts: list[str], batch_size: int = 4096) -> set[int]:
    """Ids the tokenizer produces on `texts` (a str is one text; no special tokens, no truncation)."""
    texts, _ = as_batch(texts)
    ids: set[int] = set()
    for i in range(0, len(texts), batch_size):
        for e in tok.backend.encode_batch(texts[i:i + batch_size], add_special_tokens=False):
            ids.update(e.ids)
    return ids


def kept_ids(tok: Tokenizer, texts: list[str]) -> list[int]:
    """Sorted ids to keep for `texts` (a str is one text): used pieces, special tokens, single-character
    pieces seen."""
    texts, _ = as_batch(texts)
    keep = used_ids(tok, texts)
    keep.update(tok.all_special_ids)
    keep.update(i for i, t in tok.backend.get_added_tokens_decoder().items() if t.special)
    chars = set().union(*map(set, texts)) if texts else set()
    if tok.backend.normalizer is not None:  # what the model sees: NFKC, lower-casing...
        chars |= set(tok.backend.normalizer.normalize_str(" ".join(sorted(chars))))
    chars.discard(" ")
    for c in chars:
        for piece in (c, "▁" + c, "##" + c):
            i = tok.backend.token_to_id(piece)
            if i is not None:
                keep.add(i)
    return sorted(keep)


def trim_tokenizer(tok: Tokenizer, keep: list[int]) -> Tokenizer:
    """A tokenizer over the `keep` ids only (renumbered 0..len-1 in the same order)."""
    from tokenizers import Tokenizer as Backend

    new_id = {old: new for new, old in enumerate(keep)}
    spec = json.loads(tok.backend.to_str())
    model = spec["model"]
    if model["type"] == "Unigram":
        model["vocab"] = [model["vocab"][i] for i in keep]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    elif model["type"] == "WordPiece":
        old_tokens = {i: t for t, i in model["vocab"].items()}
        model["vocab"] = {old_tokens[i]: new_id[i] for i in keep}
    else:
        raise XlmrError(f"trimming supports Unigram (XLM-R) and WordPiece (BERT) tokenizers, not {model['type']}")
    spec["added_tokens"] = [dict(t, id=new_id[t["id"]]) for t in spec.get("added_tokens", []) if t["id"] in new_id]
    spec["post_processor"] = _renumber_processor(spec.get("post_processor"), new_id)
    backend = Backend.from_str(json.dumps(spec))
    return Tokenizer(backend, config=tok.config, **tok.special_tokens)


def _renumber_processor(proc: dict | None, new_id: dict[int, int]) -> dict | None:
    """Post-processors name special tokens by id: map them to the new ids."""
    if proc is None:
        return None
    kind = proc["type"]
    if kind == "TemplateProcessing":
        for special in proc["special_tokens"].values():
            special["ids"] = [new_id[i] for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        proc["sep"] = [proc["sep"][0], new_id[proc["sep"][1]]]
        proc["cls"] = [proc["cls"][0], new_id[proc["cls"][1]]]
    elif kind == "Sequence":
        proc["processors"] = [_renumber_processor(p, new_id) for p in proc["processors"]]
    elif kind != "ByteLevel":
        raise XlmrError(f"cannot trim a tokenizer with post-processor {kind}")
    return proc


def trim_model(model, keep: list[int]):
    """A copy of `model` whose vocabulary-sized tensors hold only the `keep` rows (same head)."""
    import torch

    from .model import Model

    c = model.config
    if max(keep) >= c.vocab_size:
        raise XlmrError(f"tokenizer id {max(keep)} is outside the model's vocabulary of {c.vocab_size}")
    new_id = {old: new for new, old in enumerate(keep)}

    def remap(i):
        if i is None or i not in new_id:
            return None
        return new_id[i]

    config = dataclasses.replace(c, vocab_size=len(keep), id2label=dict(c.id2label),
                                 pad_token_id=remap(c.pad_token_id), bos_token_id=remap(c.bos_token_id),
                                 eos_token_id=remap(c.eos_token_id))
    if config.pad_token_id is None:
        raise XlmrError(f"the model's pad id {c.pad_token_id} is not a token the tokenizer keeps")
    if config.family == "roberta" and config.pad_token_id != c.pad_token_id:
        # RoBERTa positions start at pad_token_id + 1: a moved pad id would shift every position.
        raise XlmrError(f"trimming would move the pad id from {c.pad_token_id} to {config.pad_token_id}")
    index = torch.tensor(keep, dtype=torch.long)
    state = {k: (v.index_select(0, index) if k.endswith(VOCAB_ROWS) else v) for k, v in model.state_dict().items()}
    out = Model(config, model.head)
    out.load_state_dict(state, strict=True)
    out.tie_weights()
    return out.eval()


def parameter_counts(model) -> dict[str, int]:
    """Unique parameters: total and the word-embedding matrix."""
    return {"vocab": model.config.vocab_size, "embedding": model.encoder_model.embeddings.word_embeddings.weight.numel(),
            "total": count_parameters(model).total}


def trim(model_dir, corpus_dir, out) -> dict:
    """Trim the checkpoint in `model_dir` (weights + tokenizer) to `corpus_dir`; save to `out`.

    Returns the before/after counts: vocab, embedding and total parameters.
    """
    from . import load, save
    from .tokenizer_train import read_corpus

    tok = Tokenizer.from_pretrained(model_dir)
    model = load(model_dir)
    if tok.vocab_size > model.config.vocab_size:
        raise XlmrError(f"{model_dir}: tokenizer has {tok.vocab_size} ids but the model only {model.config.vocab_size}")
    texts = [line for lines in read_corpus(corpus_dir).values() for line in lines]
    keep = kept_ids(tok, texts)
    small_tok = trim_tokenizer(tok, keep)
    small = trim_model(model, keep)
    save(small, out)
    small_tok.save(out)
    return {"before": parameter_counts(model), "after": parameter_counts(small), "tokenizer_before": tok.vocab_size,
            "tokenizer_after": small_tok.vocab_size}
