"""Does pretraining help? Fine-tune a pretrained checkpoint and the same architecture from random init
on SIB-200 English, evaluate both zero-shot on every other SIB-200 language, print both columns.

Both sides get the same recipe and the same small learning-rate search; each side keeps the
learning rate with the best English *dev* accuracy (no test language is looked at to choose).

    python bench/pretrain_zero_shot.py --model runs/pretrain-small/final \
        [--sib ../shared/data/sib200] [--lrs 1e-4,3e-4] [--epochs 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]


def random_init_copy(model_dir: Path, out: Path, seed: int) -> Path:
    """The pretrained checkpoint's architecture and tokenizer with freshly initialised weights."""
    import torch

    from xlmr.checkpoint import load, save
    from xlmr.checkpoint import copy_tokenizer
    from xlmr.model import Model

    config = load(model_dir, head="mlm").config
    torch.manual_seed(seed)
    save(Model(config, "mlm"), out)
    copy_tokenizer(model_dir, out)
    return out


def run(model: str, lr: float, args, langs: list[str], out: Path) -> dict:
    from xlmr.finetune import FinetuneConfig, finetune

    eng = Path(args.sib) / args.source
    cfg = FinetuneConfig(model=model, task="classify", train=str(eng / "train.tsv"), dev=str(eng / "dev.tsv"),
                         test=[f"{l}={Path(args.sib) / l / 'test.tsv'}" for l in langs], out=str(out),
                         epochs=args.epochs, lr=lr, batch_size=args.batch_size, max_length=128, warmup=0.1,
                         seed=args.seed, progress=False, threads=args.threads, embeddings=args.embeddings)
    summary = finetune(cfg)
    return {"lr": lr, "dev_accuracy": summary["best_dev"], "test": summary["test"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="pretrained checkpoint directory (with its tokenizer)")
    ap.add_argument("--sib", default=os.path.join(os.environ.get("XLMR_DATA", str(ROOT.parent / "shared" / "data")),
                                                  "sib200"))
    ap.add_argument("--source", default="eng_Latn")
    ap.add_argument("--lrs", default="1e-4,3e-4", help="learning rates tried on each side (best English dev wins)")
    ap.add_argument("--epochs", type=float, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--embeddings", default="auto", choices=["auto", "dense", "sparse", "frozen"],
                    help="how the word embeddings train during fine-tuning (both sides)")
    ap.add_argument("--out", default="runs/pretrain_zero_shot")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    langs = sorted(p.name for p in Path(args.sib).iterdir() if (p / "test.tsv").is_file())
    langs.remove(args.source)
    langs.insert(0, args.source)
    out = Path(args.out)
    sides = {"pretrained": args.model,
             "random init": str(random_init_copy(Path(args.model), out / "random_init", args.seed))}
    chosen = {}
    for name, model in sides.items():
        tries = [run(model, float(lr), args, langs, out / f"{name.replace(' ', '_')}_lr{lr}")
                 for lr in args.lrs.split(",")]
        for t in tries:
            print(f"{name}: lr {t['lr']:g}, English dev accuracy {t['dev_accuracy']:.4f}", file=sys.stderr)
        chosen[name] = max(tries, key=lambda t: t["dev_accuracy"])
    p, r = chosen["pretrained"], chosen["random init"]
    print(f"\nSIB-200, fine-tuned on {args.source} ({args.epochs:g} epochs, batch {args.batch_size}), "
          f"embeddings {args.embeddings}, zero-shot on {len(langs) - 1} languages; lr by English dev: pretrained {p['lr']:g}, random init {r['lr']:g}\n")
    print("| language | pretrained acc | random init acc | pretrained macro-F1 | random init macro-F1 |")
    print("|---|---:|---:|---:|---:|")
    for l in langs:
        a, b = p["test"][l], r["test"][l]
        print(f"| {l} | {a['accuracy']:.3f} | {b['accuracy']:.3f} | {a['macro_f1']:.3f} | {b['macro_f1']:.3f} |")
    zero = langs[1:]
    avg = {n: {k: sum(c["test"][l][k] for l in zero) / len(zero) for k in ("accuracy", "macro_f1")}
           for n, c in chosen.items()}
    print(f"| **zero-shot average** | **{avg['pretrained']['accuracy']:.3f}** | **{avg['random init']['accuracy']:.3f}** "
          f"| **{avg['pretrained']['macro_f1']:.3f}** | **{avg['random init']['macro_f1']:.3f}** |")
    gain = 100 * (avg["pretrained"]["accuracy"] - avg["random init"]["accuracy"])
    print(f"\nzero-shot accuracy gain from pretraining: {gain:+.1f} points")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "chosen": chosen, "average": avg}, indent=2) + "\n")


if __name__ == "__main__":
    main()
