"""Relation extraction (xlmr/tasks/relation.py): readers and their errors, exact metrics, windows around
the entities, the entity-start head, and finetune -> evaluate -> predict -> serve on a tiny BERT with
the MiniLM tokenizer (the `data` fixture of test_finetune)."""

import json
import random
import warnings

import numpy as np
import pytest
import torch

from test_finetune import FAST, data  # noqa: F401 (a fixture: the tiny BERT with the MiniLM tokenizer)
from xlmr.cli import main
from xlmr.errors import XlmrError
from xlmr.tasks import get_task
from xlmr.tasks.relation import mark, relation_scores, window

PEOPLE = ["Anna Berg", "Peter", "Maria Rossi", "John", "Ingrid Novak"]
ORGS = ["Acme", "the Red Cross", "FIFA", "Siemens", "Oxfam"]
PLACES = ["Paris", "Berlin", "Oslo", "Lima"]
# (label, template): the words between the entities decide the relation and its direction
PATTERNS = [("per:employee_of(e1,e2)", "<e1> {p} </e1> works for <e2> {o} </e2> ."),
            ("per:employee_of(e2,e1)", "<e2> {o} </e2> employs <e1> {p} </e1> ."),
            ("org:city_of_headquarters(e1,e2)", "<e1> {o} </e1> is based in <e2> {c} </e2> ."),
            ("no_relation", "<e1> {p} </e1> and <e2> {c} </e2> were mentioned .")]


def kbp37(rows) -> str:
    return "".join(f'{i}\t"{text}"\n{label}\n\n\n' for i, (text, label) in enumerate(rows))


def sample(rng, n):
    rows = []
    for _ in range(n):
        label, template = rng.choice(PATTERNS)
        rows.append((template.format(p=rng.choice(PEOPLE), o=rng.choice(ORGS), c=rng.choice(PLACES)), label))
    return rows


@pytest.fixture(scope="module")
def re_run(data):  # noqa: F811 (the fixture imported above)
    rng = random.Random(0)
    for split, n in (("train", 80), ("dev", 16), ("test", 16)):
        (data / f"re_{split}.txt").write_text(kbp37(sample(rng, n)), encoding="utf-8")
    out = data / "re_out"
    assert main(["finetune", "--model", str(data / "tiny"), "--task", "relation", "--train", str(data / "re_train.txt"),
                 "--dev", str(data / "re_dev.txt"), "--test", f"en={data / 're_test.txt'}", "--out", str(out),
                 "--epochs", "4", *FAST]) == 0
    return out


def test_readers_and_their_errors(tmp_path):
    task = get_task("relation")
    f = tmp_path / "a.txt"
    f.write_text(kbp37([("<e1> Anna </e1> works for <e2> Acme </e2> .", "per:employee_of(e1,e2) ")]), encoding="utf-8")
    [ex] = task.read(f)
    assert (ex.text, ex.label, ex.line, ex.label_line) == ("<e1> Anna </e1> works for <e2> Acme </e2> .",
                                                           "per:employee_of(e1,e2)", 1, 2)
    j = tmp_path / "b.jsonl"
    j.write_text(json.dumps({"text": "Anna works for Acme.", "e1": [0, 4], "e2": [15, 19], "label": "x"}) + "\n"
                 + json.dumps({"text": "<e2> Acme </e2> hired <e1> Anna </e1>", "label": "y"}) + "\n", encoding="utf-8")
    assert [e.text for e in task.read(j)] == ["<e1> Anna </e1> works for <e2> Acme </e2>.",
                                             "<e2> Acme </e2> hired <e1> Anna </e1>"]
    assert mark("ab", (0, 1), (1, 2)) == "<e1> a </e1><e2> b </e2>"
    bad = {"no marker": ('"Anna works for <e2> Acme </e2>"\nx\n', "a.txt:1: no <e1> marker"),
           "unclosed": ('1\t"ok <e1> a </e1> <e2> b </e2>"\nx\n\n2\t"<e1> Anna works for <e2> Acme </e2>"\nx\n',
                        "a.txt:4: <e1> without </e1>"),
           "no label": ('"<e1> a </e1> <e2> b </e2>"\n', "a.txt:1: a sentence without a relation label")}
    for name, (text, msg) in bad.items():
        f.write_text(text, encoding="utf-8")
        with pytest.raises(XlmrError, match=msg):
            task.read(f)
    j.write_text(json.dumps({"text": "Anna", "e1": [0, 4], "e2": [2, 9], "label": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(XlmrError, match=r"b.jsonl:1: 'e2' span \[2, 9\] is not inside the text"):
        task.read(j)


def test_metrics_exact_on_a_hand_made_fixture():
    gold = ["A(e1,e2)", "A(e1,e2)", "A(e2,e1)", "B(e1,e2)", "no_relation", "no_relation"]
    pred = ["A(e1,e2)", "A(e2,e1)", "A(e2,e1)", "no_relation", "B(e1,e2)", "no_relation"]
    m = relation_scores(gold, pred)
    # TP 2 (A(e1,e2), A(e2,e1)); predicted non-negative 4; gold non-negative 4; the direction counts
    assert (m["micro_precision"], m["micro_recall"], m["micro_f1"]) == (0.5, 0.5, 0.5)
    assert m["accuracy"] == 3 / 6
    # the RELX script's F1: relation A (both directions) P = R = 2/3; relation B 0; their mean
    assert m["relx_f1"] == (2 / 3 + 0.0) / 2
    from sklearn.metrics import f1_score  # the reference script's own formula, label by label

    ref = [f1_score(gold, pred, average="micro", labels=pair) for pair in (["A(e1,e2)", "A(e2,e1)"], ["B(e1,e2)"])]
    assert m["relx_f1"] == pytest.approx(sum(ref) / 2, abs=1e-12)
    assert m["per_relation"]["A(e2,e1)"] == {"f1": 2 * 0.5 * 1 / 1.5, "precision": 0.5, "recall": 1.0, "support": 1}
    assert m["per_relation"]["B(e1,e2)"] == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "support": 1}
    m = relation_scores(["x", "no_relation"], ["no_relation", "no_relation"])
    assert (m["micro_f1"], m["accuracy"]) == (0.0, 0.5)


def test_window_keeps_both_entities():
    assert window(10, [(2, 3), (5, 6)], 20) == [(0, 10)]
    assert window(100, [(40, 42), (50, 52)], 20) == [(37, 57)]  # centred: 3 tokens before 40..52, 4 after
    assert window(100, [(0, 2), (10, 12)], 20) == [(0, 20)]  # no room on the left: all on the right
    assert window(100, [(10, 12), (60, 62)], 10) == [(10, 15), (58, 63)]  # far apart: the gap's middle dropped
    assert window(100, [(10, 30), (60, 62)], 10) is None  # the entities alone need 24


def test_long_sentence_is_windowed_around_the_entities(data):  # noqa: F811
    from xlmr.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(data / "tiny")
    task = get_task("relation")
    task.set_labels(["x"])
    from xlmr.checkpoint import load

    task.prepare_model(load(data / "tiny", head="token", id2label=task.id2label), tok)
    filler = " ".join(["word"] * 60)
    from xlmr.tasks.relation import RelationExample

    examples = [RelationExample(f"{filler} <e1> Anna </e1> met <e2> Acme </e2> {filler}", "x", "t.txt", 1),
                RelationExample(f"<e1> Anna </e1> {filler} {filler} <e2> Acme </e2>", "x", "t.txt", 2)]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        feats = task.encode(examples, tok, max_length=32)
    assert "1 windowed around their entities, 1 with the entities further apart" in str(w[0].message)
    for f in feats:
        assert len(f) == 32
        words = tok.decode(f.input_ids, skip_special_tokens=False)
        assert "<e1> anna </e1>" in words and "<e2> acme </e2>" in words, words
    before, _, after = tok.decode(feats[0].input_ids).partition("anna met acme")
    assert before.split().count("word") == after.split().count("word") == 11  # centred: context on both sides
    with pytest.raises(XlmrError, match="t.txt:1: the two marked entities take"):
        task.encode(examples[:1], tok, max_length=8)


def test_finetune_evaluate_predict_and_reload(data, re_run, tmp_path):  # noqa: F811
    best = re_run / "best"
    info = json.loads((best / "xlmr_task.json").read_text())
    assert info["task"] == "relation" and info["options"]["markers"] == ["<e1>", "</e1>", "<e2>", "</e2>"]
    config = json.loads((best / "config.json").read_text())
    labels = sorted(label for label, _ in PATTERNS)
    assert list(config["id2label"].values()) == [f"<e1> {x}" for x in labels] + [f"<e2> {x}" for x in labels]
    vocab = len(json.loads((data / "tiny" / "tokenizer.json").read_text())["model"]["vocab"])
    assert config["vocab_size"] == vocab + 4  # four marker rows added and saved
    losses = [r["loss"] for r in map(json.loads, (re_run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert losses[-1] < losses[0] / 2
    trained = json.loads((re_run / "results.json").read_text())["languages"]["en"]
    assert trained["micro_f1"] > 0.5 and (re_run / "confusion_en.png").is_file()
    assert main(["evaluate", "--model", str(best), "--test", f"en={data / 're_test.txt'}", "--out",
                 str(tmp_path / "eval"), "--threads", "1"]) == 0
    again = json.loads((tmp_path / "eval" / "results.json").read_text())["languages"]["en"]
    assert again["micro_f1"] == trained["micro_f1"] and again["accuracy"] == trained["accuracy"]

    texts = [line.split("\t")[1].strip('"') for line in (data / "re_test.txt").read_text().splitlines() if "\t" in line]
    (tmp_path / "in.txt").write_text("\n".join(texts + ["no markers here"]) + "\n", encoding="utf-8")
    assert main(["predict", "--model", str(best), "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "p.jsonl")]) == 0
    preds = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert preds[-1] == {"text": "no markers here", "relation": None, "error": "no <e1> marker (mark the entities "
                         "as <e1> … </e1> and <e2> … </e2>)"}
    gold = [line for line in (data / "re_test.txt").read_text().splitlines()[1::4]]
    assert sum(p["relation"] == g for p, g in zip(preds, gold)) / len(gold) == trained["accuracy"]
    p = preds[0]
    assert p["text"][p["e1"]["start"]:p["e1"]["end"]] == p["e1"]["text"] and "<" not in p["e1"]["text"]

    # save, load, same predictions: a copy re-saved by xlmr loads back to the same probabilities
    from xlmr.checkpoint import load, save
    from xlmr.predict import Predictor
    from xlmr.tokenizer import Tokenizer

    save(load(best), tmp_path / "copy")
    Tokenizer.from_pretrained(best).save(tmp_path / "copy")
    (tmp_path / "copy" / "xlmr_task.json").write_text((best / "xlmr_task.json").read_text())
    assert Predictor(str(tmp_path / "copy"))(texts[:4]) == Predictor(str(best))(texts[:4]) == preds[:4]


def test_transformers_loads_the_encoder_and_the_markers(re_run):
    transformers = pytest.importorskip("transformers")
    best = re_run / "best"
    tok = transformers.AutoTokenizer.from_pretrained(best)
    text = "<e1> Anna </e1> works for <e2> Acme </e2> ."
    enc = tok(text, return_tensors="pt")
    ids = [tok.convert_tokens_to_ids(m) for m in ("<e1>", "</e1>", "<e2>", "</e2>")]
    assert all(ids.count(i) == 1 and i in enc.input_ids[0].tolist() for i in ids)  # one token each
    hf, loading = transformers.AutoModel.from_pretrained(best, add_pooling_layer=False, output_loading_info=True)
    assert not loading["missing_keys"] and hf.get_input_embeddings().weight.shape[0] == max(ids) + 1

    # The head loads as a token-classification head; the relation logits are xlmr's combination of its rows.
    from xlmr.predict import Predictor

    ours = Predictor(str(best))
    tc = transformers.AutoModelForTokenClassification.from_pretrained(best).eval()
    with torch.no_grad():
        rows = tc(**enc).logits[0]  # (T, 2C)
    row = enc.input_ids[0].tolist()
    logits = ours.task.combine(rows[[row.index(ids[0])]], rows[[row.index(ids[2])]])[0].numpy()
    probs = np.exp(logits - logits.max())
    got = ours([text])[0]["probs"]
    assert np.allclose(probs / probs.sum(), [got[x] for x in ours.task.labels], atol=1e-5)


def test_entity_start_head_is_a_linear_layer_on_the_concatenation(data):  # noqa: F811
    from xlmr.checkpoint import load
    from xlmr.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(data / "tiny")
    task = get_task("relation")
    task.set_labels(["a", "b", "c"])
    model = load(data / "tiny", head="token", id2label=task.id2label)
    task.prepare_model(model, tok)
    from xlmr.tasks.relation import RelationExample

    feats = task.encode([RelationExample("<e2> Acme </e2> hired <e1> Anna </e1> today", None)], tok)
    batch = task.collate(feats, tok.pad_token_id)
    with torch.no_grad():
        got = task.unbatch(model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]), batch)[0]
        h = model.encoder_model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])[0]  # (T, D)
        concat = torch.cat([h[batch["e1"][0]], h[batch["e2"][0]]])  # (2D,)
        W, b = model.classifier.weight, model.classifier.bias  # (2C, D), (2C,)
        linear = torch.cat([W[:3], W[3:]], dim=1) @ concat + b[:3] + b[3:]  # W: (C, 2D) on [h1; h2]
    assert np.allclose(got, linear.numpy(), atol=1e-6)
    assert tok.decode([feats[0].input_ids[feats[0].e1]], skip_special_tokens=False) == "<e1>"


def test_unseen_test_label_is_an_error_or_scored_as_no_relation(data, re_run, tmp_path, capsys):  # noqa: F811
    f = tmp_path / "odd.txt"
    f.write_text(kbp37([("<e1> Anna </e1> works for <e2> Acme </e2> .", "per:spouse(e1,e2)")]), encoding="utf-8")
    assert main(["evaluate", "--model", str(re_run / "best"), "--test", f"en={f}", "--out", str(tmp_path / "e")]) == 2
    assert "odd.txt:2: label 'per:spouse(e1,e2)' was not seen in training" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="scored as 'no_relation'"):
        assert main(["evaluate", "--model", str(re_run / "best"), "--test", f"en={f}", "--out", str(tmp_path / "e"),
                     "--unseen-labels", "outside"]) == 0


def test_relation_is_served(re_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from xlmr.serve import ServeConfig, create_app

    with TestClient(create_app(ServeConfig(model=str(re_run / "best"), max_batch=4))) as c:
        assert c.get("/healthz").json()["task"] == "relation"
        got = c.post("/v1/predict", json={"texts": ["<e1> Anna </e1> works for <e2> Acme </e2> .", "Anna <e1>"]})
        a, b = got.json()["predictions"]
        assert a["relation"] in a["probs"] and a["e2"]["text"] == "Acme"
        assert b == {"text": "Anna <e1>", "relation": None, "error": "<e1> without </e1>"}
        assert "showRelation" in c.get("/").text
