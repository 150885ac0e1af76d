"""`xlmr merge` and `xlmr adapt-language`: the adapter workflows beside `finetune --peft`."""

from __future__ import annotations

from ..options import add_command, add_dataclass_args, build


def _adaptlanguageconfig():
    from ..adapt_language import AdaptLanguageConfig  # torch and more: imported only when this command runs

    return AdaptLanguageConfig


def register(sub) -> None:
    p = add_command(sub, "merge", "fold a LoRA (or BitFit) adapter into the base weights: a plain HF checkpoint",
                    "xlmr merge --model base_dir --adapter runs/ner-lora/best --out merged/")
    p.add_argument("--model", default=None, help="base checkpoint (default: the one the adapter names)")
    p.add_argument("--adapter", required=True, help="adapter directory (adapter_config.json + safetensors)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.set_defaults(func=run_merge)

    p = add_command(sub, "adapt-language", "train a MAD-X language adapter with MLM on raw text",
                    "xlmr adapt-language --model base_dir --corpus corpus/deu_Latn.txt --language de --out ad/de")
    p.add_argument("--config", default=None, help="YAML file with any of these options")
    add_dataclass_args(p, _adaptlanguageconfig)
    p.set_defaults(func=run_adapt_language)


def run_merge(args) -> int:
    from ..peft_methods import merge

    out = merge(args.model, args.adapter, args.out)
    print(f"wrote merged checkpoint {out}")
    return 0


def run_adapt_language(args) -> int:
    from ..adapt_language import AdaptLanguageConfig, adapt_language

    cfg = build(AdaptLanguageConfig, args, args.config)
    s = adapt_language(cfg)
    before, after = s["held_out_before"], s["held_out_after"]
    change = f", held-out MLM loss {before['loss']:.3f} -> {after['loss']:.3f}" if before and after else ""
    print(f"wrote language adapter '{s['language']}' to {cfg.out} ({s['saved_bytes']:,} bytes, "
          f"{s['steps']} steps{change})")
    return 0
