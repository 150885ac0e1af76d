"""Raw-text NER in scripts without spaces: words from the tokenizer, entities with exact character offsets."""

import json

import pytest
import torch

from multiscript import training_text
from serve_models import NER_LABELS
from xlmr import save
from xlmr.cli import main
from xlmr.model import Config, Model

ZH = "北京是中华人民共和国的首都。"
TH = "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย"
EN = "Angela  Merkel spoke in Paris"


@pytest.fixture(scope="module")
def ner_dir(tmp_path_factory):
    """A tiny random XLM-R NER model on a small SentencePiece vocabulary; its head favours B-PER,
    so that every word is tagged B-PER and so is an entity of its own."""
    from xlmr.tokenizer import Tokenizer
    from xlmr.tokenizer_train import train_sentencepiece

    d = tmp_path_factory.mktemp("rawner")
    lines = [s for sents in training_text().values() for s in sents]
    (d / "sentencepiece.bpe.model").write_bytes(train_sentencepiece(lines, 400, character_coverage=1.0, threads=1))
    tok = Tokenizer.from_pretrained(d)
    tok.save(d)
    torch.manual_seed(0)
    cfg = Config(model_type="xlm-roberta", vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                 num_attention_heads=4, intermediate_size=37, max_position_embeddings=130, type_vocab_size=1,
                 pad_token_id=tok.pad_token_id, id2label=dict(enumerate(NER_LABELS)))
    model = Model(cfg, "token").eval()
    with torch.no_grad():
        model.classifier.bias[NER_LABELS.index("B-PER")] = 10.0
    save(model, d)
    info = {"task": "ner", "options": {"scheme": "auto"}, "max_length": 128, "stride": 32}
    (d / "xlmr_task.json").write_text(json.dumps(info), encoding="utf-8")
    return d


def check_entities(text: str, entities: list[dict]) -> None:
    """Every entity slices the input exactly; with one entity per word, they tile its non-space characters."""
    assert len(entities) > 1
    for e in entities:
        assert text[e["start"]:e["end"]] == e["text"] and e["text"].strip() == e["text"] != ""
    assert [e["start"] for e in entities] == sorted(e["start"] for e in entities)
    assert "".join(e["text"] for e in entities) == "".join(text.split())


def predict_lines(ner_dir, tmp_path, words: str) -> list[dict]:
    inp, out = tmp_path / "in.txt", tmp_path / f"out-{words}.jsonl"
    inp.write_text(f"{ZH}\n{TH}\n{EN}\n", encoding="utf-8")
    assert main(["predict", "--model", str(ner_dir), "--input", str(inp), "--output", str(out), "--threads", "1",
                 "--words", words]) == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_zh_and_th_raw_text_gets_entities_with_exact_offsets_in_predict_and_serve(ner_dir, tmp_path):
    from fastapi.testclient import TestClient

    from xlmr.serve import ServeConfig, create_app

    split = predict_lines(ner_dir, tmp_path, "split")
    assert [len(r["entities"]) for r in split[:2]] == [1, 1]  # whitespace words: the whole sentence is one word
    raw = predict_lines(ner_dir, tmp_path, "tokenizer")
    for text, r in zip((ZH, TH), raw):
        assert r["text"] == text
        check_entities(text, r["entities"])
    assert raw[2] == split[2]  # text with spaces: the same words as whitespace splitting
    assert [e["text"] for e in raw[2]["entities"]] == ["Angela", "Merkel", "spoke", "in", "Paris"]
    cfg = ServeConfig(model=str(ner_dir), words="tokenizer", max_batch=4)
    with TestClient(create_app(cfg)) as c:
        r = c.post("/v1/predict", json={"texts": [ZH, TH, EN]})
    assert r.status_code == 200 and r.json()["predictions"] == raw
