"""Training checkpoints: resume under damage (pretrain and finetune), exact fine-tuning resume, and no
checkpoint written from diverged weights."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from test_finetune import FAST, data  # noqa: F401 (a fixture)
from test_pretrain import args as pre_args, prepared  # noqa: F401 (a fixture)
from xlmr import resume
from xlmr.cli import main


def _shard(ck: Path) -> Path:
    return next(ck.glob("*.distcp"))


def _truncate(ck: Path) -> None:
    f = _shard(ck)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _zero(ck: Path) -> None:
    f = ck / ".metadata"
    f.write_bytes(bytes(f.stat().st_size))


def _flip(ck: Path) -> None:  # 4 KiB of flipped bits in the middle of the tensor data: same size
    f = _shard(ck)
    b = bytearray(f.read_bytes())
    mid = len(b) // 2
    b[mid:mid + 4096] = bytes(x ^ 0xFF for x in b[mid:mid + 4096])
    f.write_bytes(bytes(b))


def _garble(ck: Path) -> None:
    f = ck / "trainer_state.json"
    text = f.read_text()
    mid = len(text) // 2
    f.write_text(text[:mid] + "#garbled#" + text[mid + 9:])  # same size: only the checksum tells


def _garble_rehashed(ck: Path) -> None:  # damage the manifest does not catch: the parse must
    _garble(ck)
    resume.write_manifest(ck)


def _zero_rehashed(ck: Path) -> None:
    _zero(ck)
    resume.write_manifest(ck)


DAMAGE = {  # how, and what the warning says
    "truncated": (_truncate, "bytes where the manifest records"),
    "zeroed": (_zero, ".metadata: contents do not match the sha256 in the manifest"),
    "bit-flipped": (_flip, ".distcp: contents do not match the sha256 in the manifest"),
    "garbled-state": (_garble, "trainer_state.json: contents do not match the sha256"),
    "garbled-state-rehashed": (_garble_rehashed, "trainer_state.json: unreadable"),
    "zeroed-metadata-rehashed": (_zero_rehashed, ".metadata: not a readable checkpoint metadata file"),
}


@pytest.fixture(scope="module")
def pre_base(prepared, tmp_path_factory):
    """A 3-step pretraining run with checkpoints at steps 1, 2 and 3."""
    out = tmp_path_factory.mktemp("pre_base") / "run"
    assert main(pre_args(prepared, out, steps=3)) == 0
    return out


def _ft_args(data, out, steps, extra=()):
    return ["finetune", "--model", str(data / "tiny"), "--task", "ner", "--train", str(data / "train.conll"),
            "--out", str(out), "--max-train", "24", "--max-steps", str(steps), "--save-every", "1",
            "--keep", "50", *FAST, *extra]


@pytest.fixture(scope="module")
def ft_base(data, tmp_path_factory):
    """A 6-step fine-tuning run (3 steps an epoch) with checkpoints at every step."""
    out = tmp_path_factory.mktemp("ft_base") / "run"
    assert main(_ft_args(data, out, steps=6)) == 0
    return out


def _copy(base: Path, dst: Path, upto: int) -> Path:
    """The run as if it had been killed after the checkpoint of step `upto`."""
    shutil.copytree(base, dst)
    for ck in resume.checkpoints(dst / "checkpoints"):
        if int(ck.name[len(resume.PREFIX):]) > upto:
            shutil.rmtree(ck)
    shutil.rmtree(dst / ("final" if (dst / "final").exists() else "best"))
    return dst


def _check_fallback(argv, run: Path, kind: str, capsys):
    damage, reason = DAMAGE[kind]
    newest = resume.checkpoints(run / "checkpoints")[-1]
    damage(newest)
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "warning" in line]
    assert len(warned) == 1, err
    assert warned[0].startswith("xlmr: warning: skipped a damaged checkpoint: ") and str(newest) in warned[0]
    assert reason in warned[0], warned[0]
    assert "Traceback" not in err and "resumed from step 2" in err, err


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_pretrain_falls_back_past_a_damaged_checkpoint(prepared, pre_base, tmp_path, kind, capsys):
    run = _copy(pre_base, tmp_path / "run", upto=3)
    _check_fallback(pre_args(prepared, run, steps=4), run, kind, capsys)
    assert (run / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_finetune_falls_back_past_a_damaged_checkpoint(data, ft_base, tmp_path, kind, capsys):
    run = _copy(ft_base, tmp_path / "run", upto=3)
    _check_fallback(_ft_args(data, run, steps=4), run, kind, capsys)
    assert (run / "best" / "model.safetensors").is_file()


def _check_all_damaged(argv, run: Path, capsys):
    found = resume.checkpoints(run / "checkpoints")
    for ck, kind in zip(found, ["truncated", "zeroed", "bit-flipped"]):
        DAMAGE[kind][0](ck)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("xlmr: error:")]
    assert len(errors) == 1 and "warning" not in err and "Traceback" not in err, err
    assert f"{run / 'checkpoints'}: none of the 3 checkpoints is intact" in errors[0] and "--fresh" in errors[0]
    assert str(found[-1]) in errors[0] and "resumed" not in err
    assert resume.checkpoints(run / "checkpoints") == found  # nothing trained, nothing deleted
    # --fresh starts over: it deletes them and trains from step 0
    assert main([*argv, "--fresh"]) == 0
    err = capsys.readouterr().err
    assert "deleted 3 checkpoint(s)" in err and "resumed" not in err and "warning" not in err, err
    for ck in resume.checkpoints(run / "checkpoints"):
        resume.verify(ck)
    return resume.checkpoints(run / "checkpoints")


def test_pretrain_all_checkpoints_damaged_stops_then_fresh_starts_over(prepared, pre_base, tmp_path, capsys):
    run = _copy(pre_base, tmp_path / "run", upto=3)
    DAMAGE["truncated"][0](resume.checkpoints(run / "checkpoints")[-1])
    assert main(["export", str(run), str(tmp_path / "hf")]) == 2  # export checks the manifest too
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "step_00000003" in err and "bytes where the manifest records" in err, err
    found = _check_all_damaged(pre_args(prepared, run, steps=4), run, capsys)
    assert [ck.name for ck in found] == [f"step_{i:08d}" for i in (1, 2, 3, 4)]


def test_finetune_all_checkpoints_damaged_stops_then_fresh_starts_over(data, ft_base, tmp_path, capsys):
    run = _copy(ft_base, tmp_path / "run", upto=3)
    found = _check_all_damaged(_ft_args(data, run, steps=4), run, capsys)
    assert [ck.name for ck in found] == [f"step_{i:08d}" for i in (1, 2, 3, 4)]


@pytest.mark.parametrize("upto", [3, 4])  # at an epoch's end, and inside an epoch
def test_finetune_resumes_bit_exact(data, ft_base, tmp_path, upto, capsys):
    from safetensors.torch import load_file

    run = _copy(ft_base, tmp_path / "run", upto=upto)
    assert main(_ft_args(data, run, steps=6)) == 0
    assert f"resumed from step {upto}" in capsys.readouterr().err
    want, got = load_file(ft_base / "best" / "model.safetensors"), load_file(run / "best" / "model.safetensors")
    assert want.keys() == got.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_a_run_without_checkpoints_starts_normally(data, tmp_path, capsys):
    assert main(_ft_args(data, tmp_path / "run", steps=2)) == 0
    err = capsys.readouterr().err
    assert "resumed" not in err and "warning" not in err and "error" not in err


# --- diverged runs -----------------------------------------------------------------------------------

class _ScaleGrad(torch.autograd.Function):
    """Identity forward, gradient times `scale` backward: a finite loss whose gradients overflow."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * ctx.scale, None


def _poison(monkeypatch, call: int, how: str):
    import xlmr.pretrain as P

    real, calls = P.mlm_loss, {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        if calls["n"] != call:
            return loss
        if how == "nan":
            return loss * float("nan")
        # huge: finite gradients whose squared norm overflows fp32 (an inf norm); inf: inf/NaN gradients
        return _ScaleGrad.apply(loss, 1e30 if how == "huge" else float("inf"))

    monkeypatch.setattr(P, "mlm_loss", poisoned)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("xlmr: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _weights(run: Path, ck: Path) -> dict:
    from xlmr.checkpoint import config_from_dict
    from xlmr.model import Model

    config, _ = config_from_dict(json.loads((run / "model_config.json").read_text()), "model_config.json")
    sd = {"model": dict(Model(config, "mlm").state_dict())}
    resume.read(sd, ck)
    return sd["model"]


def test_inf_gradient_norm_stops_before_the_update(prepared, tmp_path, monkeypatch, capsys):
    _poison(monkeypatch, 4, "huge")
    out = tmp_path / "run"
    assert main(pre_args(prepared, out, steps=8)) == 2
    line = _error_line(capsys)
    assert "gradient norm became inf at step 3" in line and "the last good checkpoint is step 3" in line, line
    assert [ck.name for ck in resume.checkpoints(out / "checkpoints")] == [f"step_{i:08d}" for i in (1, 2, 3)]


def test_non_finite_weights_are_never_saved(prepared, tmp_path, monkeypatch, capsys):
    """Without clipping, the infinite gradient reaches AdamW and the weights turn NaN at step 4."""
    _poison(monkeypatch, 4, "inf")
    out = tmp_path / "run"
    assert main(pre_args(prepared, out, steps=8, extra=["--max-grad-norm", "0"])) == 2
    line = _error_line(capsys)
    assert "weights became inf or NaN at step 4" in line and "the last good checkpoint is step 3" in line, line
    found = resume.checkpoints(out / "checkpoints")
    assert [ck.name for ck in found] == [f"step_{i:08d}" for i in (1, 2, 3)]
    for ck in found:
        assert all(bool(torch.isfinite(v).all()) for v in _weights(out, ck).values()), ck


def test_nan_stop_says_when_no_checkpoint_exists(prepared, tmp_path, monkeypatch, capsys):
    _poison(monkeypatch, 4, "nan")
    out = tmp_path / "run"
    assert main(pre_args(prepared, out, steps=8, extra=["--save-every", "100"])) == 2
    line = _error_line(capsys)
    assert "loss became nan at step 3" in line and "no checkpoint was saved" in line, line
    assert resume.checkpoints(out / "checkpoints") == []


def test_sparse_embeddings_resume_exactly(tmp_path):
    """SparseAdam state round-trips (torch's own state initialisation cannot step it)."""
    from test_train import seq_loss, tiny_model, toy_data

    from xlmr.batching import EpochBatches
    from xlmr.train import TrainConfig, apply_embedding_mode, seed_everything, train

    ids, y = toy_data(32)
    plan = lambda epoch: [slice(s, s + 8) for s in range(0, 32, 8)]
    make = lambda sl: {"input_ids": ids[sl], "attention_mask": torch.ones_like(ids[sl]), "labels": y[sl]}

    def run(steps, root):
        seed_everything(0)
        model = tiny_model()
        apply_embedding_mode(model, "sparse")
        batches = EpochBatches(plan, make)
        ckpt = resume.Resumer(root, model, resume.ResumeOptions(save_every=1, keep=10), batches.state_dict,
                              batches.load_state_dict, log=lambda s: None)
        cfg = TrainConfig(max_steps=steps, lr=1e-2, warmup=0, schedule="constant", progress=False)
        train(model, batches, seq_loss, cfg, restore=ckpt.restore, on_step=ckpt.on_step)
        return model.state_dict()

    want = run(3, tmp_path / "a")
    run(2, tmp_path / "b")
    got = run(3, tmp_path / "b")
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_failed_checkpoint_write_is_one_error_line(tmp_path):
    from test_train import tiny_model

    from xlmr.errors import XlmrError

    model = tiny_model()
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(XlmrError, match=f"{blocked}/step_00000001.tmp: could not write the checkpoint"):
        resume.save(blocked, 1, model, [], {})
