"""Tatoeba retrieval: `xlmr evaluate --task retrieval` over every language against HF AutoModel +
mean pooling, the same pairs and the same scoring, each side in its own process.

    python bench/tatoeba_retrieval.py --data ../shared/data/tatoeba --max-eval 0 --threads 1

Prints per-language xxx->eng and eng->xxx accuracy of both sides, the averages and their difference,
and xlmr's mining F1 by ratio margin against plain nearest neighbour.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sides import peak_rss_mb, run_sides  # noqa: E402

MODEL = "multilingual-e5-small"
PREFIX = "query: "  # e5 is trained with "query: " / "passage: "; Tatoeba is symmetric, so query on both sides


def languages(data: Path) -> list[Path]:
    return sorted(d for d in data.iterdir() if d.is_dir())


def xlmr_side(args) -> dict:
    from xlmr.cli import main

    out = Path(tempfile.mkdtemp(prefix="tatoeba-xlmr-"))
    t0, c0 = time.perf_counter(), time.process_time()
    argv = ["evaluate", "--task", "retrieval", "--model", MODEL, "--prefix", PREFIX, "--out", str(out),
            "--threads", str(args.threads), "--max-eval", str(args.max_eval),
            "--test", *map(str, languages(Path(args.data)))]
    print("xlmr " + " ".join(argv), file=sys.stderr)
    if main(argv):
        sys.exit("xlmr evaluate failed")
    res = json.loads((out / "results.json").read_text())
    return {"languages": res["languages"], "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "peak_mb": peak_rss_mb()}


def hf_side(args) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    from xlmr.checkpoint import resolve

    torch.set_num_threads(args.threads)
    directory = str(resolve(MODEL))
    tok, model = AutoTokenizer.from_pretrained(directory), AutoModel.from_pretrained(directory).eval()
    t0, c0 = time.perf_counter(), time.process_time()

    def embed(texts):
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # length-sorted batches of 64
        out = np.zeros((len(texts), model.config.hidden_size), np.float32)
        for s in range(0, len(order), 64):
            idx = order[s:s + 64]
            b = tok([PREFIX + texts[i] for i in idx], padding=True, truncation=True, max_length=128,
                    return_tensors="pt")
            with torch.inference_mode():
                h = model(**b).last_hidden_state
            m = b["attention_mask"][..., None].float()
            v = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
            out[idx] = v.numpy()
        return out

    results = {}
    for d in languages(Path(args.data)):
        lang = d.name
        src = (d / f"{lang}-eng.{lang}").read_text(encoding="utf-8").splitlines()
        tgt = (d / f"{lang}-eng.eng").read_text(encoding="utf-8").splitlines()
        if args.max_eval:
            src, tgt = src[:args.max_eval], tgt[:args.max_eval]
        a, b = embed(src), embed(tgt)
        s = a @ b.T
        gold = np.arange(len(src))
        results[lang] = {"src2tgt": float((s.argmax(1) == gold).mean()), "tgt2src": float((s.argmax(0) == gold).mean())}
    return {"languages": results, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "peak_mb": peak_rss_mb()}


def report(res: dict) -> None:
    x, h = res["xlmr"]["languages"], res["hf"]["languages"]
    mean = lambda d, k: sum(m[k] for m in d.values()) / len(d)
    print(f"{'lang':6} {'pairs':>5} {'xlmr xx>en':>10} {'hf xx>en':>9} {'xlmr en>xx':>10} {'hf en>xx':>9} "
          f"{'margin F1':>9} {'NN F1':>6}")
    for lang in x:
        print(f"{lang:6} {x[lang]['pairs']:5d} {x[lang]['src2tgt']:10.4f} {h[lang]['src2tgt']:9.4f} "
              f"{x[lang]['tgt2src']:10.4f} {h[lang]['tgt2src']:9.4f} {x[lang]['margin_f1']:9.4f} "
              f"{x[lang]['nn_f1']:6.4f}")
    print(f"{'avg':6} {'':5} {mean(x, 'src2tgt'):10.4f} {mean(h, 'src2tgt'):9.4f} {mean(x, 'tgt2src'):10.4f} "
          f"{mean(h, 'tgt2src'):9.4f} {mean(x, 'margin_f1'):9.4f} {mean(x, 'nn_f1'):6.4f}")
    print(f"xx>en average, xlmr - hf: {100 * (mean(x, 'src2tgt') - mean(h, 'src2tgt')):+.2f} points; "
          f"margin F1 > NN F1 in {sum(m['margin_f1'] > m['nn_f1'] for m in x.values())}/{len(x)} languages")
    for side in ("xlmr", "hf"):
        r = res[side]
        print(f"{side}: {r['wall']:.0f} s wall, {r['cpu']:.0f} s CPU, peak {r['peak_mb']:.0f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/tatoeba")
    p.add_argument("--max-eval", type=int, default=0, help="the first N pairs of every language (0: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--side", choices=["xlmr", "hf"], default=None)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    if args.side:
        print(json.dumps((xlmr_side if args.side == "xlmr" else hf_side)(args)))
        return
    argv = ["--data", args.data, "--max-eval", str(args.max_eval), "--threads", str(args.threads)]
    res = run_sides(__file__, ["xlmr", "hf"], argv, args.threads)
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
