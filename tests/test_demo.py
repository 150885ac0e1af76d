"""`xlmr demo --quick` end to end: every stage's outputs exist and the numbers are finite and in range."""

import json
import math

import pytest

from xlmr.cli import main


@pytest.mark.slow
def test_demo_quick(tmp_path, capsys):
    pytest.importorskip("chatterbot_corpus")
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "zero-shot average" in printed and "xlmr serve" in printed
    for stage in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6"):
        assert f"=== {stage}" in printed
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    assert (out / "pretrain" / "loss.png").is_file() and (out / "pretrain" / "final" / "model.safetensors").is_file()
    runs = sorted(p.name for p in out.glob("finetune_*"))
    assert runs == ["finetune_no_pretraining", "finetune_pretrained", "finetune_pretrained_LoRA"]
    for run in runs:
        results = json.loads((out / run / "eval" / "results.json").read_text())
        langs = results["languages"]
        assert "english" in langs and len(langs) >= 5
        for lang, metrics in langs.items():
            if not isinstance(metrics, dict) or "accuracy" not in metrics:
                continue
            for key in ("accuracy", "macro_f1"):
                assert math.isfinite(metrics[key]) and 0.0 <= metrics[key] <= 1.0, (run, lang, key)
        assert list((out / run / "eval").glob("confusion_*.png"))
    predictions = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) >= 10
    for p in predictions:
        assert abs(sum(p["probs"].values()) - 1.0) < 1e-3 and p["label"] in p["probs"]
    assert (out / "zero_shot.md").read_text().count("|") > 20
