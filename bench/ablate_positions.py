"""Position-encoding ablation: pretrain the same tiny model with each encoding, same data, budget
and seed; report held-out MLM loss at the training length and at 2x and 4x it, time per step and
parameter counts, in one table.

    python bench/ablate_positions.py --data runs/data32k --tokenizer runs/tok32k --steps 600 --out runs/ablate
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from xlmr.checkpoint import load
from xlmr.mlm_data import MaskVocab, PreparedCorpus, validation_set
from xlmr.pretrain import PretrainConfig, evaluate_mlm, pretrain
from xlmr.tokenizer import Tokenizer

KINDS = ["learned", "sinusoidal", "continuous_sinusoidal", "rotary"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="directory from `xlmr data prepare`")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--out", default="runs/ablate_positions")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--eval-sequences", type=int, default=8, help="held-out sequences per language and length")
    p.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS)
    args = p.parse_args()

    torch.set_num_threads(max(1, torch.get_num_threads()))
    tok = Tokenizer.from_pretrained(args.tokenizer)
    vocab = MaskVocab.from_tokenizer(tok)
    corpus = PreparedCorpus(args.data)
    lengths = [args.seq_len, 2 * args.seq_len, 4 * args.seq_len]
    valid = {L: validation_set(corpus, L, args.eval_sequences) for L in lengths}
    rows = []
    for kind in args.kinds:
        out = Path(args.out) / kind
        cfg = PretrainConfig(data=args.data, tokenizer=args.tokenizer, out=str(out), preset="tiny",
                             hidden_size=args.hidden_size, num_hidden_layers=args.layers,
                             position_embedding_type=kind, seq_len=args.seq_len, batch_size=args.batch_size,
                             max_steps=args.steps, eval_every=args.steps, save_every=args.steps, keep=1,
                             seed=0, progress=False, lr=1e-3, warmup=0.06)
        t0 = time.perf_counter()
        summary = pretrain(cfg)
        seconds = time.perf_counter() - t0
        model = load(out / "final").eval()
        with torch.no_grad():
            losses = {L: evaluate_mlm(model, valid[L], vocab, 0, 0.15, torch.device("cpu"))["loss"] for L in lengths}
        params = sum(p.numel() for p in model.parameters())
        pos_params = sum(p.numel() for n, p in model.named_parameters()
                         if "position_embeddings" in n or "position_bias" in n)
        rows.append({"encoding": kind, "params": params, "position_params": pos_params,
                     "ms_per_step": 1000 * summary["seconds"] / max(summary["steps"], 1),
                     **{f"loss@{L}": losses[L] for L in lengths}, "wall_s": seconds})
        print(json.dumps(rows[-1]), flush=True)
    header = (f"| encoding | params | position params | ms/step | loss @{lengths[0]} | loss @{lengths[1]} (2x) "
              f"| loss @{lengths[2]} (4x) |")
    print("\n" + header + "\n|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['encoding']} | {r['params']:,} | {r['position_params']:,} | {r['ms_per_step']:.0f} | "
              + " | ".join(f"{r[f'loss@{L}']:.3f}" for L in lengths) + " |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
