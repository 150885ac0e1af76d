"""PEFT: LoRA interop with peft + transformers, merge, BitFit and bottleneck adapters, mismatch errors."""

import json
from types import SimpleNamespace

import pytest
import torch

import xlmr
from xlmr.adapters import active_adapters, hosts
from xlmr.cli import main
from xlmr.errors import XlmrError
from xlmr.peft_methods import PeftOptions, apply_method, load_adapted, save_weights
from xlmr.train import TrainConfig, train

from helpers import hf_config, padded_batch

T = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def opts(**kw):
    return SimpleNamespace(**{**PeftOptions().__dict__, **kw})


def hf_base(tmp_path, arch="XLMRobertaForTokenClassification", family="xlm-roberta", **kw):
    torch.manual_seed(0)
    hf = getattr(T, arch)(hf_config(family, num_labels=3, **kw)).eval()
    hf.save_pretrained(tmp_path / "base")
    return tmp_path / "base"


def train_a_little(model, steps=3):
    """A few real optimizer steps of the shared loop on random tokens and labels."""
    ids, mask = padded_batch(model.config.pad_token_id)
    labels = torch.randint(0, model.config.num_labels, ids.shape if model.head == "token" else ids.shape[:1])

    def loss_fn(m, b):
        out = m(b[0], b[1])
        return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), b[2].reshape(-1))

    cfg = TrainConfig(max_steps=steps, lr=5e-2, warmup=0, progress=False, embeddings="dense")
    train(model, lambda epoch: iter([(ids, mask, labels)]), loss_fn, cfg)
    return ids, mask


def hf_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("arch", ["XLMRobertaForTokenClassification", "XLMRobertaForSequenceClassification"])
def test_lora_trained_by_xlmr_loads_in_peft(arch, tmp_path):
    base = hf_base(tmp_path, arch)
    model = xlmr.load(base)
    model.train()
    method = apply_method(model, opts(peft="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0))
    assert 0 < method.trainable < method.total
    ids, mask = train_a_little(model)
    save_weights(model, tmp_path / "ad")
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and sorted(cfg["target_modules"]) == ["query", "value"]
    ours = model.eval()(ids, mask).detach()
    pm = peft.PeftModel.from_pretrained(getattr(T, arch).from_pretrained(base), tmp_path / "ad").eval()
    ref = hf_logits(pm, ids, mask)
    keep = mask.bool() if ours.dim() == 3 else slice(None)
    assert (ours[keep] - ref[keep]).abs().max().item() <= 1e-5
    assert (ours - hf_logits(getattr(T, arch).from_pretrained(base), ids, mask))[keep].abs().max() > 1e-3
    again = load_adapted(tmp_path / "ad")  # and back into xlmr
    assert (again(ids, mask) - ours)[keep].abs().max().item() <= 1e-6


def test_lora_trained_by_peft_loads_in_xlmr(tmp_path):
    base = hf_base(tmp_path)
    hf = T.XLMRobertaForTokenClassification.from_pretrained(base)
    pm = peft.get_peft_model(hf, peft.LoraConfig(task_type="TOKEN_CLS", r=4, lora_alpha=8,
                                                 target_modules=["query", "key", "value"]))
    with torch.no_grad():  # stand-in for training: LoRA B starts at zero
        for name, p in pm.named_parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    pm.save_pretrained(tmp_path / "ad")
    ids, mask = padded_batch(1)
    ref = hf_logits(pm.eval(), ids, mask)
    ours = load_adapted(tmp_path / "ad", base=str(base))
    got = ours(ids, mask).detach()
    assert (got - ref)[mask.bool()].abs().max().item() <= 1e-5


def test_merge_is_exact_and_plain_hf(tmp_path):
    base = hf_base(tmp_path)
    model = xlmr.load(base)
    apply_method(model, opts(peft="lora", lora_r=4, lora_target=["query", "value", "dense"]))
    ids, mask = train_a_little(model)
    save_weights(model, tmp_path / "ad")
    unmerged = load_adapted(tmp_path / "ad")(ids, mask).detach()
    assert main(["merge", "--model", str(base), "--adapter", str(tmp_path / "ad"), "--out", str(tmp_path / "m")]) == 0
    merged = xlmr.load(tmp_path / "m")
    assert not any("lora" in k or "base_layer" in k for k in merged.state_dict())
    keep = mask.bool()
    assert (merged(ids, mask) - unmerged)[keep].abs().max().item() <= 1e-5
    hf, info = T.XLMRobertaForTokenClassification.from_pretrained(tmp_path / "m", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert (hf_logits(hf.eval(), ids, mask) - unmerged)[keep].abs().max().item() <= 1e-5


@pytest.mark.parametrize("method,placement,sites", [("bitfit", None, 0), ("adapter", "pfeiffer", 2),
                                                    ("adapter", "houlsby", 4)])
def test_bitfit_and_adapters_train_only_their_part_and_round_trip(method, placement, sites, tmp_path):
    base = hf_base(tmp_path)
    model = xlmr.load(base)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("bias")
              and k.startswith("roberta.")}
    apply_method(model, opts(peft=method, adapter_placement=placement or "pfeiffer", adapter_reduction=4))
    assert len(hosts(model)) == sites
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if method == "bitfit":
        assert trainable and all(n.endswith("bias") or n.startswith("classifier.") for n in trainable)
    else:
        assert all(".adapters.task." in n or n.startswith("classifier.") for n in trainable)
    ids, mask = train_a_little(model)
    after = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items()}
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())  # frozen weights did not move
    save_weights(model, tmp_path / "ad")
    again = load_adapted(tmp_path / "ad")
    assert (again(ids, mask) - model.eval()(ids, mask))[mask.bool()].abs().max().item() <= 1e-6


# ------------------------------------------------------------------------------------------ mismatches


def test_adapter_for_another_size_or_family_is_refused(tmp_path):
    base = hf_base(tmp_path)
    model = xlmr.load(base)
    apply_method(model, opts(peft="lora", lora_r=4))
    save_weights(model, tmp_path / "ad")
    bigger = hf_base(tmp_path / "big", hidden_size=64)
    with pytest.raises(XlmrError, match=r"hidden_size=32.*this model has 64 \(another model size"):
        load_adapted(tmp_path / "ad", base=str(bigger))
    bert = hf_base(tmp_path / "bert", "BertForTokenClassification", "bert")
    with pytest.raises(XlmrError, match="another model size or family"):
        load_adapted(tmp_path / "ad", base=str(bert))
    # an adapter from peft (no xlmr_adapter.json): the tensor names and shapes still tell
    (tmp_path / "ad" / "xlmr_adapter.json").unlink()
    with pytest.raises(XlmrError, match="another family"):
        load_adapted(tmp_path / "ad", base=str(bert))
    with pytest.raises(XlmrError, match="another model size"):
        load_adapted(tmp_path / "ad", base=str(bigger))


def test_target_modules_matching_nothing_is_refused(tmp_path):
    model = xlmr.load(hf_base(tmp_path))
    with pytest.raises(XlmrError, match=r"target_modules \['qkv'\] match no module.*query, key, value, dense"):
        apply_method(model, opts(peft="lora", lora_target=["query", "qkv"]))


def test_adapter_dir_with_a_missing_file_is_refused(tmp_path, capsys):
    base = hf_base(tmp_path)
    model = xlmr.load(base)
    apply_method(model, opts(peft="adapter"))
    save_weights(model, tmp_path / "ad")
    (tmp_path / "ad" / "adapter_model.safetensors").unlink()
    capsys.readouterr()
    code = main(["merge", "--model", str(base), "--adapter", str(tmp_path / "ad"), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "missing adapter_model.safetensors" in err


def test_bottleneck_adapters_cannot_be_merged(tmp_path):
    base = hf_base(tmp_path)
    model = xlmr.load(base)
    apply_method(model, opts(peft="adapter"))
    save_weights(model, tmp_path / "ad")
    with pytest.raises(XlmrError, match="cannot be merged"):
        xlmr.peft_methods.merge(None, str(tmp_path / "ad"), str(tmp_path / "m"))


def test_active_adapters_report(tmp_path):
    model = xlmr.load(hf_base(tmp_path))
    apply_method(model, opts(peft="adapter"))
    assert list(active_adapters(model).values()) == [[("task", "task")]] * 2  # pfeiffer: 2 layers
