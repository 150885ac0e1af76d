"""`xlmr pretrain` and `xlmr export`."""

from __future__ import annotations

from ..options import add_command, add_dataclass_args, build


def _pretrainconfig():
    from ..pretrain import PretrainConfig  # torch and more: imported only when this command runs

    return PretrainConfig


def register(sub) -> None:
    p = add_command(sub, "pretrain", "pretrain an encoder with masked language modelling (torchrun for many "
                    "processes)", "xlmr pretrain --data runs/data --tokenizer runs/tok --preset small "
                    "--max-steps 2000 --out runs/pretrain")
    p.add_argument("--config", default=None, help="YAML file with any of these options")
    add_dataclass_args(p, _pretrainconfig)
    p.set_defaults(func=run_pretrain)

    p = add_command(sub, "export", "turn a pretraining checkpoint into a transformers-loadable directory",
                    "xlmr export runs/pretrain runs/pretrain-hf")
    p.add_argument("run", help="output directory of `xlmr pretrain`")
    p.add_argument("out", help="directory to write (config.json + model.safetensors + tokenizer)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.set_defaults(func=run_export)


def run_pretrain(args) -> int:
    from ..pretrain import PretrainConfig, pretrain

    summary = pretrain(build(PretrainConfig, args, args.config))
    ev = summary["eval"]
    extra = f", held-out loss {ev['eval_loss']:.4f}, accuracy {ev['eval_accuracy']:.4f}" if ev else ""
    if ev and summary.get("eval_start"):
        extra += f" (before: {summary['eval_start']['loss']:.4f})"
    print(f"pretrained {summary['steps']} steps in {summary['seconds']} s{extra}; model in {summary['final']}")
    return 0


def run_export(args) -> int:
    from ..pretrain import export_checkpoint

    out = export_checkpoint(args.run, args.out, args.step)
    print(f"wrote {out}")
    return 0
