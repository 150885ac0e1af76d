"""The shared training loop: schedules, losses that fall, accumulation, embedding modes, NaN stop."""

import json

import pytest
import torch
import torch.nn.functional as F

from xlmr.batching import length_grouped_batches
from xlmr.errors import XlmrError
from xlmr.model import Config, Model
from xlmr.train import TrainConfig, lr_lambda, seed_everything, train


def tiny_model(head="sequence", labels=2):
    cfg = Config(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                 max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                 id2label={i: str(i) for i in range(labels)})
    return Model(cfg, head)


def toy_data(n=64, seed=0):
    """Label = whether token 5 occurs: learnable by a tiny model."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, 40, (n, 8), generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    ids[y == 1, 3] = 5
    ids[:, 0] = 0
    return ids, y


def seq_loss(model, batch):
    return F.cross_entropy(model(batch["input_ids"], batch["attention_mask"]), batch["labels"])


def batches_of(ids, y, bs):
    def gen(epoch):
        for s in range(0, len(ids), bs):
            yield {"input_ids": ids[s:s + bs], "attention_mask": torch.ones_like(ids[s:s + bs]),
                   "labels": y[s:s + bs]}
    return gen


def test_schedule_exact_values():
    f = lr_lambda("linear", warmup_steps=2, total_steps=10)
    assert [round(f(s), 6) for s in range(0, 11)] == [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0]
    g = lr_lambda("inverse_sqrt", warmup_steps=4, total_steps=100)
    assert g(3) == 1.0 and g(4) == 1.0 and g(16) == 0.5
    assert lr_lambda("constant", 0, 5)(3) == 1.0


@pytest.mark.parametrize("mode", ["dense", "sparse", "frozen"])
def test_loss_falls(mode, tmp_path):
    seed_everything(0)
    model = tiny_model()
    ids, y = toy_data()
    from xlmr.train import apply_embedding_mode

    apply_embedding_mode(model, mode)
    before = model.roberta.embeddings.word_embeddings.weight.detach().clone()
    cfg = TrainConfig(lr=1e-2, epochs=30, warmup=0.1, embeddings=mode, progress=False, log_every=4)
    res = train(model, batches_of(ids, y, 16), seq_loss, cfg, steps_per_epoch=4, out_dir=tmp_path)
    losses = [r["loss"] for r in res.history if "loss" in r]
    if mode != "frozen":  # random frozen embeddings make this toy task too hard to learn quickly
        assert losses[-1] < 0.5 * losses[0], losses
    after = model.roberta.embeddings.word_embeddings.weight.detach()
    if mode == "frozen":
        assert torch.equal(before, after)
    else:
        assert not torch.equal(before, after)
    if mode == "sparse":  # rows never seen stay exactly as they were
        assert torch.equal(before[1:5], after[1:5])
    assert (tmp_path / "loss.png").stat().st_size > 1000
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["step"] == 4


def test_grad_accumulation_equals_big_batch():
    ids, y = toy_data(32)
    results = []
    for bs, accum in [(16, 1), (8, 2)]:
        seed_everything(0)
        model = tiny_model()
        cfg = TrainConfig(lr=1e-3, max_steps=4, grad_accum=accum, embeddings="dense", progress=False, warmup=0,
                          bf16=False)  # fp32: bf16 rounding differs between batch splits
        train(model, batches_of(ids, y, bs), seq_loss, cfg)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert (results[0] - results[1]).abs().max() < 1e-5


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_clipping_matches_torch_clip_then_step(mode):
    """Our clipping (coefficient handed to fused AdamW, BLAS-dot norms, sparse rows) trains the same
    parameters as torch's clip_grad_norm_ followed by the step; no grad_scale is left behind."""
    from xlmr.train import apply_embedding_mode, build_optimizers, clip_grad_norm

    ids, y = toy_data(32)
    cfg = TrainConfig(lr=1e-2, max_steps=3, embeddings=mode, max_grad_norm=0.01, progress=False, warmup=0,
                      bf16=False)
    models = []
    for ours in (True, False):
        seed_everything(0)
        model = tiny_model()
        apply_embedding_mode(model, mode)
        opts = build_optimizers(model, cfg)
        params = [p for o in opts for g in o.param_groups for p in g["params"]]
        norms = []
        for batch in list(batches_of(ids, y, 16)(0))[:2] * 2:
            seq_loss(model, batch).backward()
            if ours:
                norms.append(clip_grad_norm(params, cfg.max_grad_norm, opts))
                assert any(hasattr(o, "grad_scale") for o in opts)  # clipping was active and folded
            else:
                dense = [p for p in params if not p.grad.is_sparse]
                sparse = [p.grad for p in params if p.grad.is_sparse]
                total = torch.cat([torch.nn.utils.get_total_norm([p.grad for p in dense]).reshape(1)]
                                  + [g.coalesce().values().norm().reshape(1) for g in sparse]).norm()
                norms.append(float(total))
                torch._foreach_mul_([p.grad for p in dense], cfg.max_grad_norm / (total + 1e-6))
                for g in sparse:
                    g.mul_(cfg.max_grad_norm / (total + 1e-6))
            for o in opts:
                o.step()
                o.__dict__.pop("grad_scale", None)
                o.zero_grad(set_to_none=True)
        models.append((torch.cat([p.detach().flatten() for p in model.parameters()]), norms))
    (a, na), (b, nb) = models
    assert na == pytest.approx(nb, rel=1e-5) and min(na) > 10 * cfg.max_grad_norm
    assert (a - b).abs().max() < 1e-6
    small = clip_grad_norm(params, 1e9, opts)  # no gradients left: nothing to clip, nothing set
    assert small == 0.0 and not any(hasattr(o, "grad_scale") for o in opts)


def test_layer_decay_gives_lower_lr_to_lower_layers():
    from xlmr.train import build_optimizers

    model = tiny_model()
    opt = build_optimizers(model, TrainConfig(lr=1.0, layer_decay=0.5, embeddings="dense"))[0]
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == [0.125, 0.25, 0.5, 1.0]  # embeddings, layer 0, layer 1, head


def test_nan_loss_stops_with_clear_message():
    model = tiny_model()
    ids, y = toy_data(16)

    def bad_loss(m, b):
        return seq_loss(m, b) * float("nan")

    with pytest.raises(XlmrError, match="loss became nan at step 0; stopping .no checkpoint was saved."):
        train(model, batches_of(ids, y, 8), bad_loss, TrainConfig(max_steps=2, progress=False))


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_clipping_a_non_finite_norm_leaves_gradients_and_the_loop_stops(bad):
    from xlmr.train import build_optimizers, clip_grad_norm

    model = tiny_model()
    opts = build_optimizers(model, TrainConfig())
    params = [p for p in model.parameters()]
    for p in params:
        p.grad = torch.ones_like(p)
    params[0].grad[0, 0] = bad
    before = [p.grad.clone() for p in params]
    norm = clip_grad_norm(params, 1.0, opts)
    assert norm != norm if bad != bad else norm == bad  # returned as is, no ZeroDivisionError
    assert all(torch.equal(p.grad.nan_to_num(), b.nan_to_num()) for p, b in zip(params, before))  # unscaled
    assert not any(hasattr(o, "grad_scale") for o in opts)
    model.zero_grad(set_to_none=True)
    # in the loop: a finite loss whose gradient norm overflows stops before the update, with one line
    ids, y = toy_data(16)
    weights = {k: v.clone() for k, v in model.state_dict().items()}

    def overflowing(m, b):
        loss = seq_loss(m, b)
        loss.register_hook(lambda g: g * 1e30)  # finite gradients, squared norm past fp32's range
        return loss

    with pytest.raises(XlmrError, match="gradient norm became inf at step 0; stopping before the update "
                                        r"\(no checkpoint was saved\)"):
        train(model, batches_of(ids, y, 8), overflowing, TrainConfig(max_steps=2, progress=False))
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_early_stopping_and_best_checkpoint():
    model = tiny_model()
    ids, y = toy_data(16)
    scores = iter([0.5, 0.7, 0.6, 0.6, 0.9])
    best = []
    cfg = TrainConfig(max_steps=50, eval_every=1, patience=2, progress=False)
    res = train(model, batches_of(ids, y, 8), seq_loss, cfg, evaluate=lambda m: {"f1": next(scores)},
                metric="f1", on_best=lambda m, metrics: best.append(metrics["f1"]))
    assert res.stopped_early and res.steps == 4 and res.best_metric == 0.7 and best == [0.5, 0.7]


def test_length_grouped_batches():
    lengths = [5, 50, 7, 48, 6, 49, 8, 51] * 10
    batches = length_grouped_batches(lengths, batch_size=4, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(80))  # every example exactly once
    waste = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    assert waste < 0.1 * sum(lengths)
    assert batches == length_grouped_batches(lengths, batch_size=4, seed=1)
    assert batches != length_grouped_batches(lengths, batch_size=4, seed=1, epoch=1)
    capped = length_grouped_batches(lengths, batch_size=100, max_tokens=200, seed=0)
    assert all(max(lengths[i] for i in b) * len(b) <= 200 for b in capped)


def test_auto_embedding_mode_follows_vocabulary_size():
    from xlmr.train import SPARSE_ABOVE_ROWS, apply_embedding_mode

    small = tiny_model()
    assert apply_embedding_mode(small, "auto") == "dense"
    assert not small.encoder_model.embeddings.word_embeddings.sparse
    big = Model(Config(vocab_size=SPARSE_ABOVE_ROWS + 1, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=8), "token")
    assert apply_embedding_mode(big, "auto") == "sparse"
    assert big.encoder_model.embeddings.word_embeddings.sparse
    mlm = Model(Config(vocab_size=SPARSE_ABOVE_ROWS + 1, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=8), "mlm")
    assert apply_embedding_mode(mlm, "auto") == "dense"  # tied to the decoder


@pytest.mark.parametrize("caps,expected", [
    ({"amx_bf16": True, "avx512_bf16": True}, "cpu"),  # Sapphire Rapids: AMX multiplies bf16 natively
    ({"amx_bf16": False, "avx512_bf16": True}, None),  # bf16 dot products only: slower than fp32 here
    ({"avx2": True}, None),
    ({}, None),
])
def test_bf16_autocast_on_cpu_only_with_amx(monkeypatch, caps, expected):
    from xlmr.train import autocast_device

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    assert autocast_device(torch.device("cpu")) == expected
    assert autocast_device(torch.device("cpu"), bf16=False) is None


@pytest.mark.parametrize("supported,expected", [(True, "cuda"), (False, None)])
def test_bf16_autocast_on_cuda_where_supported(monkeypatch, supported, expected):
    from xlmr.train import autocast_device

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    assert autocast_device(torch.device("cuda")) == expected
    assert autocast_device(torch.device("cuda"), bf16=False) is None
    assert autocast_device(torch.device("meta")) is None  # neither CPU nor CUDA: fp32


def test_sorted_batches_exact():
    from xlmr.batching import sorted_batches

    lengths = [5, 1, 3, 3, 8, 2]  # shortest first, ties in index order: 1, 5, 2, 3, 0, 4
    assert sorted_batches(lengths, batch_size=2) == [[1, 5], [2, 3], [0, 4]]
    # at most 10 padded tokens: [1,5,2] is 3 x 3 = 9; adding 3 would be 12; [3,0] is 2 x 5; [4] alone
    assert sorted_batches(lengths, batch_size=10, max_tokens=10) == [[1, 5, 2], [3, 0], [4]]
    assert sorted_batches([], batch_size=4) == []
