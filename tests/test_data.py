"""Pretraining data: `data prepare` shards, the packed alpha-sampled stream, and MLM masking."""

import json
import os
import random
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from xlmr.cli import main
from xlmr.corpus import prepare, sampling_probs
from xlmr.errors import XlmrError
from xlmr.mlm_data import (MaskVocab, PackedStream, PreparedCorpus, mask_rows, mask_tokens, validation_set,
                           word_start_table)
from xlmr.sources import language_of
from xlmr.tokenizer import Tokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sentences(seed: int, n: int, alphabet: str) -> list[str]:
    rng = random.Random(seed)
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))) for _ in range(60)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(2, 15))) for _ in range(n)]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """A tiny BERT-style WordPiece tokenizer, trained here ([CLS] doc [SEP] post-processor)."""
    from tokenizers import Tokenizer as Backend, models, normalizers, pre_tokenizers, processors, trainers

    tok = Backend(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(sentences(0, 300, "abcdefgh") + sentences(1, 300, "абвгдежз"),
                            trainers.WordPieceTrainer(vocab_size=120, special_tokens=SPECIALS))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[
        ("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    d = tmp_path_factory.mktemp("tok")
    tok.save(str(d / "tokenizer.json"))
    return d


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    (d / "aaa_Latn.txt").write_text("\n".join(sentences(2, 400, "abcdefgh")) + "\n", encoding="utf-8")
    (d / "web_aaa_Latn.txt").write_text("\n".join(sentences(3, 200, "abcdefgh")) + "\n\n", encoding="utf-8")
    (d / "bbb_Cyrl.txt").write_text("\n".join(sentences(4, 100, "абвгдежз")) + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, corpus_dir, tok_dir):
    out = tmp_path_factory.mktemp("prepared")
    prepare(corpus_dir, tok_dir, out, workers=2, shard_tokens=1500, valid_fraction=0.1, log=lambda s: None)
    return out


# --------------------------------------------------------------------------------------------- sampling

def test_sampling_probs_exact_values():
    p = sampling_probs([900, 100], 0.3)
    a, b = 0.9 ** 0.3, 0.1 ** 0.3
    assert p == pytest.approx([a / (a + b), b / (a + b)], abs=1e-12)
    assert p == pytest.approx([0.659073, 0.340927], abs=1e-6)
    assert sampling_probs([3, 1], 1.0) == pytest.approx([0.75, 0.25])
    assert sampling_probs([3, 1, 0], 0.0) == pytest.approx([0.5, 0.5, 0.0])


def test_language_of_merges_sources():
    from pathlib import Path

    assert language_of(Path("debian_deu_Latn.txt")) == "deu_Latn"
    assert language_of(Path("eng_Latn.txt")) == "eng_Latn"
    assert language_of(Path("en.txt")) == "en"


def test_data_prepare_and_tokenizer_train_name_languages_alike(tmp_path, tok_dir):
    """One rule for both commands: the FLORES code at the end of the name, else the whole stem."""
    from xlmr.tokenizer_train import read_corpus

    names = {"wiki_eng_Latn": "eng_Latn", "debian_en": "debian_en", "eng_Latn": "eng_Latn", "en": "en"}
    for stem, lang in names.items():
        assert language_of(Path(f"{stem}.txt")) == lang
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for stem in ("wiki_eng_Latn", "debian_en"):
        (corpus / f"{stem}.txt").write_text(f"a line of {stem}\n", encoding="utf-8")
    assert sorted(read_corpus(corpus)) == ["debian_en", "eng_Latn"]  # what `tokenizer train` samples
    manifest = prepare(corpus, tok_dir, tmp_path / "data", workers=1, log=lambda s: None)
    assert sorted(manifest["languages"]) == ["debian_en", "eng_Latn"]  # what `data prepare` writes


# --------------------------------------------------------------------------------------------- prepare

def read_docs(out, name, n_docs):
    manifest = json.loads((out / "manifest.json").read_text())
    toks = np.fromfile(out / f"{name}.bin", dtype=manifest["dtype"])
    idx = np.fromfile(out / f"{name}.idx", dtype=np.int64)
    assert len(idx) == n_docs + 1 and idx[-1] == len(toks)
    return [toks[a:b].tolist() for a, b in zip(idx[:-1], idx[1:])]


def test_prepare_round_trip(prepared, corpus_dir, tok_dir):
    m = json.loads((prepared / "manifest.json").read_text())
    assert list(m["languages"]) == ["aaa_Latn", "bbb_Cyrl"] and m["dtype"] == "uint16"
    tok = Tokenizer.from_pretrained(tok_dir)
    for lang, L in m["languages"].items():
        assert abs(sum(x["prob"] for x in m["languages"].values()) - 1) < 1e-12
        for src in L["sources"]:
            shards = [s for s in L["shards"] if s["source"] == src]
            if src.endswith("aaa_Latn.txt") and "web" not in src:
                assert len(shards) > 1  # small shard_tokens forces several shards
            lines = [x for x in open(src, encoding="utf-8").read().split("\n") if x]
            held = [zlib.crc32(x.encode()) < 0.1 * 2 ** 32 for x in lines]
            want = tok.backend.encode_batch(lines, add_special_tokens=True)
            train, valid = [], []
            for s in shards:
                docs = read_docs(prepared, s["name"], s["docs"])
                train += docs[:s["train_docs"]]
                valid += docs[s["train_docs"]:]
            assert train == [w.ids for w, h in zip(want, held) if not h]
            assert valid == [w.ids for w, h in zip(want, held) if h] and valid
    assert m["languages"]["aaa_Latn"]["docs"] == 600  # both sources, blank line skipped


def test_rerun_skips_finished_shards(tmp_path, corpus_dir, tok_dir):
    logs = []
    prepare(corpus_dir, tok_dir, tmp_path, workers=1, shard_tokens=1500, log=logs.append)
    bins = sorted(tmp_path.glob("*/*.bin"))
    mtimes = {p: p.stat().st_mtime_ns for p in bins}
    (tmp_path / "bbb_Cyrl" / "bbb_Cyrl.00000.json").unlink()  # an interrupted shard
    logs.clear()
    prepare(corpus_dir, tok_dir, tmp_path, workers=1, shard_tokens=1500, log=logs.append)
    assert f"{len(bins) - 1} already finished" in logs[0] and "1 to tokenize" in logs[0]
    changed = [p.name for p in bins if p.stat().st_mtime_ns != mtimes[p]]
    assert changed == ["bbb_Cyrl.00000.bin"]
    prepare(corpus_dir, tok_dir, tmp_path, workers=1, shard_tokens=10 ** 6, log=logs.append)  # a new plan
    assert len(list(tmp_path.glob("*/*.bin"))) == 3  # one shard per source; the old shards are gone


def test_tlm_pairs_from_aligned_files(tmp_path, corpus_dir, tok_dir):
    """--parallel: every pivot pair is a language of its own whose documents are the tokenizer's
    pair encodings of aligned lines, in alternating order; misaligned input is refused in one line."""
    par = tmp_path / "parallel"
    par.mkdir()
    text = {"aaa_Latn": sentences(5, 30, "abcdefgh"), "bbb_Cyrl": sentences(6, 30, "абвгдежз"),
            "ccc_Latn": sentences(7, 30, "abcdefgh")}
    for lang, lines in text.items():
        (par / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out, logs = tmp_path / "data", []
    m = prepare(corpus_dir, tok_dir, out, workers=1, valid_fraction=0.0, parallel=par, tlm_pivot="aaa_Latn",
                log=logs.append)
    assert {"aaa_Latn-bbb_Cyrl", "aaa_Latn-ccc_Latn"} <= set(m["languages"])
    assert "bbb_Cyrl-ccc_Latn" not in m["languages"]
    backend = Tokenizer.from_pretrained(tok_dir).backend
    tokens, offsets = PreparedCorpus(out).documents("aaa_Latn-bbb_Cyrl")
    for i in range(30):
        a, b = text["aaa_Latn"][i], text["bbb_Cyrl"][i]
        want = backend.encode(*((a, b) if i % 2 == 0 else (b, a))).ids
        assert tokens[offsets[i]:offsets[i + 1]].tolist() == want
    assert backend.id_to_token(want[0]) == "[CLS]" and [backend.id_to_token(t) for t in want].count("[SEP]") == 2
    logs.clear()
    prepare(corpus_dir, tok_dir, out, workers=1, valid_fraction=0.0, parallel=par, tlm_pivot="aaa_Latn",
            log=logs.append)
    assert "0 to tokenize" in logs[0]  # pair files are not rewritten, so their shards are skipped
    with pytest.raises(XlmrError, match="no file for the TLM pivot zzz_Latn"):
        prepare(corpus_dir, tok_dir, out, workers=1, parallel=par, tlm_pivot="zzz_Latn", log=logs.append)
    (par / "ccc_Latn.txt").write_text("\n".join(text["ccc_Latn"][:29]) + "\n", encoding="utf-8")
    with pytest.raises(XlmrError, match=r"ccc_Latn.txt: 29 lines, but aaa_Latn.txt has 30"):
        prepare(corpus_dir, tok_dir, out, workers=1, parallel=par, log=logs.append)
    (par / "ccc_Latn.txt").write_text("x\ny\tz\n" + "\n".join(text["ccc_Latn"][:28]) + "\n", encoding="utf-8")
    with pytest.raises(XlmrError, match=r"ccc_Latn.txt: line 2: contains a TAB"):
        prepare(corpus_dir, tok_dir, out, workers=1, parallel=par, log=logs.append)


def test_prepare_errors(tmp_path, tok_dir, corpus_dir, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "xxx_Latn.txt").write_bytes(b"")
    with pytest.raises(XlmrError, match=r"xxx_Latn.txt: empty file"):
        prepare(bad, tok_dir, tmp_path / "o1", workers=1, log=lambda s: None)
    (bad / "xxx_Latn.txt").write_bytes(b"good line\nbad \xff line\n")
    (bad / "yyy_Latn.txt").write_text("fine\n")
    code = main(["data", "prepare", "--corpus", str(bad), "--tokenizer", str(tok_dir), "--out", str(tmp_path / "o2"),
                 "--workers", "2"])  # the error crosses the process pool
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "xxx_Latn.txt: line 2, byte 14: not valid UTF-8" in err[0]

    out = tmp_path / "o3"
    prepare(corpus_dir, tok_dir, out, workers=1, log=lambda s: None)
    other = tmp_path / "tok2"
    other.mkdir()
    data = json.loads((tok_dir / "tokenizer.json").read_text())
    data["normalizer"] = {"type": "Lowercase"}
    (other / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(XlmrError, match=r"manifest.json: prepared with another tokenizer"):
        prepare(corpus_dir, other, out, workers=1, log=lambda s: None)


def test_truncated_shard_is_detected(tmp_path, corpus_dir, tok_dir):
    prepare(corpus_dir, tok_dir, tmp_path, workers=1, log=lambda s: None)
    f = tmp_path / "bbb_Cyrl" / "bbb_Cyrl.00000.bin"
    f.write_bytes(f.read_bytes()[:-4])
    with pytest.raises(XlmrError, match=r"bbb_Cyrl.00000.bin: \d+ bytes, manifest says"):
        PreparedCorpus(tmp_path)


# --------------------------------------------------------------------------------------------- stream

def test_packing_no_padding_and_document_order(prepared, monkeypatch):
    monkeypatch.setattr("xlmr.mlm_data.MAX_OPEN_SHARDS", 1)  # shards are reopened as the stream moves
    c = PreparedCorpus(prepared)
    T = 16
    s = PackedStream(c, T, 8, seed=1)
    per_lang = {0: [], 1: []}
    for _ in range(40):
        b = next(s)
        assert b.input_ids.shape == (8, T) and b.input_ids.dtype == torch.int64
        assert not (b.input_ids == c.pad_token_id).any()
        for row, lang in zip(b.input_ids, b.language):
            per_lang[int(lang)].append(row)
    m = c.manifest["languages"]
    for i, lang in enumerate(c.languages):
        stream = np.concatenate([np.fromfile(prepared / f"{x['name']}.bin", dtype=c.dtype)[:x["train_tokens"]]
                                 for x in m[lang]["shards"]]).astype(np.int64)
        got = torch.cat(per_lang[i]).numpy()
        reps = -(-len(got) // len(stream))
        assert np.array_equal(got, np.tile(stream, reps)[:len(got)])  # in order, wrapping at the end
    assert s.taken.sum() * T == 40 * 8 * T


def test_language_draws_follow_alpha(prepared):
    s = PackedStream(prepared, 8, 4, alpha=0.3, seed=0)
    counts = np.bincount(s.draws(0, 20000), minlength=2) / 20000
    assert counts == pytest.approx(s.probs, abs=0.015)


def test_ranks_partition_the_global_batch(prepared):
    one = PackedStream(prepared, 12, 6, seed=3)
    two = [PackedStream(prepared, 12, 6, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(5):
        full = next(one)
        parts = [next(s) for s in two]
        for r, p in enumerate(parts):
            assert torch.equal(p.input_ids, full.input_ids[r::2]) and torch.equal(p.index, full.index[r::2])
        assert set(parts[0].index.tolist()).isdisjoint(parts[1].index.tolist())


def test_state_resume_exact_across_world_sizes(prepared):
    a = PackedStream(prepared, 12, 4, seed=5)
    for _ in range(3):
        next(a)
    state = json.loads(json.dumps(a.state_dict()))  # survives serialization
    want = [next(a) for _ in range(3)]
    b = PackedStream(prepared, 12, 4, seed=5)
    b.load_state_dict(state)
    assert all(torch.equal(next(b).input_ids, w.input_ids) for w in want)
    ranks = [PackedStream(prepared, 12, 4, seed=5, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.load_state_dict(state)
    for w in want:
        got = [next(r) for r in ranks]
        assert torch.equal(got[1].input_ids, w.input_ids[1::2]) and torch.equal(got[0].index, w.index[0::2])
    with pytest.raises(XlmrError, match="seq_len"):
        PackedStream(prepared, 16, 4, seed=5).load_state_dict(state)


def test_validation_set_is_fixed_held_out(prepared):
    c = PreparedCorpus(prepared)
    v = validation_set(c, 16, max_sequences=3)
    assert set(v) == set(c.languages)
    ids, mask = v["aaa_Latn"]
    assert ids.shape == (3, 16) and mask.all()
    assert torch.equal(ids.flatten(), torch.from_numpy(c.held_out(0, 48)))
    assert torch.equal(validation_set(c, 16, max_sequences=3)["bbb_Cyrl"][0], v["bbb_Cyrl"][0])
    big = validation_set(c, 4096)["bbb_Cyrl"]  # fewer held-out tokens than one row: one padded row
    assert big[0].shape == (1, 4096) and 0 < big[1].sum() < 4096


# --------------------------------------------------------------------------------------------- masking

VOCAB = MaskVocab(mask_id=4, vocab_size=1000, special_ids=(0, 1, 2, 3, 4))


def random_batch(B=64, T=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (B, T), generator=g)
    ids[:, 0], ids[:, T // 3], ids[:, -1] = 2, 3, 3  # specials inside rows
    return ids


def test_mask_proportions_and_specials():
    ids = random_batch()
    m = mask_tokens(ids, VOCAB, torch.Generator().manual_seed(0))
    special = torch.isin(ids, VOCAB.specials)
    assert not special.view(-1)[m.positions].any()
    assert torch.equal(m.targets, ids.view(-1)[m.positions])
    frac = len(m.positions) / (~special).sum().item()
    assert abs(frac - 0.15) < 0.002
    new = m.input_ids.view(-1)[m.positions]
    is_mask, kept = new == 4, new == m.targets
    rand = ~is_mask & ~kept
    assert abs(is_mask.float().mean() - 0.8) < 0.015
    assert abs(kept.float().mean() - 0.1) < 0.01 and abs(rand.float().mean() - 0.1) < 0.01
    assert not torch.isin(new[rand], VOCAB.specials).any()
    untouched = torch.ones(ids.numel(), dtype=torch.bool)
    untouched[m.positions] = False
    assert torch.equal(m.input_ids.view(-1)[untouched], ids.view(-1)[untouched])
    labels = m.labels()
    assert torch.equal(labels.view(-1)[m.positions], m.targets) and (labels.view(-1)[untouched] == -100).all()


def test_masking_is_deterministic():
    ids = random_batch(8, 64)
    a = mask_tokens(ids, VOCAB, torch.Generator().manual_seed(7))
    b = mask_tokens(ids, VOCAB, torch.Generator().manual_seed(7))
    c = mask_tokens(ids, VOCAB, torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.positions, c.positions)


def test_whole_word_masking_masks_whole_words():
    ids = random_batch(32, 256, seed=1)
    g = torch.Generator().manual_seed(2)
    starts = torch.rand(ids.shape, generator=g) < 0.4  # words of ~2.5 pieces
    m = mask_tokens(ids, VOCAB, torch.Generator().manual_seed(3), whole_word=True, word_starts=starts)
    chosen = torch.zeros(ids.numel(), dtype=torch.bool)
    chosen[m.positions] = True
    chosen = chosen.view(ids.shape)
    special = torch.isin(ids, VOCAB.specials)
    for b in range(ids.shape[0]):
        for t in range(1, ids.shape[1]):
            if not starts[b, t] and not special[b, t] and not special[b, t - 1]:
                assert chosen[b, t] == chosen[b, t - 1]  # a continuation follows its word
    assert abs(len(m.positions) / (~special).sum().item() - 0.15) < 0.02


def test_word_start_table_wordpiece(tok_dir):
    tok = Tokenizer.from_pretrained(tok_dir)
    table = word_start_table(tok.backend)
    vocab = tok.backend.get_vocab()
    assert all(bool(table[i]) == (not t.startswith("##")) for t, i in vocab.items())
    mv = MaskVocab.from_tokenizer(tok)
    assert set(mv.special_ids) == {vocab[s] for s in SPECIALS} and mv.mask_id == vocab["[MASK]"]


def test_word_start_table_sentencepiece():
    from tokenizers import Tokenizer as Backend, models

    backend = Backend(models.Unigram([("<unk>", 0.0), ("▁ab", -1.0), ("c", -2.0), ("▁", -3.0)], unk_id=0))
    assert word_start_table(backend).tolist() == [False, True, False, True]


def test_mask_rows_do_not_depend_on_the_split():
    ids = random_batch(6, 64, seed=4)
    index = torch.arange(100, 106)
    whole = mask_rows(ids, index, VOCAB, seed=9)
    for r in range(2):
        part = mask_rows(ids[r::2], index[r::2], VOCAB, seed=9)
        assert torch.equal(part.input_ids, whole.input_ids[r::2])
    assert whole.positions.tolist() == sorted(whole.positions.tolist())


def test_masked_positions_feed_the_mlm_head(prepared, tok_dir):
    """Stream -> mask_rows -> Model(positions=...) gives the full logits at the masked positions."""
    from xlmr.model import Config, Model

    tok = Tokenizer.from_pretrained(tok_dir)
    batch = next(PackedStream(prepared, 16, 4, seed=0))
    m = mask_rows(batch.input_ids, batch.index, MaskVocab.from_tokenizer(tok), seed=0, whole_word=True)
    torch.manual_seed(0)
    cfg = Config(model_type="bert", vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                 num_attention_heads=4, intermediate_size=37, max_position_embeddings=32, type_vocab_size=2,
                 pad_token_id=tok.pad_token_id, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = Model(cfg, head="mlm").eval()
    with torch.no_grad():
        sparse = model(m.input_ids, positions=m.positions)  # (N, V)
        full = model(m.input_ids).reshape(-1, cfg.vocab_size)[m.positions]
    assert sparse.shape == (len(m.targets), cfg.vocab_size) and len(m.targets) > 0
    torch.testing.assert_close(sparse, full)
