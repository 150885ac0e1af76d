"""`xlmr serve` and `xlmr export-onnx`."""

from __future__ import annotations

from ..options import add_command, add_dataclass_args, build


def _serveconfig():
    from ..serve import ServeConfig  # torch and more: imported only when this command runs

    return ServeConfig


def register(sub) -> None:
    p = add_command(sub, "serve", "serve a fine-tuned model over HTTP (micro-batching, limits, metrics, web page)",
                    "xlmr serve --model runs/ner/best --port 8000 --backend onnx --quantize int8")
    p.add_argument("--config", default=None, help="YAML file with any of these options")
    add_dataclass_args(p, _serveconfig)
    p.set_defaults(func=run_serve)

    p = add_command(sub, "export-onnx", "export a fine-tuned model to ONNX (checked against PyTorch)",
                    "xlmr export-onnx --model runs/ner/best --out runs/ner/onnx --quantize int8")
    p.add_argument("--model", required=True, help="fine-tuned checkpoint directory")
    p.add_argument("--out", required=True, help="output directory (model.onnx, config and tokenizer files)")
    p.add_argument("--quantize", choices=["none", "int8"], default="none", help="also write model.int8.onnx")
    p.set_defaults(func=run_export)


def run_serve(args) -> int:
    from ..serve import ServeConfig, serve

    serve(build(ServeConfig, args, args.config))
    return 0


def run_export(args) -> int:
    from ..onnx_export import export_onnx

    r = export_onnx(args.model, args.out, args.quantize)
    print(f"wrote {r['onnx']} (max |logit diff| vs PyTorch {r['max_diff']:.2e})"
          + (f" and {r['int8']}" if r["int8"] else ""))
    return 0
