"""Our model computes what transformers computes: outputs, gradients and checkpoint round trips."""

import pytest
import torch

import xlmr
from xlmr.hfconfig import HEAD_OF_SUFFIX

from helpers import hf_config, padded_batch

T = pytest.importorskip("transformers")

CASES = [
    ("xlm-roberta", "XLMRobertaModel"),
    ("xlm-roberta", "XLMRobertaForMaskedLM"),
    ("xlm-roberta", "XLMRobertaForSequenceClassification"),
    ("xlm-roberta", "XLMRobertaForTokenClassification"),
    ("roberta", "RobertaModel"),
    ("roberta", "RobertaForMaskedLM"),
    ("roberta", "RobertaForSequenceClassification"),
    ("roberta", "RobertaForTokenClassification"),
    ("bert", "BertModel"),
    ("bert", "BertForMaskedLM"),
    ("bert", "BertForSequenceClassification"),
    ("bert", "BertForTokenClassification"),
]


def hf_and_ours(family, arch, tmp_path, num_labels=3):
    torch.manual_seed(0)
    hf = getattr(T, arch)(hf_config(family, num_labels=num_labels)).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = xlmr.load(tmp_path / "hf")
    return hf, ours


def hf_out(hf, arch, ids, mask, **kw):
    out = hf(input_ids=ids, attention_mask=mask, **kw)
    return out.last_hidden_state if arch.endswith("Model") else out.logits


def real_positions(out, mask):
    """Values at non-padding positions only (for per-token outputs)."""
    return out[mask.bool()] if out.dim() == 3 else out


@pytest.mark.parametrize("family,arch", CASES)
def test_outputs_and_gradients_match(family, arch, tmp_path):
    hf, ours = hf_and_ours(family, arch, tmp_path)
    assert ours.head == HEAD_OF_SUFFIX[arch.split("Roberta")[-1].split("Bert")[-1]]
    assert ours.config.model_type == family
    ids, mask = padded_batch(hf.config.pad_token_id)
    ref = hf_out(hf, arch, ids, mask)
    got = ours(ids, mask)
    assert got.shape == ref.shape
    diff = (real_positions(got, mask) - real_positions(ref, mask)).abs().max().item()
    assert diff <= 1e-5, diff

    # gradients of the same loss, parameter by parameter (names are identical)
    w = torch.randn_like(ref)
    (real_positions(ref, mask) * real_positions(w, mask)).sum().backward()
    (real_positions(got, mask) * real_positions(w, mask)).sum().backward()
    bare = arch.endswith("Model")  # HF's bare encoders name parameters without the prefix
    hf_grads = {(f"{ours.prefix}.{n}" if bare else n): p.grad for n, p in hf.named_parameters()
                if p.grad is not None}
    checked = 0
    for name, p in ours.named_parameters():
        if p.grad is None or name not in hf_grads:
            continue
        gdiff = (p.grad - hf_grads[name]).abs().max().item()
        assert gdiff <= 1e-4, (name, gdiff)
        checked += 1
    assert checked >= 16 * ours.config.num_hidden_layers  # every layer's weights were compared


@pytest.mark.parametrize("family,arch", CASES)
def test_round_trip_ours_to_transformers(family, arch, tmp_path):
    hf, ours = hf_and_ours(family, arch, tmp_path)
    with torch.no_grad():  # make our weights differ from the file we loaded
        for p in ours.parameters():
            p.add_(0.01 * torch.randn_like(p))
    xlmr.save(ours, tmp_path / "ours")
    back, info = getattr(T, arch).from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids, mask = padded_batch(hf.config.pad_token_id, seed=1)
    with torch.no_grad():
        a, b = ours(ids, mask), hf_out(back.eval(), arch, ids, mask)
    assert (real_positions(a, mask) - real_positions(b, mask)).abs().max().item() <= 1e-5
    again = xlmr.load(tmp_path / "ours")  # and back into xlmr
    with torch.no_grad():
        assert torch.equal(again(ids, mask), a)


def test_token_type_ids_match_bert(tmp_path):
    hf, ours = hf_and_ours("bert", "BertModel", tmp_path)
    ids, mask = padded_batch(0)
    tt = (torch.arange(ids.shape[1]) > 3).long().expand_as(ids)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state
        got = ours(ids, mask, tt)
    assert (got - ref)[mask.bool()].abs().max() <= 1e-5


def test_masked_positions_only_projection(tmp_path):
    hf, ours = hf_and_ours("xlm-roberta", "XLMRobertaForMaskedLM", tmp_path)
    ids, mask = padded_batch(1)
    positions = torch.tensor([0, 5, 13, 24])
    with torch.no_grad():
        full = ours(ids, mask).reshape(-1, ours.config.vocab_size)
        sparse = ours(ids, mask, positions=positions)
    assert torch.allclose(sparse, full[positions], atol=1e-6)


def test_minilm_checkpoint_matches_automodel(minilm_dir):
    sentences = [
        "The quick brown fox jumps over the lazy dog.", "Paris is the capital of France.",
        "Der schnelle braune Fuchs springt über den faulen Hund.", "¿Dónde está la biblioteca?",
        "東京は日本の首都です。", "Москва — столица России.", "I love machine learning!",
        "short", "A much longer sentence, with commas, numbers like 3.14159 and symbols #@%!",
        "Named entities: Angela Merkel met Barack Obama in Berlin.", "Ελληνικά γράμματα", "مرحبا بالعالم",
        "नमस्ते दुनिया", "สวัสดีชาวโลก", "안녕하세요 세계", "ሰላም ለዓለም", "שלום עולם", "e-mail: a@b.com",
        "Tokenization of unbelievably-long-hyphenated-words", "1 2 3 4 5 6 7 8 9 10",
    ]
    tok = T.AutoTokenizer.from_pretrained(minilm_dir)
    batch = tok(sentences, padding=True, return_tensors="pt")
    hf = T.AutoModel.from_pretrained(minilm_dir).eval()
    ours = xlmr.load(minilm_dir)
    with torch.no_grad():
        ref = hf(**batch).last_hidden_state
        got = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    m = batch["attention_mask"].bool()
    assert (got - ref)[m].abs().max().item() <= 1e-5


def test_sequence_head_refuses_positions(tmp_path):
    _, ours = hf_and_ours("xlm-roberta", "XLMRobertaForSequenceClassification", tmp_path)
    ids, mask = padded_batch(1)
    with pytest.raises(ValueError, match="not 'sequence'"):
        ours(ids, mask, positions=torch.tensor([0, 5]))


@pytest.mark.parametrize("attention_dropout", [0.0, 1e-9])
def test_training_mode_matches_transformers(attention_dropout, tmp_path):
    """Training mode takes other paths: one GEMM for query/key/value, and (with attention dropout on a
    CPU) attention written out with our dropout. p = 1e-9 rounds to keeping every element, so that
    path must give exactly HF's outputs and gradients without dropout."""
    torch.manual_seed(0)
    hf = T.XLMRobertaForTokenClassification(hf_config("xlm-roberta", num_labels=3, hidden_dropout_prob=0.0,
                                                      attention_probs_dropout_prob=0.0)).train()
    hf.save_pretrained(tmp_path / "hf")
    ours = xlmr.load(tmp_path / "hf").train()
    ours.config.attention_probs_dropout_prob = attention_dropout
    for layer in ours.encoder_model.encoder.layer:
        layer.attention.self.config = ours.config
    ids, mask = padded_batch(hf.config.pad_token_id)
    ref, got = hf(input_ids=ids, attention_mask=mask).logits, ours(ids, mask)
    assert (real_positions(got, mask) - real_positions(ref, mask)).abs().max().item() <= 1e-5
    w = torch.randn_like(ref)
    (real_positions(ref, mask) * real_positions(w, mask)).sum().backward()
    (real_positions(got, mask) * real_positions(w, mask)).sum().backward()
    hf_grads = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        assert (p.grad - hf_grads[name].grad).abs().max().item() <= 1e-4, name


def test_dropout_drops_at_rate_and_scales():
    from xlmr.model import dropout

    torch.manual_seed(0)
    x = torch.ones(400, 500, requires_grad=True)
    y = dropout(x, 0.1)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.005, dropped
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 65536 / round(0.9 * 65536)))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient is the same mask and scale
    assert dropout(x, 0.1, training=False) is x
    assert abs((dropout(torch.ones(1000, 1000), 0.5) == 0).float().mean().item() - 0.5) < 0.005
