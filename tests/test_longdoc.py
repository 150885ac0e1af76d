"""Long documents in classify: windows over the whole text, pooled logits, the same in training and prediction."""

import json
import warnings

import numpy as np
import pytest
import torch

from serve_models import CLASSES, tiny_finetuned
from xlmr.batching import grouped_batches
from xlmr.cli import main
from xlmr.tasks import Classify, TextExample
from xlmr.tasks.base import softmax

WORDS = "the cat sat on a mat and he saw big red dog run to my old house in this town".split()


@pytest.fixture(scope="module")
def tok(minilm_dir):
    from xlmr.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(minilm_dir)


def document(n: int, seed: int = 0) -> str:
    """n words, each one subword of the MiniLM vocabulary (so n content tokens)."""
    rng = np.random.default_rng(seed)
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))


def sharpen(directory):
    """Mean pooling and a scaled-up random head, so that windows' logits differ by tenths, not by 1e-5."""
    from xlmr import load, save

    model = load(directory, classifier_pooling="mean")
    with torch.no_grad():
        model.classifier.weight.mul_(30.0)
    save(model, directory)


def test_every_window_of_a_3000_token_document_is_scored(tmp_path, tok, minilm_dir):
    """Predictor (options from xlmr_task.json) against windows cut here by plain arithmetic, each run alone."""
    from xlmr.predict import Predictor

    vocab = sorted((i, w) for w, i in tok.backend.get_vocab().items() if w.isascii() and w.isalpha() and len(w) > 2)
    text = " ".join(w for _, w in vocab[1000:4000])  # 3,000 different words, so that every window differs
    ids = tok.encode([text], max_length=None).input_ids[0]
    assert len(ids) == 3002  # [CLS] + 3000 + [SEP]
    d = tiny_finetuned(tmp_path / "m", "classify", str(minilm_dir))
    sharpen(d)
    size, step = 126, 126 - 32  # max_length 128 minus 2 specials; stride 32
    starts = list(range(0, 3000 - size + step, step))
    assert starts[-1] + size >= 3000 > starts[-2] + size and len(starts) == 32
    model = Predictor(str(d)).model
    with torch.no_grad():  # every window alone: no padding, no batching
        ref = torch.cat([model(torch.tensor([[ids[0]] + ids[1:-1][s:s + size] + [ids[-1]]])) for s in starts]).numpy()
    for pooling, want in (("mean", ref.mean(0)), ("max", ref.max(0))):
        info = {"task": "classify", "options": {"windows": True, "doc_pooling": pooling}, "max_length": 128,
                "stride": 32}
        (d / "xlmr_task.json").write_text(json.dumps(info))
        predictor = Predictor(str(d))
        feats = predictor.task.encode([TextExample(text)], tok, 128, 32)
        assert [f.window[0] for f in feats] == starts and feats[-1].window[1] == 3000
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no truncation warning with windows on
            (got,) = predictor([text])
        np.testing.assert_allclose([got["probs"][c] for c in CLASSES], softmax(want), atol=2e-6)
        assert got["label"] == CLASSES[int(want.argmax())]
    # windows score differently (so that a window left out would show), and truncation differs
    assert np.ptp(ref, axis=0).min() > 0.3 and np.abs(softmax(ref[0]) - softmax(ref.mean(0))).max() > 0.01


def test_training_pools_each_documents_windows_into_one_loss_term(tok):
    torch.manual_seed(0)
    from serve_models import tiny_model

    model = tiny_model("classify")
    task = Classify(windows=True, doc_pooling="mean")
    examples = [TextExample(document(300, 1), label="sports"), TextExample(document(20, 2), label="health"),
                TextExample(document(200, 3), label="sports")]
    task.set_labels(CLASSES)
    feats = task.encode(examples, tok, max_length=64, stride=16)
    per_doc = [sum(f.example == e for f in feats) for e in range(3)]
    assert per_doc == [7, 1, 4]  # windows of 62 content tokens, every 46
    plan = task.train_batches(feats, batch_size=8, seed=0, epoch=0)
    assert sorted(i for b in plan for i in b) == list(range(len(feats)))
    for b in plan:  # a document's windows never straddle two batches
        assert all(sum(feats[i].example == e for i in b) in (0, per_doc[e]) for e in range(3))
    batch = task.collate(feats, tok.pad_token_id)
    loss = task.training_loss(model, batch)
    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    doc = torch.tensor([f.example for f in feats])
    pooled = torch.stack([logits[doc == e].mean(0) for e in range(3)])
    want = torch.nn.functional.cross_entropy(pooled, torch.tensor([CLASSES.index(ex.label) for ex in examples]))
    assert abs(loss.item() - want.item()) < 1e-6  # (torch.testing would import torch.distributed: 8 s)


def test_grouped_batches_keep_groups_whole_and_cap_rows():
    groups = [[0, 1, 2], [3], [4, 5], [6, 7, 8, 9, 10]]
    lengths = [10] * 11
    plan = grouped_batches(groups, lengths, batch_size=4, seed=1)
    assert sorted(i for b in plan for i in b) == list(range(11))
    for b in plan:
        assert len(b) <= 4 or (len(b) == 5 and sorted(b) == groups[3])  # a group too big goes alone
    assert plan == grouped_batches(groups, lengths, batch_size=4, seed=1)


def test_doc_pooling_without_windows_is_a_one_line_error(tmp_path, capsys):
    train = tmp_path / "train.tsv"
    train.write_text("text\tlabel\nsome words\ta\n", encoding="utf-8")
    argv = ["finetune", "--model", str(tmp_path), "--task", "classify", "--train", str(train), "--doc-pooling", "mean"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("xlmr: error: --doc-pooling mean needs --windows: without windows, classify reads only the "
                   "first --max-length tokens of a text, so there is nothing to pool")


def test_windows_refuse_pairs_and_other_tasks(tok):
    from xlmr.errors import XlmrError
    from xlmr.finetune import FinetuneConfig

    task = Classify(windows=True)
    task.set_labels(["a", "b"])
    with pytest.raises(XlmrError, match=r"^t.tsv:3: --windows reads single texts, and this example has a text pair"):
        task.encode([TextExample("one", "two", "a", "t.tsv", 3)], tok)
    with pytest.raises(XlmrError, match=r"^--windows and --doc-pooling are classify options; ner always reads"):
        FinetuneConfig(task="ner", windows=True)
