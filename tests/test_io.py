"""Atomic writes: whole files or none, with the mode a plain open() gives (the umask applies)."""

import os
import stat

import pytest

import xlmr
from xlmr.io import atomic_write, atomic_write_json, atomic_write_text
from xlmr.tasks import write_results


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_model_and_report_files_get_the_umask_mode(tmp_path, umask):
    model = xlmr.Model(xlmr.Config(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=40), "mlm")
    xlmr.save(model, tmp_path / "m")
    js, md = write_results(tmp_path / "eval", {"en": {"f1": 0.5}}, ["f1"], task="ner")
    expected = 0o666 & ~umask
    for path in (tmp_path / "m" / "config.json", tmp_path / "m" / "model.safetensors", js, md):
        assert mode(path) == expected, f"{path.name}: {oct(mode(path))} != {oct(expected)}"
    (tmp_path / "plain.txt").write_text("x")  # what a normal write gives, for comparison
    assert mode(tmp_path / "plain.txt") == expected


def test_atomic_write_replaces_whole_file_and_cleans_up_on_error(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_json(path, {"a": 1}, indent=2)
    assert path.read_text() == '{\n  "a": 1\n}\n'
    atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n"

    def fail(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "second\n"  # the old file is untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]  # no temporary file left


def test_atomic_write_keeps_the_suffix_for_writers_that_read_it(tmp_path):
    seen = []
    atomic_write(tmp_path / "plot.png", lambda tmp: (seen.append(tmp), open(tmp, "wb").close()))
    assert seen[0].endswith(".png") and os.path.dirname(seen[0]) == str(tmp_path)


def test_count_parameters_counts_tied_weights_once_as_transformers_does(tmp_path):
    T = pytest.importorskip("transformers")
    from helpers import hf_config

    from xlmr.io import count_parameters

    hf = T.XLMRobertaForMaskedLM(hf_config("xlm-roberta"))
    hf.save_pretrained(tmp_path / "hf")
    ours = xlmr.load(tmp_path / "hf")
    assert ours.mlm_head.decoder.weight is ours.encoder_model.embeddings.word_embeddings.weight  # tied
    count = count_parameters(ours)
    assert count.total == count.trainable == hf.num_parameters()
    for p in ours.encoder_model.parameters():
        p.requires_grad_(False)
    count = count_parameters(ours, part=lambda name: name.split(".")[0])
    head = sum(p.numel() for n, p in hf.named_parameters() if n.startswith("lm_head.") and "decoder" not in n)
    assert (count.total, count.trainable) == (hf.num_parameters(), head)
    assert count.parts == {"roberta": hf.num_parameters() - head, "lm_head": head}
