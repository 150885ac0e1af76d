"""`xlmr finetune`, `xlmr evaluate` and `xlmr predict`."""

from __future__ import annotations

from ..options import add_command, add_dataclass_args, build


def _finetuneconfig():
    from ..finetune import FinetuneConfig  # torch and more: imported only when this command runs

    return FinetuneConfig


def register(sub) -> None:
    p = add_command(sub, "finetune", "fine-tune for NER, POS, classification or QA and evaluate cross-lingually",
                    "xlmr finetune --model DIR --task ner --train en/train.conll --dev en/dev.conll "
                    "--test de=de/test.conll fr=fr/test.conll --out runs/ner")
    p.add_argument("--config", default=None, help="YAML file with any of these options")
    add_dataclass_args(p, _finetuneconfig)
    p.set_defaults(func=run_finetune)

    p = add_command(sub, "evaluate", "evaluate a fine-tuned model on test sets, one row per language",
                    "xlmr evaluate --model runs/ner/best --test de=de/test.conll nl=nl/test.conll")
    p.add_argument("--model", required=True, help="fine-tuned checkpoint directory")
    p.add_argument("--test", nargs="+", required=True, help="test sets as LANG=PATH")
    p.add_argument("--out", default="runs/evaluate", help="where results.json and report.md go")
    p.add_argument("--task", default=None, help="task, if the model directory does not say")
    p.add_argument("--max-eval", type=int, default=0, help="only the first N examples per set (0: all)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: the cores the load leaves idle)")
    p.add_argument("--language-adapter", nargs="+", default=[], help="MAD-X: LANG=DIR language adapter per test set")
    p.add_argument("--unseen-labels", choices=["error", "outside"], default="error",
                   help="a gold label the model was not trained on: an error, or (ner) scored as O")
    p.add_argument("--pooling", choices=["mean", "cls", "max"], default=None,
                   help="retrieval: sentence vector from the token vectors (default: the model's, else mean)")
    p.add_argument("--prefix", default=None, help="retrieval: text before every sentence (e5: 'query: ')")
    p.set_defaults(func=run_evaluate)

    p = add_command(sub, "predict", "predict labels, entities or answers for text lines or JSONL",
                    "xlmr predict --model runs/ner/best --input texts.txt --output predictions.jsonl")
    p.add_argument("--model", required=True, help="fine-tuned checkpoint directory")
    p.add_argument("--input", required=True,
                   help="text file (one input per line), or .jsonl with \"text\" (qa: \"question\" and \"context\")")
    p.add_argument("--output", required=True, help="JSONL output file")
    p.add_argument("--batch", type=int, default=256, help="texts per model call")
    p.add_argument("--quantize", choices=["none", "int8"], default="none", help="int8 dynamic quantization")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="PyTorch or onnxruntime")
    p.add_argument("--task", default=None, help="task, if the model directory does not say")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: the cores the load leaves idle)")
    p.add_argument("--words", choices=["split", "tokenizer"], default="split",
                   help="ner/pos: words are whitespace-separated (split), or come from the tokenizer, for raw text "
                        "in scripts without spaces such as zh, ja, th (tokenizer)")
    p.set_defaults(func=run_predict)


def run_finetune(args) -> int:
    from ..finetune import FinetuneConfig, finetune

    cfg = build(FinetuneConfig, args, args.config)
    summary = finetune(cfg)
    print(f"best model: {summary['model']} (dev {summary['best_dev']}), {summary['steps']} steps in "
          f"{summary['train_seconds']} s")
    return 0


def run_evaluate(args) -> int:
    from ..finetune import evaluate_model
    from ..train import set_threads

    set_threads(args.threads)
    options = {k: getattr(args, k) for k in ("pooling", "prefix") if getattr(args, k) is not None}
    evaluate_model(args.model, args.test, args.out, args.task, args.max_eval, args.language_adapter, args.unseen_labels,
                   options)
    print(f"wrote {args.out}/results.json and {args.out}/report.md")
    return 0


def run_predict(args) -> int:
    from ..predict import predict_file
    from ..train import set_threads

    set_threads(args.threads)
    n = predict_file(args.model, args.input, args.output, args.batch, args.quantize, args.task, args.backend,
                     args.words)
    print(f"wrote {n} predictions to {args.output}")
    return 0
