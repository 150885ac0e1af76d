"""Bad input files and command-line values: one clear line naming file and line, never lost rows.

Also: one run per output directory (a lock), and the run id in every metrics line.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xlmr.checkpoint import save
from xlmr.cli import main
from xlmr.errors import XlmrError
from xlmr.model import Config, Model

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys, argv) -> str:
    """Run the CLI; it must exit 2 with one line on stderr (no traceback). Returns that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("xlmr: error: "), err
    return err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, minilm_dir):
    """A tiny random BERT (130 positions) with the MiniLM tokenizer, and a 2-step NER model."""
    root = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    vocab = json.loads((minilm_dir / "tokenizer.json").read_text())["model"]["vocab"]
    cfg = Config(model_type="bert", vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=130, type_vocab_size=2, pad_token_id=0)
    save(Model(cfg, "base"), root / "base")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(minilm_dir / name, root / "base" / name)
    (root / "train.conll").write_text("Anna\tB-PER\nmet\tO\nBerlin\tB-LOC\n\nPeter\tB-PER\nsaw\tO\nRome\tB-LOC\n",
                                      encoding="utf-8")
    assert main(["finetune", "--model", str(root / "base"), "--task", "ner", "--train", str(root / "train.conll"),
                 "--out", str(root / "ner"), "--max-steps", "2", "--batch-size", "2", "--no-progress",
                 "--threads", "1", "--log-every", "1"]) == 0
    return root


# ------------------------------------------------------------------------------- one run per directory


def hold_lock(directory: Path) -> subprocess.Popen:
    """Another process holding `directory` as its run directory."""
    code = ("import sys, time\nfrom xlmr.rundir import run_directory\n"
            "with run_directory(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_run_on_a_locked_directory_fails_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        for argv in (["finetune", "--model", "m", "--train", "t.conll"],
                     ["evaluate", "--model", "m", "--test", "t.conll"],
                     ["pretrain", "--data", "d", "--tokenizer", "t"],
                     ["adapt-language", "--model", "m", "--corpus", "c.txt"],
                     ["data", "prepare", "--corpus", "c", "--tokenizer", "t"]):
            err = one_line_error(capsys, [*argv, "--out", str(out)])
            assert f"PID {holder.pid}" in err and str(out) in err, err
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the kernel drops the lock with the process
        holder.wait()
    from xlmr.rundir import run_directory

    with run_directory(out) as run:  # free again at once
        assert run.out == out


def test_every_metrics_line_names_the_run(tiny):
    lines = [json.loads(x) for x in (tiny / "ner" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) >= 2
    ids = {r.get("run_id") for r in lines}
    assert len(ids) == 1 and None not in ids and len(ids.pop()) >= 8


# ------------------------------------------------------------------------------- classification readers


def rows_tsv(n=40, fix=None):
    rows = ["index_id\tcategory\ttext"] + [f"{i}\t{'ab'[i % 2]}\ttext number {i}" for i in range(n)]
    for i, row in (fix or {}).items():
        rows[i] = row
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("fix, line, words", [
    ({10: '9\ta\t"text number 9', 15: '14\ta\ttext number 14"'}, 11, "runs to line 16"),  # swallowed rows
    ({10: '9\ta\t"text number 9'}, 11, "never closes"),
    ({10: '9\ta\t"text number 9', 15: '14\ta\t"quoted" text'}, 11, "text follows the closing"),
])
def test_unmatched_quote_names_its_line_instead_of_merging_rows(tmp_path, fix, line, words):
    from xlmr.tasks import Classify

    path = tmp_path / "train.tsv"
    path.write_text(rows_tsv(fix=fix), encoding="utf-8")
    with pytest.raises(XlmrError, match=rf"^{path}:{line}: .*{words}"):
        Classify().read(path)


def test_quoted_fields_with_line_breaks_still_read(tmp_path):
    from xlmr.tasks import Classify

    path = tmp_path / "news.tsv"
    path.write_text('category\ttext\nsport\t"A ""match"".\nSecond paragraph."\nscience\tatom\n', encoding="utf-8")
    ex = Classify().read(path)
    assert [(e.text, e.label, e.line) for e in ex] == [('A "match".\nSecond paragraph.', "sport", 2),
                                                        ("atom", "science", 4)]


@pytest.mark.parametrize("name, body, message", [
    ("dup.tsv", "text\tlabel\ttext\na\tx\tb\n", r"dup.tsv:1: the header names column 'text' twice"),
    ("dup.csv", "label,text,label\nx,a,y\n", r"dup.csv:1: the header names column 'label' twice"),
    ("dup.jsonl", '{"text": "a", "label": "x"}\n{"text": "a", "label": "x", "label": "y"}\n',
     r"dup.jsonl:2: key 'label' appears twice"),
    ("list.jsonl", '{"text": ["a", "b"], "label": "x"}\n', r"list.jsonl:1: column 'text' must hold a string"),
])
def test_a_column_named_twice_is_an_error(tmp_path, name, body, message):
    from xlmr.tasks import Classify

    (tmp_path / name).write_text(body, encoding="utf-8")
    with pytest.raises(XlmrError, match=message):
        Classify().read(tmp_path / name)


def test_txt_training_file_error_names_the_file(tiny, tmp_path, capsys):
    from xlmr.tasks import Classify

    path = tmp_path / "train.txt"
    path.write_text("some text\nmore text\n", encoding="utf-8")
    err = one_line_error(capsys, ["finetune", "--model", str(tiny / "base"), "--task", "classify", "--train",
                                  str(path), "--out", str(tmp_path / "out")])
    assert f"{path}: " in err and "label" in err
    task = Classify()
    with pytest.raises(XlmrError, match=rf"^{path}: training data has no labels"):
        task.build_labels(task.read(path, labelled=False))


# ------------------------------------------------------------------------------- predict input and output


def test_predict_non_utf8_input_names_file_and_line(tiny, tmp_path, capsys):
    inp = tmp_path / "in.txt"
    inp.write_bytes(b"Anna met Peter\nBerlin \xff\xfe\n")
    err = one_line_error(capsys, ["predict", "--model", str(tiny / "ner" / "best"), "--input", str(inp),
                                  "--output", str(tmp_path / "out.jsonl")])
    assert f"{inp}:2: not valid UTF-8" in err


def test_predict_output_directory_is_one_line_and_leaves_nothing(tiny, tmp_path, capsys):
    inp = tmp_path / "in.txt"
    inp.write_text("Anna met Peter\n", encoding="utf-8")
    (tmp_path / "out").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    err = one_line_error(capsys, ["predict", "--model", str(tiny / "ner" / "best"), "--input", str(inp),
                                  "--output", str(tmp_path / "out")])
    assert "is a directory" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_predict_output_stays_line_aligned_with_input(tiny, tmp_path):
    lines = ["Anna met Peter in Berlin", "", "Rome\u2028Berlin and Anna", "   ", "Peter\u0085saw Rome", ""]
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(tiny / "ner" / "best"), "--input", str(inp), "--output", str(out),
                 "--threads", "1"]) == 0
    preds = [json.loads(x) for x in out.read_text(encoding="utf-8").split("\n")[:-1]]
    assert [p["text"] for p in preds] == lines
    assert [p["entities"] for p in preds if not p["text"].strip()] == [[], [], []]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "Anna met Peter"}\n\n{"text": "Rome"}\n', encoding="utf-8")
    assert main(["predict", "--model", str(tiny / "ner" / "best"), "--input", str(jsonl), "--output", str(out),
                 "--threads", "1"]) == 0
    assert [json.loads(x)["text"] for x in out.read_text(encoding="utf-8").splitlines()] == ["Anna met Peter", "",
                                                                                           "Rome"]


def test_predict_jsonl_key_given_twice(tiny, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "Anna"}\n{"text": "Anna", "text": "Rome"}\n', encoding="utf-8")
    err = one_line_error(capsys, ["predict", "--model", str(tiny / "ner" / "best"), "--input", str(inp),
                                  "--output", str(tmp_path / "out.jsonl")])
    assert f"{inp}:2: key 'text' appears twice" in err


# ------------------------------------------------------------------------------- command-line and YAML values


def test_max_length_above_the_model_positions(tiny, tmp_path, capsys):
    err = one_line_error(capsys, ["finetune", "--model", str(tiny / "base"), "--train", str(tiny / "train.conll"),
                                  "--max-length", "200", "--out", str(tmp_path / "o")])
    assert "--max-length 200" in err and "130 tokens" in err


@pytest.mark.parametrize("yaml_text, key, words", [
    ("lr: fast\n", "lr", "expected a number, got 'fast'"),
    ("batch_size: 8.5\n", "batch_size", "expected an integer"),
    ("bf16: maybe\n", "bf16", "expected true or false"),
    ("test: [1, [2]]\n", "test", "expected a string"),
    ("schedule: cosine\n", "schedule", "expected one of linear, inverse_sqrt, constant"),
    ("batch_size: 0\n", "batch_size", "must be at least 1, got 0"),
])
def test_yaml_value_of_the_wrong_type_names_file_and_key(tmp_path, capsys, yaml_text, key, words):
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(yaml_text, encoding="utf-8")
    err = one_line_error(capsys, ["finetune", "--config", str(cfg), "--model", "m", "--train", "t"])
    assert f"{cfg}: {key}: {words}" in err, err


@pytest.mark.parametrize("flags, words", [
    (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["--grad-accum", "0"], "--grad-accum: must be at least 1"),
    (["--max-length", "0"], "--max-length: must be at least 1"),
    (["--epochs", "-1"], "--epochs: must be at least 0"),
])
def test_out_of_range_values_are_refused_not_changed(tmp_path, capsys, flags, words):
    err = one_line_error(capsys, ["finetune", "--model", "m", "--train", "t", "--out", str(tmp_path / "o"), *flags])
    assert words in err, err


def test_python_api_checks_values_too():
    from xlmr.finetune import FinetuneConfig

    with pytest.raises(XlmrError, match="option batch_size: must be at least 1, got 0"):
        FinetuneConfig(batch_size=0)
    with pytest.raises(XlmrError, match="option lr: expected a number"):
        FinetuneConfig(lr="fast")


def test_a_test_language_given_twice(tiny, tmp_path, capsys):
    err = one_line_error(capsys, ["finetune", "--model", str(tiny / "base"), "--train", str(tiny / "train.conll"),
                                  "--test", f"en={tiny / 'train.conll'}", f"en={tmp_path / 'b.conll'}",
                                  "--out", str(tmp_path / "o")])
    assert "--test: language 'en' is given twice" in err
    err = one_line_error(capsys, ["evaluate", "--model", str(tiny / "ner" / "best"), "--test",
                                  f"de={tiny / 'train.conll'}", f"de={tiny / 'train.conll'}",
                                  "--out", str(tmp_path / "e")])
    assert "--test: language 'de' is given twice" in err


def test_pretrain_tokenizer_must_be_the_one_the_data_was_prepared_with(tiny, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "eng_Latn.txt").write_text("".join(f"Anna met Peter in Berlin {i}\n" for i in range(40)),
                                         encoding="utf-8")
    assert main(["data", "prepare", "--corpus", str(corpus), "--tokenizer", str(tiny / "base"),
                 "--out", str(tmp_path / "data"), "--workers", "1"]) == 0
    other = tmp_path / "other_tok"
    shutil.copytree(tiny / "base", other)
    tok_json = json.loads((other / "tokenizer.json").read_text(encoding="utf-8"))
    tok_json["model"]["vocab"]["anna-other"] = len(tok_json["model"]["vocab"])  # another vocabulary
    (other / "tokenizer.json").write_text(json.dumps(tok_json), encoding="utf-8")
    capsys.readouterr()
    err = one_line_error(capsys, ["pretrain", "--data", str(tmp_path / "data"), "--tokenizer", str(other),
                                  "--out", str(tmp_path / "pt"), "--max-steps", "1", "--batch-size", "2",
                                  "--seq-len", "16", "--no-progress"])
    assert f"{tmp_path / 'data' / 'manifest.json'}: prepared with another tokenizer" in err


# ------------------------------------------------------------------------------- CoNLL line numbers


@pytest.mark.parametrize("text, line", [
    ("New York B-LOC\nis O\nbig O\n", 1),          # the first line is the odd one
    ("Paris B-LOC\nis O\n\nNew York B-LOC\nis O\n", 4),
    ("a O\nb O\nc d e O\nf O\n", 3),
])
def test_conll_token_with_spaces_is_reported_at_its_own_line(tmp_path, text, line):
    from xlmr.tasks import Ner

    path = tmp_path / "sp.conll"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(XlmrError, match=rf"^{path}:{line}: expected 2 columns \(token and tag\), found [34]"):
        Ner().read(path)


# ------------------------------------------------------------------------------- a str is one text


def test_a_str_is_one_text_a_list_is_a_batch(tiny, minilm_dir):
    from transformers import AutoTokenizer

    from xlmr.predict import Predictor
    from xlmr.tokenizer import Tokenizer
    from xlmr.tokenizer_trim import used_ids

    tok = Tokenizer.from_pretrained(minilm_dir)
    hf = AutoTokenizer.from_pretrained(minilm_dir)
    one = tok.encode("Hello world")
    assert one.input_ids == [hf("Hello world")["input_ids"]]
    assert tok.encode("Hello world", "Bye").input_ids == [hf("Hello world", "Bye")["input_ids"]]
    assert tok.encode(["Hello", "world"]).input_ids[1][:3] == hf("world")["input_ids"]
    words = tok.encode(["Hello", "world"], is_pretokenized=True)  # one sentence's words
    assert len(words) == 1 and words.word_ids[0] == [None, 0, 1, None]
    with pytest.raises(ValueError, match="one pair per text"):
        tok.encode(["a", "b"], ["c"])
    assert used_ids(tok, "Hello world") == used_ids(tok, ["Hello world"])
    preds = Predictor(str(tiny / "ner" / "best"))("Anna met Peter")
    assert len(preds) == 1 and preds[0]["text"] == "Anna met Peter"
