"""`xlmr demo`: the whole pipeline offline on chatterbot-corpus (see xlmr/demo.py)."""

from __future__ import annotations

from ..options import add_command


def register(sub) -> None:
    p = add_command(sub, "demo", "run the whole pipeline offline: a pretrained multilingual encoder fine-tuned "
                    "in English (full and LoRA), zero-shot evaluation in other languages, predictions",
                    "xlmr demo --quick")
    p.add_argument("--quick", action="store_true", help="a shorter version with smaller budgets")
    p.add_argument("--from-scratch", action="store_true",
                   help="train a tokenizer and pretrain a tiny encoder with MLM instead of using --model")
    p.add_argument("--model", default="multilingual-e5-small", help="the pretrained encoder to fine-tune")
    p.add_argument("--out", default="runs/demo", help="where everything goes")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo

    run_demo(quick=args.quick, out=args.out, from_scratch=args.from_scratch, model=args.model)
    return 0
