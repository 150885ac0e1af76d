"""`xlmr demo`: the whole pipeline offline on chatterbot-corpus (see xlmr/demo.py)."""

from __future__ import annotations

from ..options import add_command


def register(sub) -> None:
    p = add_command(sub, "demo", "run the whole pipeline offline: tokenizer, pretraining, English fine-tuning, "
                    "zero-shot evaluation in other languages, predictions", "xlmr demo --quick")
    p.add_argument("--quick", action="store_true", help="a 2-minute version with smaller budgets")
    p.add_argument("--out", default="runs/demo", help="where everything goes")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo

    run_demo(quick=args.quick, out=args.out)
    return 0
