"""MLM training throughput at the xlm-roberta-base architecture: xlmr vs transformers, one process.

Both sides: vocab 250,002, hidden 768, 12 layers, random init, fp32 (bf16 autocast on CUDA), AdamW,
the same text (corpus lines tokenized by the same tokenizer).
  transformers: XLMRobertaForMaskedLM, DataCollatorForLanguageModeling (15% masking, dynamic padding),
                one line per row, as its run_mlm example does without grouping.
  xlmr:         packed sequences (no padding), masking by mask_rows, vocabulary projection only at
                masked positions.
Reported: real (non-padding) tokens per second of training, and peak memory (CUDA: max allocated;
CPU: peak RSS growth measured in a fresh subprocess per side).

    python bench/pretrain_throughput.py --tokenizer runs/tok32k --corpus ../shared/corpus --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

BASE = dict(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
            pad_token_id=1, bos_token_id=0, eos_token_id=2)


def corpus_lines(corpus: Path, n: int) -> list[str]:
    """Round-robin lines over the language files, so both sides see the same multilingual text."""
    files = sorted(corpus.glob("*.txt"))
    handles = [open(f, encoding="utf-8") for f in files]
    out = []
    while len(out) < n:
        for h in handles:
            line = h.readline().strip()
            if line:
                out.append(line)
    return out[:n]


def run_side(side: str, args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    from xlmr.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(args.tokenizer)
    # enough lines for both sides: packing turns ~8 short lines into one full row
    lines = corpus_lines(Path(args.corpus), args.batch_size * (args.steps + args.warmup) * 8)
    ids = tok.backend.encode_batch(lines)
    ids = [e.ids[: args.seq_len] for e in ids]
    amp = dict(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    if side == "hf":
        import transformers as T

        hf_tok = T.XLMRobertaTokenizerFast.from_pretrained(args.tokenizer)
        model = T.XLMRobertaForMaskedLM(T.XLMRobertaConfig(**BASE)).to(device).train()
        collator = T.DataCollatorForLanguageModeling(hf_tok, mlm_probability=0.15)
        batches = [collator([{"input_ids": row} for row in ids[i:i + args.batch_size]])
                   for i in range(0, len(ids), args.batch_size)]

        def step(b):
            b = {k: v.to(device) for k, v in b.items()}
            with torch.autocast(**amp):
                loss = model(**b).loss
            loss.backward()
            return int(b["attention_mask"].sum())
    else:
        from xlmr.mlm_data import MaskVocab, mask_rows
        from xlmr.model import Config, Model
        import torch.nn.functional as F

        vocab = MaskVocab.from_tokenizer(tok)
        vocab = MaskVocab(vocab.mask_id, BASE["vocab_size"], vocab.special_ids)
        model = Model(Config(**{**BASE, "pad_token_id": tok.pad_token_id}), "mlm").to(device).train()
        stream = torch.tensor([t for row in ids for t in row])  # the same tokens, packed
        T_ = args.seq_len
        n = len(stream) // T_
        packed = stream[: n * T_].view(n, T_)
        batches = [packed[i:i + args.batch_size] for i in range(0, n, args.batch_size)]

        def step(b):
            m = mask_rows(b, torch.arange(len(b)), vocab, seed=0)
            with torch.autocast(**amp):
                logits = model(m.input_ids.to(device), positions=m.positions.to(device))
            F.cross_entropy(logits.float(), m.targets.to(device)).backward()
            return b.numel()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tokens, seconds = 0, 0.0
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        n_tok = step(batches[i])
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            tokens, seconds = tokens + n_tok, seconds + time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024)
    return {"side": side, "tokens_per_s": tokens / seconds, "peak_mib": peak, "device": str(device),
            "rss_before_steps_mib": rss0 / 1024, "steps": args.steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, help="an XLM-R-style tokenizer directory")
    p.add_argument("--corpus", required=True)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--side", choices=["hf", "xlmr"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:  # child process: one side, one JSON line
        print(json.dumps(run_side(args.side, args)))
        return
    results = {}
    for side in ("hf", "xlmr", "hf", "xlmr"):  # alternate, so drift in machine speed hits both
        cmd = [sys.executable, __file__, *sys.argv[1:], "--side", side]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ}, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results.setdefault(side, []).append(r)
        print(json.dumps(r), flush=True)
    best = {s: max(rs, key=lambda r: r["tokens_per_s"]) for s, rs in results.items()}
    hf, ours = best["hf"], best["xlmr"]
    print(f"\n| side | tokens/s | peak memory (MiB) |\n|---|---:|---:|")
    for name, r in (("transformers XLMRobertaForMaskedLM", hf), ("xlmr", ours)):
        print(f"| {name} | {r['tokens_per_s']:.0f} | {r['peak_mib']:.0f} |")
    print(f"\nxlmr / transformers throughput: {ours['tokens_per_s'] / hf['tokens_per_s']:.2f}x; "
          f"peak memory ratio {ours['peak_mib'] / hf['peak_mib']:.2f} (device {ours['device']})")


if __name__ == "__main__":
    main()
