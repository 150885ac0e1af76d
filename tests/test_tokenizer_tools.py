"""`xlmr tokenizer train | trim`: language sampling, the written files, trimming exactness, bad corpora."""

import math

import pytest
import torch

import xlmr
from xlmr import XlmrError
from xlmr.cli import main
from xlmr.tokenizer import Tokenizer
from xlmr.sources import language_of
from xlmr.tokenizer_train import read_corpus, sample_lines, sampling_table

from multiscript import SCRIPTS, training_text


def write_corpus(directory, texts):
    directory.mkdir(parents=True, exist_ok=True)
    for lang, lines in texts.items():
        (directory / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), training_text())


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    assert main(["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "400", "--alpha", "0.3",
                 "--sample-chars", "100000", "--out", str(out)]) == 0
    return out


# ----- sampling --------------------------------------------------------------------------------


def test_debian_files_count_as_their_language(tmp_path):
    from pathlib import Path

    assert language_of(Path("debian_deu_Latn.txt")) == language_of(Path("deu_Latn.txt")) == "deu_Latn"
    write_corpus(tmp_path, {"deu_Latn": ["eins"], "debian_deu_Latn": ["zwei", "drei"], "fra_Latn": ["un"]})
    assert read_corpus(tmp_path) == {"deu_Latn": ["zwei", "drei", "eins"], "fra_Latn": ["un"]}


def test_sampling_probabilities_follow_share_to_the_alpha():
    corpus = {"big": ["x" * 90], "small": ["y" * 10]}
    table = {t.name: t for t in sampling_table(corpus, alpha=0.5)}
    assert table["big"].share == pytest.approx(0.9)
    norm = math.sqrt(0.9) + math.sqrt(0.1)
    assert table["big"].prob == pytest.approx(math.sqrt(0.9) / norm)
    assert table["small"].prob == pytest.approx(math.sqrt(0.1) / norm)
    flat = {t.name: t.prob for t in sampling_table(corpus, alpha=0.0)}
    assert flat == {"big": 0.5, "small": 0.5}


def test_sample_lines_gives_each_language_its_probability_of_characters():
    corpus = {"big": [f"big line {i}" for i in range(1000)], "small": [f"small {i}" for i in range(20)]}
    table = sampling_table(corpus, alpha=0.3)
    lines = sample_lines(corpus, table, budget_chars=20_000)
    chars = {t.name: sum(len(s) for s in lines if s.startswith(t.name)) for t in table}
    total = sum(chars.values())
    for t in table:
        assert chars[t.name] / total == pytest.approx(t.prob, abs=0.02)
    assert sum(s.startswith("small") for s in lines) > 20  # the small language repeats


# ----- train -----------------------------------------------------------------------------------


def test_train_prints_table_and_writes_files_transformers_loads(trained, capsys, corpus):
    T = pytest.importorskip("transformers")
    assert {p.name for p in trained.iterdir()} >= {"sentencepiece.bpe.model", "tokenizer.json",
                                                   "tokenizer_config.json", "special_tokens_map.json"}
    tok = Tokenizer.from_pretrained(trained)
    hf = T.XLMRobertaTokenizerFast.from_pretrained(trained)
    assert tok.vocab_size == len(hf) == 402
    text = [line for lines in training_text().values() for line in lines[:3]]
    assert tok.encode(text, max_length=None).input_ids == hf(text, padding=True)["input_ids"]


def test_train_cli_output(corpus, tmp_path, capsys):
    assert main(["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "400", "--sample-chars", "50000",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| language | lines | chars | share | sampling prob | tokens/word | <unk> rate |" in out
    for lang in SCRIPTS:
        assert f"| {lang} |" in out
    assert "highest <unk> rate" in out


# ----- trim ------------------------------------------------------------------------------------


def tiny_model(vocab_size, head="mlm"):
    torch.manual_seed(0)
    config = xlmr.Config(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
    model = xlmr.Model(config, head).eval()
    with torch.no_grad():
        model.mlm_head.bias.normal_()  # a non-zero bias, so cutting it wrongly shows
    return model


def test_trim_keeps_outputs_identical(trained, tmp_path, capsys):
    tok = Tokenizer.from_pretrained(trained)
    model = tiny_model(tok.vocab_size)
    xlmr.save(model, tmp_path / "full")
    tok.save(tmp_path / "full")
    keep_langs = {k: v for k, v in training_text().items() if k in ("eng_Latn", "rus_Cyrl", "ell_Grek")}
    small_corpus = write_corpus(tmp_path / "small_corpus", keep_langs)
    assert main(["tokenizer", "trim", "--model", str(tmp_path / "full"), "--corpus", str(small_corpus),
                 "--out", str(tmp_path / "small")]) == 0
    printed = capsys.readouterr().out
    assert "vocabulary" in printed and "embedding params" in printed and "total params" in printed

    small_tok = Tokenizer.from_pretrained(tmp_path / "small")
    small = xlmr.load(tmp_path / "small")
    assert small.config.vocab_size == small_tok.vocab_size < tok.vocab_size
    assert small_tok.pad_token_id == tok.pad_token_id == small.config.pad_token_id
    assert small_tok.convert_ids_to_tokens([small_tok.mask_token_id]) == ["<mask>"]

    texts = [line for lines in keep_langs.values() for line in lines]
    full, cut = tok.encode(texts), small_tok.encode(texts)
    T = pytest.importorskip("transformers")
    assert T.AutoTokenizer.from_pretrained(tmp_path / "small")(texts, padding=True)["input_ids"] == cut.input_ids
    old_tokens = [[t for t in tok.convert_ids_to_tokens(row)] for row in full.input_ids]
    assert [small_tok.convert_ids_to_tokens(row) for row in cut.input_ids] == old_tokens  # same pieces
    ids, mask, _ = full.tensors()
    small_ids, _, _ = cut.tensors()
    with torch.no_grad():
        h_full = model.encoder_model(ids, mask)
        h_small = small.encoder_model(small_ids, mask)
        logits_full = model(ids, mask)
        logits_small = small(small_ids, mask)
    real = mask.bool()
    assert (h_full[real] - h_small[real]).abs().max() <= 1e-6
    kept = torch.tensor([tok.backend.token_to_id(small_tok.backend.id_to_token(i))
                         for i in range(small_tok.vocab_size)])
    assert (logits_full[real][:, kept] - logits_small[real]).abs().max() <= 1e-5


def test_trim_fine_tuned_bert_head_and_all_loads_in_transformers(trained, tmp_path):
    """A fine-tuned BERT-family token classifier (e5's layout) keeps its head; transformers loads the
    trimmed directory and gives the untrimmed model's logits."""
    T = pytest.importorskip("transformers")
    tok = Tokenizer.from_pretrained(trained)
    torch.manual_seed(0)
    config = xlmr.Config(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, model_type="bert",
                         id2label={0: "O", 1: "B-PER", 2: "I-PER"})
    model = xlmr.Model(config, "token").eval()
    xlmr.save(model, tmp_path / "full")
    tok.save(tmp_path / "full")
    texts = training_text()["rus_Cyrl"]
    small_corpus = write_corpus(tmp_path / "c", {"rus_Cyrl": texts})
    assert main(["tokenizer", "trim", "--model", str(tmp_path / "full"), "--corpus", str(small_corpus),
                 "--out", str(tmp_path / "small")]) == 0
    hf = T.AutoModelForTokenClassification.from_pretrained(tmp_path / "small").eval()
    hf_tok = T.AutoTokenizer.from_pretrained(tmp_path / "small")
    assert hf.config.vocab_size == len(hf_tok) < tok.vocab_size
    assert hf.config.id2label == {0: "O", 1: "B-PER", 2: "I-PER"}
    full = tok.encode(texts)
    ids, mask, _ = full.tensors()
    cut = hf_tok(texts, padding=True, return_tensors="pt")
    assert hf_tok.convert_ids_to_tokens(cut["input_ids"][0]) == tok.convert_ids_to_tokens(full.input_ids[0])
    with torch.no_grad():
        want = model(ids, mask)
        got = hf(input_ids=cut["input_ids"], attention_mask=cut["attention_mask"]).logits
    real = mask.bool()
    assert (want[real] - got[real]).abs().max() <= 1e-5


def test_trim_maps_dropped_pieces_to_unk(trained, tmp_path):
    from xlmr.tokenizer_trim import kept_ids, trim_tokenizer

    tok = Tokenizer.from_pretrained(trained)
    small = trim_tokenizer(tok, kept_ids(tok, training_text()["eng_Latn"]))
    thai = SCRIPTS["tha_Thai"][0]  # no Thai character is kept
    row = small.encode([thai]).input_ids[0]
    assert set(small.convert_ids_to_tokens(row[1:-1])) == {"▁", "<unk>"}  # the word prefix, then <unk>
    # A word of kept characters still encodes, from single characters if need be.
    row = small.encode(["quick zzz"]).input_ids[0]
    assert small.unk_token_id not in row


def test_trim_bert_wordpiece(minilm_dir, tmp_path):
    from xlmr.tokenizer_trim import kept_ids, trim_tokenizer

    tok = Tokenizer.from_pretrained(minilm_dir)
    texts = ["The quick brown fox jumps over the lazy dog.", "Unaffable gardeners!"]
    small = trim_tokenizer(tok, kept_ids(tok, texts))
    assert small.vocab_size < 200
    assert small.convert_ids_to_tokens(small.encode(texts).input_ids[1]) == \
        tok.convert_ids_to_tokens(tok.encode(texts).input_ids[1])
    assert small.convert_ids_to_tokens(small.encode(["zebra λόγος"]).input_ids[0]) == \
        ["[CLS]", "z", "##e", "##b", "##r", "##a", "[UNK]", "[SEP]"]  # seen characters; an unseen word


# ----- bad corpora: one clear line, exit code 2 ----------------------------------------------------


def run_err(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    return err


def test_empty_corpus_dir(tmp_path, capsys):
    (tmp_path / "corpus").mkdir()
    err = run_err(capsys, "tokenizer", "train", "--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / "o"))
    assert "corpus directory has no .txt files" in err
    (tmp_path / "corpus" / "eng_Latn.txt").write_text("\n\n")
    err = run_err(capsys, "tokenizer", "train", "--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / "o"))
    assert "all 1 .txt files are empty" in err


def test_non_utf8_corpus_file_names_file_and_byte(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", {"eng_Latn": ["fine"]})
    (corpus / "deu_Latn.txt").write_bytes("Grüße\nnoch eine Zeile\nka".encode() + b"\xff" + b"put\n")
    err = run_err(capsys, "tokenizer", "train", "--corpus", str(corpus), "--out", str(tmp_path / "o"))
    offset = len("Grüße\nnoch eine Zeile\nka".encode())
    assert f"deu_Latn.txt: not UTF-8 at byte offset {offset} (line 3)" in err


def test_vocab_size_larger_than_corpus_supports(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", {"eng_Latn": ["a tiny corpus", "of two lines"]})
    err = run_err(capsys, "tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "5000",
                  "--sample-chars", "1000", "--out", str(tmp_path / "o"))
    assert "--vocab-size 5000 is larger than this corpus supports (at most" in err


def test_vocab_size_smaller_than_the_alphabet(corpus, tmp_path, capsys):
    err = run_err(capsys, "tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "100",
                  "--sample-chars", "20000", "--out", str(tmp_path / "o"))
    assert "--vocab-size 100 is smaller than the" in err and "characters this corpus needs" in err


def test_trim_needs_a_tokenizer(tmp_path, capsys, corpus):
    xlmr.save(tiny_model(50), tmp_path / "m")
    err = run_err(capsys, "tokenizer", "trim", "--model", str(tmp_path / "m"), "--corpus", str(corpus),
                  "--out", str(tmp_path / "o"))
    assert "no tokenizer.json, sentencepiece.bpe.model or vocab.txt" in err
