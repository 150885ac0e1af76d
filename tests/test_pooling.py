"""The sequence head's pooling: "cls" (transformers' heads) and "mean" (masked mean, then the classifier)."""

import json

import pytest
import torch

import xlmr
from xlmr.model import Config, Model

from helpers import TINY, hf_config, padded_batch

T = pytest.importorskip("transformers")


def tiny(family: str, **kw) -> Config:
    fam = dict(model_type="bert", type_vocab_size=2, pad_token_id=0) if family == "bert" else {}
    return Config(**{**TINY, **fam, "id2label": {0: "a", 1: "b", 2: "c"}, **kw})


@pytest.mark.parametrize("family", ["bert", "xlm-roberta"])
def test_mean_pooling_is_the_masked_mean_then_the_classifier(family):
    torch.manual_seed(0)
    model = Model(tiny(family, classifier_pooling="mean"), "sequence").eval()
    ids, mask = padded_batch(model.config.pad_token_id)
    with torch.no_grad():
        got = model(ids, mask)
        hidden = model.encoder_model(ids, mask)  # (B, T, D)
    rows = []
    for b in range(len(ids)):  # by hand: average the kept positions one by one
        kept = [hidden[b, t] for t in range(ids.shape[1]) if mask[b, t] == 1]
        mean = sum(kept) / len(kept)
        if family == "bert":  # dropout (off in eval) -> linear
            rows.append(model.classifier.weight @ mean + model.classifier.bias)
        else:  # RoBERTa's head on the mean: dense -> tanh -> out_proj
            head = model.classifier
            rows.append(head.out_proj.weight @ torch.tanh(head.dense.weight @ mean + head.dense.bias)
                        + head.out_proj.bias)
    torch.testing.assert_close(got, torch.stack(rows), rtol=0, atol=2e-6)
    assert not hasattr(model.encoder_model, "pooler") or model.encoder_model.pooler is None


def test_mean_pooling_ignores_padding():
    torch.manual_seed(0)
    model = Model(tiny("bert", classifier_pooling="mean"), "sequence").eval()
    ids, mask = padded_batch(0, lengths=(5, 2))
    wider = torch.cat([ids, torch.full((2, 7), 0)], 1), torch.cat([mask, torch.zeros(2, 7, dtype=torch.long)], 1)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask), model(*wider), rtol=0, atol=1e-6)
        assert not torch.allclose(model(ids, mask), model(ids), atol=1e-3)  # the mask matters


def test_mean_head_equals_transformers_encoder_then_mean(tmp_path):
    torch.manual_seed(0)
    hf = T.BertModel(hf_config("bert"), add_pooling_layer=False).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = xlmr.load(tmp_path / "hf", head="sequence", num_labels=3)  # no pooler: mean by default
    assert ours.config.classifier_pooling == "mean"
    ids, mask = padded_batch(0)
    with torch.no_grad():
        h = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask[..., None].float()
        ref = ((h * m).sum(1) / m.sum(1)) @ ours.classifier.weight.T + ours.classifier.bias
        diff = (ours(ids, mask) - ref).abs().max().item()
    assert diff <= 1e-5, diff


def test_default_pooling_follows_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    T.BertModel(hf_config("bert")).save_pretrained(tmp_path / "pooler")
    T.BertModel(hf_config("bert"), add_pooling_layer=False).save_pretrained(tmp_path / "bare")
    T.XLMRobertaModel(hf_config("xlm-roberta"), add_pooling_layer=False).save_pretrained(tmp_path / "xlmr")
    assert xlmr.load(tmp_path / "pooler", head="sequence").config.classifier_pooling == "cls"
    assert xlmr.load(tmp_path / "bare", head="sequence").config.classifier_pooling == "mean"
    assert xlmr.load(tmp_path / "xlmr", head="sequence").config.classifier_pooling == "cls"
    assert xlmr.load(tmp_path / "bare", head="sequence", classifier_pooling="cls").encoder_model.pooler is not None


def test_saved_config_records_pooling_and_transformers_refuses_mean(tmp_path):
    torch.manual_seed(0)
    mean = Model(tiny("bert", classifier_pooling="mean"), "sequence").eval()
    xlmr.save(mean, tmp_path / "mean")
    d = json.loads((tmp_path / "mean" / "config.json").read_text())
    assert (d["classifier_pooling"], d["model_type"], d["family"]) == ("mean", "xlmr", "bert")
    back = xlmr.load(tmp_path / "mean")
    assert back.config.classifier_pooling == "mean"
    ids, mask = padded_batch(0)
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask), mean(ids, mask), rtol=0, atol=0)
    with pytest.raises(Exception):  # no transformers class: refused, never run with a random pooler
        T.AutoModelForSequenceClassification.from_pretrained(tmp_path / "mean")
    with pytest.raises(xlmr.XlmrError, match="pools 'mean'"):
        xlmr.export_hf(mean, tmp_path / "hf")
    xlmr.save(Model(tiny("bert"), "sequence"), tmp_path / "cls")  # cls: an ordinary HF checkpoint
    d = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert (d["classifier_pooling"], d["model_type"]) == ("cls", "bert")
    xlmr.save(Model(tiny("bert"), "token"), tmp_path / "token")  # other heads leave it to the next load
    assert "classifier_pooling" not in json.loads((tmp_path / "token" / "config.json").read_text())


def test_bad_pooling_in_config_is_one_line(tmp_path):
    xlmr.save(Model(tiny("bert"), "sequence"), tmp_path / "c")
    d = json.loads((tmp_path / "c" / "config.json").read_text())
    d["classifier_pooling"] = "max"
    (tmp_path / "c" / "config.json").write_text(json.dumps(d))
    with pytest.raises(xlmr.XlmrError, match="classifier_pooling 'max' is not one of cls, mean"):
        xlmr.load(tmp_path / "c")
