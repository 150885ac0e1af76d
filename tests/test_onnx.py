"""ONNX export: logits agree with PyTorch; the onnx and int8 back-ends give the same predictions."""

import json

import numpy as np
import pytest
import torch

from serve_models import tiny_finetuned, tiny_model

pytest.importorskip("onnxruntime")
from xlmr.onnx_export import TOLERANCE, export_onnx, load_backend, sample_inputs, session_for  # noqa: E402


@pytest.mark.parametrize("family", ["bert", "xlm-roberta"])
@pytest.mark.parametrize("task", ["classify", "ner"])
def test_onnx_matches_torch(tmp_path, task, family):
    src = tiny_finetuned(tmp_path / "model", task, family=family)
    result = export_onnx(str(src), str(tmp_path / "onnx"))
    assert result["max_diff"] <= TOLERANCE
    model = load_backend(src)
    session = session_for(tmp_path / "onnx" / "model.onnx")
    for batch in (1, 8):
        for length in (5, 300):
            x = sample_inputs(model, batch, length, seed=batch + length)
            with torch.no_grad():
                ref = model(**x).numpy()
            got = session.run(None, {k: v.numpy() for k, v in x.items()})[0]
            assert got.shape == ref.shape
            if task == "ner":  # padding positions are never read
                keep = x["attention_mask"].numpy().astype(bool)
                got, ref = got[keep], ref[keep]
            np.testing.assert_allclose(got, ref, atol=TOLERANCE, rtol=0)


def test_export_cli_and_backends_agree(tmp_path, minilm_dir):
    from xlmr.cli import main
    from xlmr.predict import Predictor

    src = tiny_finetuned(tmp_path / "ner", "ner", minilm_dir, favour="B-PER")
    out = tmp_path / "onnx"
    assert main(["export-onnx", "--model", str(src), "--out", str(out), "--quantize", "int8"]) == 0
    for name in ("model.onnx", "model.int8.onnx", "config.json", "tokenizer.json", "xlmr_task.json"):
        assert (out / name).is_file(), name
    texts = ["Angela Merkel visited Paris .", "Zoë   works at Siemens in München", "x"]
    ref = Predictor(str(src), device="cpu")(texts)
    for backend, quantize in (("onnx", "none"), ("onnx", "int8"), ("torch", "int8")):
        path = out if backend == "onnx" else src
        got = Predictor(str(path), backend=backend, quantize=quantize, device="cpu")(texts)
        assert [[(e["start"], e["end"], e["type"]) for e in r["entities"]] for r in got] == \
               [[(e["start"], e["end"], e["type"]) for e in r["entities"]] for r in ref], (backend, quantize)


def test_predict_cli_backend_option(tmp_path, minilm_dir):
    from xlmr.cli import main

    src = tiny_finetuned(tmp_path / "cls", "classify", minilm_dir)
    (tmp_path / "in.txt").write_text("a good film\nrain in Paris\n", encoding="utf-8")
    rows = {}
    for backend in ("torch", "onnx"):  # onnx from a torch directory exports on the fly
        out = tmp_path / f"{backend}.jsonl"
        assert main(["predict", "--model", str(src), "--input", str(tmp_path / "in.txt"), "--output", str(out),
                     "--backend", backend]) == 0
        rows[backend] = [json.loads(line) for line in out.read_text().splitlines()]
    for a, b in zip(rows["torch"], rows["onnx"]):
        assert a["label"] == b["label"]
        assert max(abs(a["probs"][k] - b["probs"][k]) for k in a["probs"]) < 1e-5


def test_onnx_errors_are_one_line(tmp_path):
    from xlmr import XlmrError

    src = tiny_finetuned(tmp_path / "cls", "classify")
    with pytest.raises(XlmrError, match="expected torch or onnx"):
        load_backend(src, backend="tensorrt")
    with pytest.raises(XlmrError, match="expected none or int8"):
        load_backend(src, quantize="int4")
    with pytest.raises(XlmrError, match="no such checkpoint"):
        export_onnx(str(tmp_path / "missing"), str(tmp_path / "out"))
