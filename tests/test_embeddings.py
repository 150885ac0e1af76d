"""Sentence embeddings (xlmr.embed, `xlmr embed`, /v1/embeddings), retrieval evaluation and mining,
and embedding training (in-batch negatives, distillation) on tiny random models."""

import json
import shutil

import numpy as np
import pytest
import torch

from helpers import hf_config
from xlmr.cli import main

TEXTS = ["Hello world .", "a", "The quick brown fox jumps over the lazy dog again and again .", "", "Zoë's café",
         "one two three four five six", "x y"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def hf_encoder(family: str, directory, minilm_dir):
    """A tiny random HF encoder (BertModel / XLMRobertaModel) saved with the MiniLM tokenizer."""
    import transformers as T

    vocab = len(json.loads((minilm_dir / "tokenizer.json").read_text())["model"]["vocab"])
    torch.manual_seed(0)
    cls = {"bert": T.BertModel, "xlm-roberta": T.XLMRobertaModel}[family]
    # pad id 0 is the MiniLM tokenizer's [PAD]; XLM-R's positions then count from 1
    model = cls(hf_config(family, vocab_size=vocab, pad_token_id=0, max_position_embeddings=130)).eval()
    model.save_pretrained(directory)
    for name in TOKENIZER_FILES:
        shutil.copyfile(minilm_dir / name, directory / name)
    return model


@pytest.fixture(scope="module")
def encoders(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("enc")
    return {f: (root / f, hf_encoder(f, root / f, minilm_dir)) for f in ("bert", "xlm-roberta")}


def hf_mean(model, directory, texts, prefix=""):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(directory))
    b = tok([prefix + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**b).last_hidden_state
    m = b["attention_mask"][..., None].float()
    return ((h * m).sum(1) / m.sum(1)).numpy(), h, b["attention_mask"]


@pytest.mark.parametrize("family", ["bert", "xlm-roberta"])
def test_mean_pooled_embeddings_equal_hf(encoders, family):
    import xlmr

    directory, hf = encoders[family]
    ref, h, mask = hf_mean(hf, directory, TEXTS, prefix="query: ")
    # a small token budget: several length-sorted batches, answered in input order
    got = xlmr.embed(TEXTS, model=str(directory), prefix="query: ", max_tokens=40)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    unit = xlmr.embed(TEXTS, model=str(directory), prefix="query: ", normalize=True)
    np.testing.assert_allclose(unit, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5, rtol=0)
    cls = xlmr.embed(TEXTS, model=str(directory), prefix="query: ", pooling="cls")
    np.testing.assert_allclose(cls, h[:, 0].numpy(), atol=1e-5, rtol=0)
    top = xlmr.embed(TEXTS, model=str(directory), prefix="query: ", pooling="max")
    np.testing.assert_allclose(top, h.masked_fill(mask[..., None] == 0, -1e9).amax(1).numpy(), atol=1e-5, rtol=0)


def test_onnx_backends_match_torch(encoders):
    pytest.importorskip("onnxruntime")
    from xlmr.embeddings import Embedder

    directory, _ = encoders["bert"]
    ref = Embedder(str(directory))(TEXTS, True)
    fp32 = Embedder(str(directory), backend="onnx")(TEXTS, True)
    int8 = Embedder(str(directory), backend="onnx", quantize="int8")(TEXTS, True)
    assert np.abs(fp32 - ref).max() < 1e-4
    assert (int8 * ref).sum(1).min() > 0.99  # cosine to fp32 of every row


def test_embed_cli_writes_npy_and_jsonl(encoders, tmp_path, capsys):
    import xlmr

    directory, _ = encoders["bert"]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert main(["embed", "--model", str(directory), "--input", str(src), "--output", str(tmp_path / "v.npy"),
                 "--normalize", "--threads", "1"]) == 0
    vecs = np.load(tmp_path / "v.npy")
    np.testing.assert_allclose(vecs, xlmr.embed(TEXTS, model=str(directory), normalize=True), atol=1e-6)
    assert main(["embed", "--model", str(directory), "--input", str(src), "--output", str(tmp_path / "v.jsonl"),
                 "--pooling", "cls"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(len(TEXTS))) and len(rows[0]["embedding"]) == 32
    assert main(["embed", "--model", str(directory), "--input", str(src), "--output", str(tmp_path / "v.csv")]) == 2
    assert "must end in .npy or .jsonl" in capsys.readouterr().err


# -- search and mining ------------------------------------------------------------------------------


def test_block_search_equals_brute_force_and_margin_beats_hubs():
    from xlmr.search import knn, mine, prf

    rng = np.random.default_rng(0)
    q, x = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(70, 8)).astype(np.float32)
    s, i = knn(q, x, 3, block=16)  # blocks of 16 queries x 16 keys
    full = q @ x.T
    np.testing.assert_array_equal(i, np.argsort(-full, axis=1)[:, :3])
    np.testing.assert_allclose(s, np.sort(full, axis=1)[:, ::-1][:, :3], rtol=1e-6)
    # 6 sources share a direction c; the "hub" target c is nearer to every source (cos 0.8) than its
    # translation (0.7): nearest neighbours mine nothing right, the ratio margin discounts the hub
    e = np.eye(16, dtype=np.float32)
    src = np.stack([0.8 * e[15] + 0.6 * e[i] for i in range(6)])
    tgt = np.stack([0.5 * e[15] + 0.5 * e[i] + 0.5 ** 0.5 * e[6 + i] for i in range(6)] + [e[15]])
    gold = {(i, i) for i in range(6)}
    nn = prf(mine(src, tgt, margin=False).pairs, gold)
    margin = prf(mine(src, tgt, k=3, margin=True).pairs, gold)
    assert nn["f1"] == 0.0 and margin == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert margin["f1"] > nn["f1"], (margin, nn)


@pytest.fixture(scope="module")
def parallel(tmp_path_factory):
    """Two tiny 'languages' of parallel files, a training TSV, and the bad files."""
    root = tmp_path_factory.mktemp("par")
    words = "red green blue cat dog house tree river stone bird fish book".split()
    rng = np.random.default_rng(1)
    for lang in ("aaa", "bbb"):
        d = root / lang
        d.mkdir()
        rows = [" ".join(rng.choice(words, 4)) for _ in range(12)]
        (d / f"{lang}-eng.{lang}").write_text("\n".join(r.upper() for r in rows) + "\n", encoding="utf-8")
        (d / f"{lang}-eng.eng").write_text("\n".join(rows) + "\n", encoding="utf-8")
    pairs = [" ".join(rng.choice(words, 3)) for _ in range(48)]
    (root / "train.tsv").write_text("".join(f"{p.upper()}\t{p}\n" for p in pairs), encoding="utf-8")
    bad = root / "bad"
    bad.mkdir()
    (bad / "ccc-eng.ccc").write_text("a\nb\nc\n", encoding="utf-8")
    (bad / "ccc-eng.eng").write_text("a\nb\n", encoding="utf-8")
    (bad / "ddd-eng.ddd").write_text("a\n\nc\n", encoding="utf-8")
    (bad / "ddd-eng.eng").write_text("a\nb\nc\n", encoding="utf-8")
    return root


def test_evaluate_retrieval_per_language_and_average(encoders, parallel, tmp_path):
    directory, _ = encoders["bert"]
    out = tmp_path / "ev"
    assert main(["evaluate", "--task", "retrieval", "--model", str(directory), "--prefix", "query: ", "--test",
                 str(parallel / "aaa"), f"bbb={parallel / 'bbb' / 'bbb-eng.bbb'}", "--out", str(out),
                 "--threads", "1"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["languages"]) == ["aaa", "bbb"]
    for m in res["languages"].values():
        assert m["pairs"] == 12 and 0 <= m["src2tgt"] <= 1 and 0 <= m["margin_f1"] <= 1
    avg = np.mean([m["src2tgt"] for m in res["languages"].values()])
    assert res["average"]["src2tgt"] == pytest.approx(avg)


@pytest.mark.parametrize("name, words", [("ccc", "3 lines, but"), ("ddd", ":2: empty line")])
def test_bad_parallel_files_are_one_line_errors(encoders, parallel, tmp_path, capsys, name, words):
    directory, _ = encoders["bert"]
    code = main(["evaluate", "--task", "retrieval", "--model", str(directory), "--test",
                 f"x={parallel / 'bad' / f'{name}-eng.{name}'}", "--out", str(tmp_path / name)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0] and f"{name}-eng.{name}" in err[0], err


def losses(out):
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_in_batch_negatives_training_loss_falls(encoders, parallel, tmp_path):
    directory, _ = encoders["bert"]
    out = tmp_path / "mnrl"
    assert main(["finetune", "--task", "retrieval", "--model", str(directory), "--train", str(parallel / "train.tsv"),
                 "--test", str(parallel / "aaa"), "--out", str(out), "--epochs", "8", "--batch-size", "16",
                 "--lr", "3e-3", "--warmup", "0", "--log-every", "3", "--no-progress", "--threads", "1",
                 "--prefix", "query: "]) == 0
    curve = losses(out)
    assert curve[-1] < 0.5 * curve[0], curve
    info = json.loads((out / "best" / "xlmr_task.json").read_text())
    assert info["task"] == "retrieval" and info["options"] == {"pooling": "mean", "prefix": "query: "}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["aaa"]["pairs"] == 12


def test_distillation_loss_falls(encoders, parallel, tmp_path):
    student, _ = encoders["bert"]
    teacher, _ = encoders["xlm-roberta"]  # the same width (32): its vectors are the student's targets
    out = tmp_path / "distil"
    assert main(["finetune", "--task", "retrieval", "--model", str(student), "--teacher", str(teacher),
                 "--train", str(parallel / "train.tsv"), "--out", str(out), "--epochs", "8", "--batch-size", "16",
                 "--lr", "3e-3", "--warmup", "0", "--log-every", "3", "--no-progress", "--threads", "1"]) == 0
    curve = losses(out)
    assert curve[-1] < 0.5 * curve[0], curve


# -- serving ----------------------------------------------------------------------------------------


def test_v1_embeddings_openai_shape_and_size_limit(encoders):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import xlmr
    from xlmr.serve import ServeConfig, create_app

    directory, _ = encoders["bert"]
    with TestClient(create_app(ServeConfig(model=str(directory), max_texts=4, max_chars=50))) as c:
        r = c.post("/v1/embeddings", json={"input": ["Hello world .", "x y"], "model": "tiny"})
        assert r.status_code == 200
        body = r.json()
        assert body["object"] == "list" and body["model"] == str(directory)
        assert [(d["object"], d["index"]) for d in body["data"]] == [("embedding", 0), ("embedding", 1)]
        ref = xlmr.embed(["Hello world .", "x y"], model=str(directory), normalize=True)
        np.testing.assert_allclose([d["embedding"] for d in body["data"]], ref, atol=1e-5)
        assert body["usage"] == {"prompt_tokens": 5 + 4, "total_tokens": 9}  # [CLS] hello world . [SEP], [CLS] x y [SEP]
        one = c.post("/v1/embeddings", json={"input": "x y"}).json()
        assert len(one["data"]) == 1
        r = c.post("/v1/embeddings", json={"input": ["a"] * 5})
        assert r.status_code == 413 and r.json() == {"error": "too many texts: 5 > 4 per request"}
        r = c.post("/v1/embeddings", json={"input": ["a" * 51]})
        assert r.status_code == 413 and "input[0] is too long" in r.json()["error"]
        r = c.post("/v1/predict", json={"texts": ["a"]})
        assert r.status_code == 404 and "/v1/embeddings" in r.json()["error"]
