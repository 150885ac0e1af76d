"""Inference speed at accuracy: HF `pipeline` vs xlmr back-ends on a WikiANN-en NER model, one process.

Every setting gets the same texts (the first N test sentences, words joined by spaces) and returns
character-offset entities; these are mapped back to word tags and scored with seqeval against gold.

    PYTHONPATH=. python bench/serve_speed.py --model runs/serve_ner/best --threads 2 --json out.json
"""

import argparse
import json
import os
import sys
import time

import torch


def word_tags(spans: list[tuple[int, int]], entities: list[dict]) -> list[str]:
    """IOB2 word tags from entities given as {start, end, type}: words that overlap an entity take it."""
    tags = ["O"] * len(spans)
    for e in sorted(entities, key=lambda e: e["start"]):
        inside = [i for i, (a, b) in enumerate(spans) if a < e["end"] and b > e["start"] and tags[i] == "O"]
        for k, i in enumerate(inside):
            tags[i] = ("B-" if k == 0 else "I-") + e["type"]
    return tags


def hf_runner(model: str, batch_size: int):
    from transformers import pipeline

    pipe = pipeline("token-classification", model=model, aggregation_strategy="first", device=-1)

    def run(texts):
        out = pipe(texts, batch_size=batch_size)
        return [[{"start": e["start"], "end": e["end"], "type": e["entity_group"]} for e in ents] for ents in out]
    return run


def xlmr_runner(model: str, backend: str, quantize: str, chunk: int):
    from xlmr.predict import Predictor

    predictor = Predictor(model, backend=backend, quantize=quantize, device="cpu")

    def run(texts):
        out = []
        for s in range(0, len(texts), chunk):
            out += [r["entities"] for r in predictor(texts[s:s + chunk])]
        return out
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="fine-tuned NER directory (xlmr finetune out/best)")
    data = os.environ.get("XLMR_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))
    ap.add_argument("--test", default=os.path.join(data, "wikiann", "en", "test.conll"),
                    help="WikiANN test file ($XLMR_DATA/wikiann/en/test.conll)")
    ap.add_argument("--n", type=int, default=2000, help="first N test sentences")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per setting (best kept)")
    ap.add_argument("--chunk", type=int, default=256, help="texts per xlmr Predictor call")
    ap.add_argument("--only", nargs="*", default=None, help="setting names to run (default: all)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from seqeval.metrics import f1_score

    from xlmr.onnx_export import export_onnx
    from xlmr.tasks import get_task, split_words

    torch.set_num_threads(args.threads)
    examples = get_task("ner").read(args.test)[:args.n]
    texts = [" ".join(ex.words) for ex in examples]
    spans = [split_words(t)[1] for t in texts]
    gold = [ex.tags for ex in examples]
    onnx_dir = os.path.join(args.model, "..", "onnx")
    if not os.path.isfile(os.path.join(onnx_dir, "model.int8.onnx")):
        export_onnx(args.model, onnx_dir, quantize="int8")

    settings = {
        "HF pipeline, batch 1": lambda: hf_runner(args.model, 1),
        "HF pipeline, batch 32": lambda: hf_runner(args.model, 32),
        "xlmr torch fp32": lambda: xlmr_runner(args.model, "torch", "none", args.chunk),
        "xlmr torch int8": lambda: xlmr_runner(args.model, "torch", "int8", args.chunk),
        "xlmr onnx fp32": lambda: xlmr_runner(onnx_dir, "onnx", "none", args.chunk),
        "xlmr onnx int8": lambda: xlmr_runner(onnx_dir, "onnx", "int8", args.chunk),
    }
    runners = {name: make() for name, make in settings.items() if not args.only or name in args.only}
    for run in runners.values():
        run(texts[:64])  # warm-up
    times = {name: [] for name in runners}
    preds = {}
    for _ in range(args.repeats):  # interleaved, so background load hits every setting alike
        for name, run in runners.items():
            t0 = time.perf_counter()
            preds[name] = run(texts)
            times[name].append(time.perf_counter() - t0)
            print(f"{name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
    rows = []
    for name in runners:
        tags = [word_tags(s, ents) for s, ents in zip(spans, preds[name])]
        best = min(times[name])
        rows.append({"setting": name, "seconds": round(best, 3), "sentences_per_s": round(len(texts) / best, 1),
                     "f1": round(100 * f1_score(gold, tags), 2), "all_seconds": [round(t, 3) for t in times[name]]})
    hf = max((r["sentences_per_s"] for r in rows if r["setting"].startswith("HF")), default=None)
    fp32 = next((r["f1"] for r in rows if r["setting"] == "xlmr torch fp32"), None)
    print(f"{len(texts)} sentences, {args.threads} threads, torch {torch.__version__}, load avg {os.getloadavg()}")
    print("| setting | sentences/s | × best HF | entity F1 | Δ F1 vs xlmr fp32 |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        speed = f"{r['sentences_per_s'] / hf:.2f}" if hf else "-"
        delta = f"{r['f1'] - fp32:+.2f}" if fp32 is not None else "-"
        print(f"| {r['setting']} | {r['sentences_per_s']} | {speed} | {r['f1']:.2f} | {delta} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "threads": args.threads, "n": len(texts), "load": os.getloadavg()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
