"""Position encodings: shapes, the continuous bias formula, symmetry, lengths, gradients, padding."""

import math

import pytest
import torch

import xlmr
from xlmr.model import Config, ContinuousSinusoidalBias, Model, rotate, sinusoid

from helpers import padded_batch

KINDS = ["learned", "sinusoidal", "continuous_sinusoidal", "rotary"]


def tiny(kind, family="xlm-roberta", **kw):
    return Config(model_type=family, vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=66, position_embedding_type=kind,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw)


def test_continuous_bias_equals_naive_formula():
    torch.manual_seed(0)
    mod = ContinuousSinusoidalBias(num_heads=3)
    with torch.no_grad():
        mod.decay.normal_()
        mod.log_omega.normal_()
    T = 7
    got = mod(T, torch.device("cpu"))
    assert got.shape == (3, T, T)
    for h in range(3):
        a, b = mod.log_omega[h].item(), torch.nn.functional.softplus(mod.decay[h]).item()
        omega = [math.exp(a - b * math.log1p(p)) for p in range(T)]
        for i in range(T):
            for j in range(T):
                want = (math.sin(i * omega[j]) + math.sin(j * omega[i])) / (2 * math.pi)
                assert abs(got[h, i, j].item() - want) < 1e-5
    assert torch.equal(got, got.transpose(1, 2))  # symmetric by construction


def test_continuous_bias_gradients_reach_omega_and_cache():
    mod = ContinuousSinusoidalBias(num_heads=2)
    mod(16, torch.device("cpu")).pow(2).sum().backward()
    assert mod.log_omega.grad.abs().sum() > 0 and mod.decay.grad.abs().sum() > 0
    with torch.no_grad():
        a = mod(16, torch.device("cpu"))
        assert mod(16, torch.device("cpu")) is a  # cached per length


def test_model_gradients_reach_omega():
    model = Model(tiny("continuous_sinusoidal"), "mlm")
    ids, mask = padded_batch(1, vocab=60)
    model(ids, mask).sum().backward()
    bias = model.roberta.position_bias
    assert bias.log_omega.grad.abs().sum() > 0


def test_sinusoid_and_rotary_shapes():
    assert sinusoid(torch.arange(5), 8).shape == (5, 8)
    assert sinusoid(torch.arange(5), 7).shape == (5, 7)
    x = torch.randn(2, 3, 5, 8)
    y = rotate(x, torch.arange(5))
    assert y.shape == x.shape
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)  # a rotation keeps norms
    assert torch.allclose(y[:, :, 0], x[:, :, 0])  # position 0 is not rotated


def test_rotary_scores_depend_on_relative_position():
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    def score(i, j):
        return (rotate(q, torch.tensor([i])) * rotate(k, torch.tensor([j]))).sum().item()
    assert abs(score(3, 1) - score(10, 8)) < 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_shapes(kind):
    model = Model(tiny(kind), "token").eval()
    ids, mask = padded_batch(1, vocab=60)
    assert model(ids, mask).shape == (*ids.shape, model.config.num_labels)


@pytest.mark.parametrize("kind", ["sinusoidal", "continuous_sinusoidal", "rotary"])
def test_any_length_without_a_table(kind):
    model = Model(tiny(kind), "base").eval()
    assert not any("position_embeddings" in n for n, _ in model.named_parameters())
    with torch.no_grad():
        for T in (1, 4096):
            ids = torch.randint(3, 60, (1, T))
            assert torch.isfinite(model(ids)).all()


@pytest.mark.parametrize("family", ["xlm-roberta", "bert"])
@pytest.mark.parametrize("kind", KINDS)
def test_padding_does_not_change_real_tokens(kind, family):
    torch.manual_seed(0)
    model = Model(tiny(kind, family, pad_token_id=1), "token").eval()
    ids, mask = padded_batch(1, vocab=60, lengths=(7, 3, 12))
    with torch.no_grad():
        batch = model(ids, mask)
        for i, n in enumerate(mask.sum(1).tolist()):
            alone = model(ids[i : i + 1, :n], mask[i : i + 1, :n])
            wider = model(torch.nn.functional.pad(ids[i : i + 1, :n], (0, 20), value=1),
                          torch.nn.functional.pad(mask[i : i + 1, :n], (0, 20)))
            assert (batch[i, :n] - alone[0]).abs().max() <= 1e-5
            assert (wider[0, :n] - alone[0]).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", ["sinusoidal", "continuous_sinusoidal", "rotary"])
def test_own_format_round_trip_and_export_refused(kind, tmp_path, capsys):
    model = Model(tiny(kind), "mlm").eval()
    xlmr.save(model, tmp_path / "m")
    again = xlmr.load(tmp_path / "m")
    assert again.config.position_embedding_type == kind
    ids = torch.randint(3, 60, (2, 9))
    with torch.no_grad():
        assert torch.equal(again(ids), model(ids))
    with pytest.raises(xlmr.XlmrError, match="no transformers equivalent"):
        xlmr.export_hf(model, tmp_path / "hf")
    # transformers itself refuses the directory instead of silently loading wrong weights
    T = pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="model type `xlmr` but Transformers does not recognize"):
        T.AutoModelForMaskedLM.from_pretrained(tmp_path / "m")
