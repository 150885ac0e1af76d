"""finetune / evaluate / predict end to end on tiny tmp data, and transformers.pipeline agreement.

A tiny random BERT (hidden 32, 2 layers) with the MiniLM tokenizer keeps every run to seconds.
"""

import json
import random
import shutil
import subprocess
import sys

import pytest
import torch

from xlmr.checkpoint import save
from xlmr.cli import main
from xlmr.model import Config, Model

PER = ["Anna", "Peter", "Maria", "John", "Ingrid", "Carlos"]
SURNAMES = ["Smith", "Berg", "Rossi", "Novak"]
LOC = ["Paris", "Berlin", "London", "Rome", "Madrid", "Oslo"]
FILL = ["met", "in", "the", "friend", "from", "visited", "today", "and", "saw", "with"]
TOPICS = {"sport": ["football", "match", "goal", "team", "player", "score"],
          "science": ["atom", "physics", "lab", "experiment", "theory", "cell"]}


def ner_sentence(rng):
    words, tags = [], []
    for _ in range(rng.randint(2, 6)):
        kind = rng.choice(["per", "loc", "o", "o"])
        if tags and tags[-1] != "O":
            kind = "o"  # an O word between entities keeps the boundaries learnable
        if kind == "per":
            words.append(rng.choice(PER))
            tags.append("B-PER")
            if rng.random() < 0.5:
                words.append(rng.choice(SURNAMES))
                tags.append("I-PER")
        elif kind == "loc":
            words.append(rng.choice(LOC))
            tags.append("B-LOC")
        else:
            words.append(rng.choice(FILL))
            tags.append("O")
    return words, tags


def conll(sentences):
    return "\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(ws, ts)) for ws, ts in sentences) + "\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory, minilm_dir):
    """A tiny BERT checkpoint with the MiniLM tokenizer, and tiny NER and classification sets."""
    root = tmp_path_factory.mktemp("ft")
    torch.manual_seed(0)
    vocab = json.loads((minilm_dir / "tokenizer.json").read_text())["model"]["vocab"]
    cfg = Config(model_type="bert", vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=128, type_vocab_size=2, pad_token_id=0)
    save(Model(cfg, "base"), root / "tiny")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(minilm_dir / name, root / "tiny" / name)
    rng = random.Random(0)
    for split, n in (("train", 120), ("dev", 20), ("test", 20)):
        (root / f"{split}.conll").write_text(conll([ner_sentence(rng) for _ in range(n)]), encoding="utf-8")
        rows = ["index_id\tcategory\ttext"]
        for i in range(n):
            topic = rng.choice(sorted(TOPICS))
            rows.append(f"{i}\t{topic}\t" + " ".join(rng.choice(TOPICS[topic] + FILL) for _ in range(6)))
        (root / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


FAST = ["--batch-size", "8", "--lr", "3e-3", "--warmup", "0", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def ner_run(data):
    out = data / "ner_out"
    code = main(["finetune", "--model", str(data / "tiny"), "--task", "ner", "--train", str(data / "train.conll"),
                 "--dev", str(data / "dev.conll"), "--test", f"en={data / 'test.conll'}", f"xx={data / 'dev.conll'}",
                 "--out", str(out), "--epochs", "6", *FAST])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def classify_run(data):
    out = data / "cls_out"
    code = main(["finetune", "--model", str(data / "tiny"), "--task", "classify", "--train", str(data / "train.tsv"),
                 "--dev", str(data / "dev.tsv"), "--test", f"en={data / 'test.tsv'}", f"xx={data / 'dev.tsv'}",
                 "--out", str(out), "--epochs", "6", *FAST])
    assert code == 0
    return out


def test_finetune_ner_writes_everything(ner_run):
    best = ner_run / "best"
    config = json.loads((best / "config.json").read_text())
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert config["id2label"] == {str(i): label for i, label in enumerate(labels)}
    assert config["label2id"] == {label: i for i, label in enumerate(labels)}
    assert config["architectures"] == ["BertForTokenClassification"]
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "xlmr_task.json"):
        assert (best / name).is_file(), name
    for name in ("metrics.jsonl", "loss.png", "results.json", "report.md", "summary.json"):
        assert (ner_run / name).is_file(), name
    records = [json.loads(line) for line in (ner_run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in records) and any("eval_f1" in r for r in records)
    results = json.loads((ner_run / "results.json").read_text())
    assert set(results["languages"]) == {"en", "xx"} and results["languages"]["en"]["f1"] > 0.7
    report = (ner_run / "report.md").read_text()
    assert "Entity level" in report and "Token level" in report


def test_evaluate_prints_table_and_token_report(data, ner_run, tmp_path, capsys):
    code = main(["evaluate", "--model", str(ner_run / "best"),
                 "--test", f"en={data / 'test.conll'}", f"de={data / 'dev.conll'}", "--out", str(tmp_path),
                 "--threads", "1"])
    assert code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["language", "f1", "precision", "recall"]
    assert [line.split()[0] for line in lines[1:5]] == ["en", "de", "-" * len(lines[0]), "average"]
    assert "Token level" in out and "B-PER" in out and "macro avg" in out  # the sklearn token report
    assert (tmp_path / "results.json").is_file() and (tmp_path / "report.md").is_file()


def test_finetune_classify_writes_confusion_png(classify_run):
    assert (classify_run / "confusion_en.png").stat().st_size > 1000
    assert (classify_run / "confusion_xx.png").is_file()
    results = json.loads((classify_run / "results.json").read_text())
    assert {"accuracy", "macro_f1"} <= set(results["languages"]["en"])
    config = json.loads((classify_run / "best" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]


def test_finetune_bad_input_exits_2_with_one_line(data, tmp_path, capsys):
    bad = tmp_path / "bad.conll"
    bad.write_text("Anna\tB-PER\nmet O extra\n", encoding="utf-8")
    code = main(["finetune", "--model", str(data / "tiny"), "--task", "ner", "--train", str(bad),
                 "--out", str(tmp_path / "o"), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("xlmr: error: ") and f"{bad}:2:" in err[0] and "columns" in err[0]
    # and as a real process
    unseen = tmp_path / "dev.conll"
    unseen.write_text("Anna\tB-MISC\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "xlmr", "finetune", "--model", str(data / "tiny"), "--task", "ner",
                           "--train", str(data / "train.conll"), "--dev", str(unseen), "--out", str(tmp_path / "p"),
                           *FAST], capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"{unseen}:1:" in lines[0] and "'B-MISC'" in lines[0] and "known labels: O, B-LOC" in lines[0]


def test_unseen_test_labels_error_by_default_or_score_as_outside(data, ner_run, tmp_path, capsys):
    dated = tmp_path / "sw.conll"  # MasakhaNER-style: an entity type (DATE) that WikiANN-style training lacks
    dated.write_text("Anna\tB-PER\nmet\tO\nJuly\tB-DATE\n2020\tI-DATE\n\nParis\tB-LOC\ntoday\tB-DATE\n",
                     encoding="utf-8")
    args = ["evaluate", "--model", str(ner_run / "best"), "--test", f"en={data / 'test.conll'}", f"sw={dated}",
            "--out", str(tmp_path / "e"), "--threads", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert f"{dated}:3: label 'B-DATE' was not seen in training" in err and len(err.splitlines()) == 1
    with pytest.warns(UserWarning) as caught:
        assert main(args + ["--unseen-labels", "outside"]) == 0
    notes = [str(w.message) for w in caught if "unseen-labels" in str(w.message)]
    assert notes == ["--unseen-labels outside: gold labels not seen in training are scored as 'O': "
                     "en: none; sw: B-DATE 2, I-DATE 1"]
    report = (tmp_path / "e" / "report.md").read_text()
    assert "- unseen labels: gold labels not seen in training are scored as 'O' (--unseen-labels outside): " \
           "en: none; sw: B-DATE 2, I-DATE 1" in report
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert results["languages"]["sw"]["unseen_labels_scored_as_outside"] == {"B-DATE": 2, "I-DATE": 1}
    # finetune takes the same option for its test sets
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(data / "tiny"), "--task", "ner", "--train", str(data / "train.conll"),
                 "--test", f"sw={dated}", "--unseen-labels", "outside", "--out", str(out), "--epochs", "1",
                 *FAST]) == 0
    assert "sw: B-DATE 2, I-DATE 1" in (out / "report.md").read_text()


def test_predictor_600_words_gets_600_tags(data, ner_run):
    """No token lost through the real prediction path: a 600-word text at max length 128."""
    from xlmr.predict import Predictor
    from xlmr.tasks import Ner, WordExample, run_model
    from xlmr.tokenizer import Tokenizer

    rng = random.Random(1)
    words = [rng.choice(PER + LOC + FILL) for _ in range(600)]
    pred = Predictor(str(ner_run / "best"), device="cpu")
    assert pred.max_length == 128
    (result,) = pred([" ".join(words)])
    # entities are word spans: every word was tagged; compare with the explicit window path
    ner = Ner()
    ner.set_labels(pred.model.config.id2label)
    tok = Tokenizer.from_pretrained(ner_run / "best")
    ex = [WordExample(words, None)]
    feats = ner.encode(ex, tok, 128, 32)
    assert len(feats) > 1
    (p,) = ner.predict(run_model(pred.model, ner, feats, tok.pad_token_id), feats, ex)
    assert len(p.tags) == 600
    ents = [(e["start"], e["end"], e["type"]) for e in result["entities"]]
    from xlmr.tasks import char_entities, split_words

    text = " ".join(words)
    want = char_entities(text, split_words(text)[1], p.tags, p.scores)
    assert ents == [(e["start"], e["end"], e["type"]) for e in want] and len(ents) > 20


def _predict_cli(model_dir, texts, tmp_path):
    inp, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    inp.write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert main(["predict", "--model", str(model_dir), "--input", str(inp), "--output", str(out),
                 "--threads", "1"]) == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_pipeline_token_classification_agrees_with_predict(ner_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    rng = random.Random(7)
    texts = [" ".join(ner_sentence(rng)[0]) for _ in range(50)]
    ours = _predict_cli(ner_run / "best", texts, tmp_path)
    pipe = transformers.pipeline("token-classification", model=str(ner_run / "best"), aggregation_strategy="first",
                                 device="cpu")
    theirs = pipe(texts)
    assert len(ours) == len(theirs) == 50
    n = 0
    for text, a, b in zip(texts, ours, theirs):
        want = [(e["start"], e["end"], e["type"]) for e in a["entities"]]
        got = [(e["start"], e["end"], e["entity_group"]) for e in b]
        assert got == want, text
        n += len(want)
    assert n > 50  # the model does find entities


def test_pipeline_text_classification_agrees_with_predict(classify_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    rng = random.Random(8)
    texts = [" ".join(rng.choice(TOPICS["sport"] + TOPICS["science"] + FILL) for _ in range(6)) for _ in range(50)]
    ours = _predict_cli(classify_run / "best", texts, tmp_path)
    pipe = transformers.pipeline("text-classification", model=str(classify_run / "best"), device="cpu")
    theirs = pipe(texts)
    assert [o["label"] for o in ours] == [t["label"] for t in theirs]
    assert {o["label"] for o in ours} == {"science", "sport"}
    for o, t in zip(ours, theirs):
        assert abs(o["probs"][o["label"]] - t["score"]) < 1e-4


def test_token_loss_at_labelled_positions_equals_full_loss():
    """finetune's loss skips the last layer's work at unlabelled rows: same loss, same gradients."""
    import torch.nn.functional as F

    from xlmr.tasks import IGNORE

    torch.manual_seed(0)
    cfg = Config(model_type="bert", vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=32, type_vocab_size=2, pad_token_id=0,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, id2label={0: "a", 1: "b", 2: "c"})
    model = Model(cfg, "token")
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    labels = torch.randint(0, 3, (3, 9))
    labels[:, 0] = labels[:, 4] = IGNORE
    labels[mask == 0] = IGNORE

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    full = F.cross_entropy(model(ids, mask).reshape(-1, 3), labels.reshape(-1), ignore_index=IGNORE)
    g_full = grads(full)
    at = labels.reshape(-1).ne(IGNORE).nonzero().squeeze(1)
    part = F.cross_entropy(model(ids, mask, positions=at), labels.reshape(-1)[at])
    g_part = grads(part)
    assert torch.allclose(full, part, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_full, g_part))


def test_set_threads():
    from xlmr.train import set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert 1 <= set_threads(0) <= max(1, __import__("os").cpu_count())
    finally:
        torch.set_num_threads(before)


def test_classify_truncation_warns_once_as_one_line(data, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "xlmr", "finetune", "--model", str(data / "tiny"), "--task", "classify",
                           "--train", str(data / "train.tsv"), "--max-length", "6", "--max-steps", "1",
                           "--out", str(tmp_path / "o"), *FAST], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warned) == 1 and warned[0].startswith("xlmr: warning: 120 of 120 examples were longer than "
                                                     "max_length=6 and were truncated (up to"), proc.stderr
