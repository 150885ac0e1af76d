"""`xlmr embed`: sentence embeddings of a text file, one text a line."""

from __future__ import annotations

from ..options import add_command


def register(sub) -> None:
    p = add_command(sub, "embed", "sentence embeddings of text lines (.npy or .jsonl)",
                    "xlmr embed --model multilingual-e5-small --prefix 'query: ' --normalize --input texts.txt "
                    "--output vectors.npy")
    p.add_argument("--model", default="multilingual-e5-small", help="encoder checkpoint directory or name")
    p.add_argument("--input", required=True, help="text file, one text a line")
    p.add_argument("--output", required=True, help=".npy (N x D float32) or .jsonl output file")
    p.add_argument("--pooling", choices=["mean", "cls", "max"], default=None,
                   help="token vectors -> sentence vector (default: the model's, else mean)")
    p.add_argument("--normalize", action="store_true", help="L2-normalise every embedding")
    p.add_argument("--prefix", default=None, help="text put before every line (e5: 'query: ' or 'passage: ')")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="PyTorch or onnxruntime")
    p.add_argument("--quantize", choices=["none", "int8"], default="none", help="int8 dynamic quantization")
    p.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per model call")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: the cores the load leaves idle)")
    p.set_defaults(func=run_embed)


def run_embed(args) -> int:
    from ..embeddings import embed_file
    from ..train import set_threads

    set_threads(args.threads)
    n = embed_file(args.model, args.input, args.output, args.pooling, args.normalize, args.prefix, args.backend,
                   args.quantize, args.max_tokens)
    print(f"wrote {n} embeddings to {args.output}")
    return 0
