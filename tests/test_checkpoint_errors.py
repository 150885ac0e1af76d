"""Bad checkpoints give one clear line and CLI exit code 2."""

import json
import subprocess
import sys

import pytest
import torch

import xlmr
from xlmr.cli import main
from xlmr.model import Config, Model


def tiny_checkpoint(tmp_path, **kw):
    cfg = Config(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20,
                 max_position_embeddings=40, **kw)
    d = tmp_path / "ckpt"
    xlmr.save(Model(cfg, "token"), d)
    return d


def cli_error(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("xlmr: error: "), err
    return err


def edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))


def test_truncated_safetensors(tmp_path, capsys):
    d = tiny_checkpoint(tmp_path)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    err = cli_error(capsys, "info", str(d))
    assert "model.safetensors" in err and "not a valid safetensors file" in err


def test_missing_config_field(tmp_path, capsys):
    d = tiny_checkpoint(tmp_path)
    edit_config(d, hidden_size=None)
    err = cli_error(capsys, "info", str(d))
    assert "config.json" in err and "missing required field 'hidden_size'" in err


def test_ill_typed_config_field(tmp_path, capsys):
    d = tiny_checkpoint(tmp_path)
    edit_config(d, num_hidden_layers="one")
    err = cli_error(capsys, "info", str(d))
    assert "'num_hidden_layers' must be int" in err and "'one'" in err


def test_invalid_json(tmp_path, capsys):
    d = tiny_checkpoint(tmp_path)
    (d / "config.json").write_text('{\n  "model_type": "bert",\n  oops\n}')
    err = cli_error(capsys, "info", str(d))
    assert "line 3" in err


def test_shapes_disagree_with_config(tmp_path, capsys):
    d = tiny_checkpoint(tmp_path)
    edit_config(d, intermediate_size=24)
    err = cli_error(capsys, "info", str(d))
    assert "intermediate.dense" in err and "(20" in err and "(24" in err and "config implies" in err


def test_unknown_model_type(tmp_path, capsys):
    d = tiny_checkpoint(tmp_path)
    edit_config(d, model_type="gpt2")
    err = cli_error(capsys, "info", str(d))
    assert "unknown model_type 'gpt2'" in err


def test_unknown_position_embedding_type(tmp_path, capsys):
    d = tiny_checkpoint(tmp_path)
    edit_config(d, position_embedding_type="alibi")
    err = cli_error(capsys, "info", str(d))
    assert "position_embedding_type 'alibi' is not known" in err


def test_missing_and_unexpected_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    d = tiny_checkpoint(tmp_path)
    state = load_file(d / "model.safetensors")
    state.pop("roberta.encoder.layer.0.output.dense.bias")
    save_file(state, d / "model.safetensors")
    with pytest.raises(xlmr.XlmrError, match="missing key 'roberta.encoder.layer.0.output.dense.bias'"):
        xlmr.load(d)
    state["roberta.encoder.layer.0.output.dense.bias"] = torch.zeros(16)
    state["roberta.encoder.layer.0.extra.weight"] = torch.zeros(2)
    save_file(state, d / "model.safetensors")
    with pytest.raises(xlmr.XlmrError, match="unexpected key 'roberta.encoder.layer.0.extra.weight'"):
        xlmr.load(d)


def test_missing_directory_and_offline_hub_name(tmp_path, capsys):
    err = cli_error(capsys, "info", str(tmp_path / "nope"))
    assert "no such checkpoint directory" in err
    # A hub name without network: one line that names it, no traceback.
    proc = subprocess.run([sys.executable, "-m", "xlmr", "info", "xlm-roberta-base"], capture_output=True,
                          text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "xlm-roberta-base" in proc.stderr, proc.stderr


def test_pickled_bin_is_loaded_with_weights_only(tmp_path):
    d = tiny_checkpoint(tmp_path)
    model = xlmr.load(d)
    (d / "model.safetensors").unlink()
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    again = xlmr.load(d)
    ids = torch.tensor([[0, 5, 6, 2]])
    with torch.no_grad():
        assert torch.equal(again(ids), model(ids))
    # a pickle that would run code is refused
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, d / "pytorch_model.bin")
    with pytest.raises(xlmr.XlmrError, match="weights_only=True"):
        xlmr.load(d)


def test_convert_bin_to_safetensors_and_head(tmp_path, capsys):
    d = tiny_checkpoint(tmp_path)
    model = xlmr.load(d)
    (d / "model.safetensors").unlink()
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    assert main(["convert", str(d), str(tmp_path / "out"), "--head", "sequence", "--num-labels", "4"]) == 0
    out = xlmr.load(tmp_path / "out")
    assert out.head == "sequence" and out.config.num_labels == 4
    assert (tmp_path / "out" / "model.safetensors").is_file()
    a, b = model.encoder_model.state_dict(), out.encoder_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if "pooler" not in k)


def test_info_cli(tmp_path, capsys):
    d = tiny_checkpoint(tmp_path)
    assert main(["info", str(d)]) == 0
    out = capsys.readouterr().out
    assert "xlm-roberta (token head)" in out and "embeddings" in out and "total" in out


def test_saved_files_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        d = tiny_checkpoint(tmp_path)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in d.iterdir()}
    assert modes == {"config.json": 0o640, "model.safetensors": 0o640}, modes
