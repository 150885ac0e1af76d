"""A new task is one file: a task defined here, registered through xlmr.tasks.register_task, runs
through `xlmr finetune`, `xlmr evaluate`, `xlmr predict` and the server with no change to xlmr.

The toy task: does a text contain the word "not"? Files hold `label<TAB>text` lines; predictions
are written as {"text", "negated", "p"}, a JSON shape no built-in task has, so the output proves that
the commands asked the task and not a branch of their own.
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from test_finetune import FAST, data  # noqa: F401 (a fixture: the tiny BERT with the MiniLM tokenizer)
from xlmr.cli import main
from xlmr.errors import XlmrError
from xlmr.tasks import IGNORE, TASKS, Feature, Task, register_task

WORDS = ["we", "will", "go", "home", "today", "it", "is", "good", "they", "like", "the", "film"]


@dataclass
class Line:
    text: str
    label: str | None
    path: str = ""
    line: int = 0


class Negation(Task):
    """Sequence classification: 'negated' when the text holds the word "not", else 'plain'."""

    name = "toy_negation"
    head = "sequence"
    main_metric = "accuracy"
    columns = ("accuracy",)

    def read(self, path):
        rows = []
        for n, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            label, sep, text = raw.partition("\t")
            if not sep:
                raise XlmrError(f"{path}:{n}: expected label<TAB>text")
            rows.append(Line(text, label, str(path), n))
        return rows

    def example_labels(self, example):
        return () if example.label is None else ((example.label, example.path, example.line),)

    def encode(self, examples, tokenizer, max_length=128, stride=32):
        labelled = any(ex.label is not None for ex in examples)
        if labelled:
            self.check_labels(examples)
        batch = tokenizer.encode([ex.text for ex in examples], max_length=max_length)
        feats = []
        for i, (ids, mask) in enumerate(zip(batch.input_ids, batch.attention_mask)):
            n = sum(mask)
            feats.append(Feature(ids[:n], self.label2id[examples[i].label] if labelled else IGNORE, i, [0] * n))
        return feats

    def predict(self, outputs, features, examples):
        preds = [None] * len(examples)
        for out, f in zip(outputs, features):
            p = np.exp(out - out.max())
            p = p / p.sum()
            preds[f.example] = (self.labels[int(p.argmax())], float(p[self.label2id["negated"]]))
        return preds

    def metrics(self, examples, predictions):
        return {"accuracy": sum(ex.label == p[0] for ex, p in zip(examples, predictions)) / len(examples)}

    def report(self, examples, predictions):
        wrong = sum(ex.label != p[0] for ex, p in zip(examples, predictions))
        return f"{wrong} of {len(examples)} wrong"

    def example_from_text(self, text, pair=None):
        return Line(text, None)

    def empty_prediction(self, text):
        return {"text": text, "negated": None, "p": None}

    def to_json(self, text, example, prediction):
        return {"text": text, "negated": prediction[0] == "negated", "p": round(prediction[1], 4)}


@pytest.fixture(scope="module")
def toy(data):  # noqa: F811 (the fixture imported above)
    """Register the task for this module only, and write its train/dev/test files."""
    register_task(Negation)
    rng = random.Random(0)
    for split, n in (("train", 160), ("dev", 40), ("test", 40)):
        lines = []
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))]
            negated = rng.random() < 0.5
            if negated:
                words.insert(rng.randrange(1, len(words)), "not")
            lines.append(f"{'negated' if negated else 'plain'}\t{' '.join(words)}")
        (data / f"toy_{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    yield data
    TASKS.pop(Negation.name)


def test_register_task_refuses_a_taken_name():
    class Other(Negation):
        name = "ner"

    with pytest.raises(ValueError, match="'ner' is already registered"):
        register_task(Other)
    with pytest.raises(TypeError):
        register_task(object)


@pytest.fixture(scope="module")
def toy_run(toy):
    out = toy / "toy_out"
    assert main(["finetune", "--model", str(toy / "tiny"), "--task", "toy_negation",
                 "--train", str(toy / "toy_train.txt"), "--dev", str(toy / "toy_dev.txt"),
                 "--test", f"en={toy / 'toy_test.txt'}", "--out", str(out), "--epochs", "8", *FAST]) == 0
    return out


def test_toy_task_runs_through_finetune_evaluate_predict(toy, toy_run, tmp_path):
    out = toy_run
    info = json.loads((out / "best" / "xlmr_task.json").read_text())
    assert info == {"task": "toy_negation", "options": {}, "max_length": 128, "stride": 32}
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert sum(losses[-5:]) < sum(losses[:5])  # it learns
    trained = json.loads((out / "results.json").read_text())["languages"]["en"]["accuracy"]
    assert trained >= 0.8, trained
    assert "of 40 wrong" in (out / "report.md").read_text()  # the task's own report

    # evaluate: the saved model scores the test set exactly as finetune did
    assert main(["evaluate", "--model", str(out / "best"), "--test", f"en={toy / 'toy_test.txt'}",
                 "--out", str(tmp_path / "eval"), "--threads", "1"]) == 0
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["languages"]["en"]["accuracy"] == trained

    # predict: one JSON line per input line in the task's own shape; a blank line never reaches the model
    texts = [line.split("\t")[1] for line in (toy / "toy_test.txt").read_text().splitlines()]
    (tmp_path / "in.txt").write_text("\n".join(texts[:5] + ["", *texts[5:]]) + "\n", encoding="utf-8")
    assert main(["predict", "--model", str(out / "best"), "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "pred.jsonl")]) == 0
    preds = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert preds[5] == {"text": "", "negated": None, "p": None}
    del preds[5]
    assert [p["text"] for p in preds] == texts
    assert all(set(p) == {"text", "negated", "p"} and (p["p"] > 0.5) == p["negated"] for p in preds)
    gold = [line.split("\t")[0] == "negated" for line in (toy / "toy_test.txt").read_text().splitlines()]
    assert sum(p["negated"] == g for p, g in zip(preds, gold)) / len(gold) == trained


def test_toy_task_is_served(toy_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from xlmr.serve import ServeConfig, create_app

    best = toy_run / "best"
    with TestClient(create_app(ServeConfig(model=str(best), max_batch=4))) as c:
        assert c.get("/healthz").json()["task"] == "toy_negation"
        got = c.post("/v1/predict", json={"texts": ["we will not go", " "]}).json()["predictions"]
    assert set(got[0]) == {"text", "negated", "p"} and got[1] == {"text": " ", "negated": None, "p": None}
