"""Sentence embeddings: `embed(texts) -> (N, D) float32`, on PyTorch or onnxruntime, fp32 or int8.

Texts are tokenized in chunks, sorted by length, and cut into batches by a padded-token budget
(rows x longest row), so that little compute goes to padding; the output rows are in input order.
Pooling turns the last hidden states (B, T, D) into one vector per text: the masked mean (what e5
and sentence-transformers models were trained with), the first token ("cls"), or the masked maximum.

The ONNX back-end exports the encoder once per Embedder into a private temporary directory, fuses
the graph with onnxruntime's transformer optimizer (LayerNorm, GELU, attention where its pattern
matches) and, for int8, quantizes the matrix multiplications of the fused graph.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from .batching import sorted_batches
from .checkpoint import TASK_FILE, resolve
from .errors import XlmrError
from .hfconfig import DEFAULT_CHECKPOINT
from .io import atomic_write

Pooling = Literal["mean", "cls", "max"]
POOLINGS = ("mean", "cls", "max")
MAX_TOKENS = 4096  # padded tokens per model call (rows x longest row)
CHUNK = 8192  # texts tokenized and sorted together


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """(B, T, D) last hidden states and (B, T) attention mask -> (B, D) float32 sentence vectors."""
    h = hidden.float()
    if pooling == "cls":
        return h[:, 0]
    keep = mask[:, :, None].to(h.dtype)  # (B, T, 1)
    if pooling == "max":
        return h.masked_fill(keep == 0, float("-inf")).amax(1)
    if pooling == "mean":
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1.0)
    raise XlmrError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows (a zero row stays zero)."""
    return torch.nn.functional.normalize(x, dim=-1)


def embedding_options(directory: Path) -> dict:
    """The pooling and prefix a trained embedding model was saved with (xlmr_task.json), else {}."""
    path = directory / TASK_FILE
    if not path.is_file():
        return {}
    options = json.loads(path.read_text(encoding="utf-8")).get("options", {})
    return {k: options[k] for k in ("pooling", "prefix") if k in options}


class Embedder:
    """Load an encoder once; call it on lists of texts. `backend` torch or onnx, `quantize` none or int8.
    `pooling` and `prefix` default to what a trained embedding model saved, else mean and ""."""

    def __init__(self, model: str = DEFAULT_CHECKPOINT, pooling: Pooling | None = None, prefix: str | None = None,
                 backend: str = "torch", quantize: str = "none", device: str | None = None,
                 max_length: int | None = None, max_tokens: int = MAX_TOKENS):
        from .checkpoint import read_config
        from .model import max_positions
        from .tokenizer import Tokenizer

        directory = resolve(model)
        saved = embedding_options(directory)
        self.pooling = pooling or saved.get("pooling", "mean")
        if self.pooling not in POOLINGS:
            raise XlmrError(f"unknown --pooling {self.pooling!r}; expected one of {', '.join(POOLINGS)}")
        self.prefix = saved.get("prefix", "") if prefix is None else prefix
        config, _ = read_config(directory)
        limit = max_positions(config) or 512
        self.max_length = min(max_length or limit, limit)
        self.max_tokens = max(max_tokens, self.max_length)
        self.tokenizer = Tokenizer.from_pretrained(directory)
        self.model = load_encoder(directory, backend, quantize, device)
        self.device = next(self.model.parameters()).device
        self.dim = config.hidden_size
        self.truncated = 0  # texts cut at max_length so far

    @torch.inference_mode()
    def __call__(self, texts: list[str], normalize_rows: bool = False) -> np.ndarray:
        """(N, D) float32 embeddings of `texts`, in order."""
        if isinstance(texts, str):
            raise TypeError("embed takes a list of texts; wrap a single text in a list")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), CHUNK):
            chunk = [self.prefix + t for t in texts[start:start + CHUNK]]
            enc = self.tokenizer.encode(chunk, max_length=self.max_length)
            self.truncated += sum(1 for t in enc.truncated if t)
            lengths = [sum(m) for m in enc.attention_mask]
            for idx in sorted_batches(lengths, batch_size=512, max_tokens=self.max_tokens):
                T = max(lengths[i] for i in idx)
                ids = torch.tensor([enc.input_ids[i][:T] for i in idx], dtype=torch.long)
                mask = torch.tensor([enc.attention_mask[i][:T] for i in idx], dtype=torch.long)
                h = self.model(ids.to(self.device), mask.to(self.device), torch.zeros_like(ids).to(self.device))
                vecs = pool(h, mask.to(h.device), self.pooling)
                if normalize_rows:
                    vecs = normalize(vecs)
                out[[start + i for i in idx]] = vecs.cpu().numpy()
        return out


_CACHE: dict[tuple, Embedder] = {}


def embed(texts: list[str], model: str = DEFAULT_CHECKPOINT, pooling: Pooling | None = None,
          normalize: bool = False, prefix: str | None = None, backend: str = "torch", quantize: str = "none",
          max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """Sentence embeddings (N, D) float32 of `texts`, in input order. The loaded model is kept for the
    next call with the same model, pooling, prefix and back-end. e5 models want prefix="query: "."""
    key = (str(model), pooling, prefix, backend, quantize, max_tokens)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = Embedder(model, pooling, prefix, backend, quantize, max_tokens=max_tokens)
    return _CACHE[key](list(texts), normalize)


# -- back-ends ---------------------------------------------------------------------------------


def load_encoder(directory: Path, backend: str = "torch", quantize: str = "none",
                 device: str | None = None) -> nn.Module:
    """forward(ids, mask, types) -> last hidden states (B, T, D): PyTorch (fp32, or int8 dynamic
    quantization of the Linear layers) or onnxruntime (fp32 or int8), in eval mode."""
    if backend not in ("torch", "onnx"):
        raise XlmrError(f"unknown --backend {backend!r}; expected torch or onnx")
    if quantize not in ("none", "int8"):
        raise XlmrError(f"unknown --quantize {quantize!r}; expected none or int8")
    if backend == "onnx":
        if device not in (None, "cpu"):
            raise XlmrError(f"--backend onnx runs on the CPU only, not {device!r}")
        return onnx_encoder(directory, quantize).eval()
    from .checkpoint import load

    model = load(directory, head="base")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() and quantize == "none" else "cpu"))
    if quantize == "int8":
        if dev.type != "cpu":
            raise XlmrError("--quantize int8 runs on the CPU only; pass --device cpu")
        model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return model.to(dev).eval()


def export_encoder(model: nn.Module, path: Path) -> Path:
    """The encoder as ONNX: inputs (batch, sequence) ids, mask (and types), output last_hidden_state."""
    from .onnx_export import OPSET, input_names, sample_inputs

    names = input_names(model)
    example = sample_inputs(model, 2, 7)
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}

    def write(tmp):
        with warnings.catch_warnings():  # the TorchScript exporter warns about its own deprecation
            warnings.simplefilter("ignore")
            torch.onnx.export(model, tuple(example[n] for n in names), tmp, input_names=names,
                              output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=OPSET,
                              dynamo=False)

    return atomic_write(path, write)


def fuse_graph(src: Path, dst: Path, config) -> Path:
    """onnxruntime's transformer optimizer (what optimum's ORTOptimizer runs): fused LayerNorm, GELU,
    bias and attention subgraphs. Returns `src` unchanged where the optimizer cannot take the graph."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:
        return src
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = optimize_model(str(src), model_type="bert", num_heads=config.num_attention_heads,
                             hidden_size=config.hidden_size, opt_level=1)
    atomic_write(dst, lambda tmp: opt.save_model_to_file(tmp))
    return dst


def quantize_int8(src: Path, dst: Path) -> Path:
    """onnxruntime dynamic quantization of a (fused) graph: int8 per-channel weights for MatMul/Gemm.
    Fused contrib ops defeat ONNX shape inference, so untyped tensors are declared float32."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    atomic_write(dst, lambda tmp: quantize_dynamic(str(src), tmp, weight_type=QuantType.QInt8, per_channel=True,
                                                   op_types_to_quantize=["MatMul", "Gemm"],
                                                   extra_options={"DefaultTensorType": TensorProto.FLOAT}))
    return dst


_EXPORTS: dict[str, tuple] = {}  # resolved model directory -> (its temporary directory, fused fp32 graph)


def onnx_encoder(directory: Path, quantize: str = "none", threads: int | None = None):
    """The encoder on onnxruntime (an OnnxSession: forward(ids, mask, types) -> hidden states (B, T, D)).
    The model is exported and fused once per process, so fp32 and int8 share the export; int8 quantizes
    the fused graph."""
    from .checkpoint import load
    from .onnx_export import OnnxSession, max_difference, session_for

    key = str(Path(directory).resolve())
    if key not in _EXPORTS:  # one export per model and process: fp32 and int8 share it
        tmp = tempfile.TemporaryDirectory(prefix="xlmr-embed-onnx-")
        model = load(directory, head="base").eval()
        fused = fuse_graph(export_encoder(model, Path(tmp.name) / "encoder.onnx"),
                           Path(tmp.name) / "encoder.fused.onnx", model.config)
        diff = max_difference(model, session_for(fused, threads), shapes=((1, 5), (4, 40)))
        if not diff <= 1e-3:
            raise XlmrError(f"{directory}: the exported encoder differs from PyTorch by {diff:.3g}")
        _EXPORTS[key] = (tmp, fused)
    encoder = OnnxSession()
    encoder._tmp, path = _EXPORTS[key]
    if quantize == "int8":
        q = path.with_name("encoder.int8.onnx")
        path = q if q.is_file() else quantize_int8(path, q)
    encoder.open(path, threads)
    return encoder


def embed_file(model: str, input_path: str, output: str, pooling: Pooling | None = None, normalize: bool = False,
               prefix: str | None = None, backend: str = "torch", quantize: str = "none",
               max_tokens: int = MAX_TOKENS) -> int:
    """Embed every line of `input_path` (one text a line) into `output`: a .npy (N, D) float32 array, or
    .jsonl with one {"index", "embedding"} object per line. Written atomically; returns N."""
    from .tasks.base import lines_of, read_text

    out = Path(output)
    if out.suffix not in (".npy", ".jsonl"):
        raise XlmrError(f"{out}: --output must end in .npy or .jsonl")
    if out.is_dir():
        raise XlmrError(f"{out}: is a directory; --output names the file to write")
    texts = lines_of(read_text(input_path))
    if not texts:
        raise XlmrError(f"{input_path}: no input texts")
    embedder = Embedder(model, pooling, prefix, backend, quantize, max_tokens=max_tokens)
    vecs = embedder(texts, normalize)
    if embedder.truncated:
        warnings.warn(f"{input_path}: {embedder.truncated} text(s) longer than {embedder.max_length} tokens were "
                      f"cut to fit the model")

    def write(tmp):
        if out.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, vecs)
            return
        with open(tmp, "w", encoding="utf-8") as f:
            for i, v in enumerate(vecs):
                f.write(json.dumps({"index": i, "embedding": [round(float(x), 7) for x in v]}) + "\n")

    try:
        atomic_write(out, write)
    except OSError as e:
        raise XlmrError(f"{out}: cannot write the embeddings ({e.strerror or e})") from None
    return len(texts)
