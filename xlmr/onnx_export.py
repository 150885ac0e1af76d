"""ONNX export, onnxruntime inference and int8 quantization for fine-tuned models.

An exported directory is a complete model directory: `model.onnx` (dynamic batch and sequence
axes), optionally `model.int8.onnx`, plus the source's config.json, tokenizer files and
xlmr_task.json, so `Predictor(dir, backend="onnx")` and `xlmr serve --backend onnx` read it alone.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import load, read_config, resolve
from .errors import XlmrError
from .io import atomic_write

ONNX_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"
SIDE_FILES = ("config.json", "xlmr_task.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "vocab.txt", "sentencepiece.bpe.model")
OPSET = 17
TOLERANCE = 1e-4  # max |logit difference| accepted between ONNX and PyTorch


def input_names(model: nn.Module) -> list[str]:
    """Graph inputs: token_type_ids only for models that have type embeddings."""
    names = ["input_ids", "attention_mask"]
    return names + ["token_type_ids"] if model.config.type_vocab_size > 0 else names


def sample_inputs(model: nn.Module, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids (never the pad id) with right padding on every other row: (B, T) tensors."""
    g = torch.Generator().manual_seed(seed)
    pad = model.config.pad_token_id
    ids = torch.randint(3, model.config.vocab_size, (batch, length), generator=g)
    ids[ids == pad] = pad + 2
    mask = torch.ones_like(ids)
    for row in range(1, batch, 2):  # padded rows exercise the attention mask
        keep = max(1, length - (row * length) // (2 * batch) - 1)
        ids[row, keep:], mask[row, keep:] = pad, 0
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in input_names(model):
        out["token_type_ids"] = torch.zeros_like(ids)
    return out


def max_difference(model: nn.Module, session, shapes=((1, 5), (8, 300))) -> float:
    """Largest |ONNX - PyTorch| over the logits of real tokens, for each (batch, length) in `shapes`."""
    worst = 0.0
    limit = model.config.max_position_embeddings - 2  # RoBERTa positions start after the pad id
    for b, t in shapes:
        x = sample_inputs(model, b, min(t, limit))
        with torch.no_grad():
            ref = model(**x).numpy()
        got = session.run(None, {k: v.numpy() for k, v in x.items()})[0]
        diff = np.abs(got - ref)
        if diff.ndim == 3:  # token logits: padding positions are not outputs anyone reads
            diff = diff[x["attention_mask"].numpy().astype(bool)]
        worst = max(worst, float(diff.max()))
    return worst


def session_for(path: Path, threads: int | None = None):
    """An onnxruntime CPU session using as many threads as torch does."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def quantize_int8(src: Path, dst: Path) -> Path:
    """onnxruntime dynamic quantization: int8 weights for MatMul/Gemm (the Linear layers)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # per-channel scales: per-tensor ones cost ~2 F1 points on the MiniLM NER model (docs/serving.md)
    atomic_write(dst, lambda tmp: quantize_dynamic(str(src), tmp, weight_type=QuantType.QInt8,
                                                   op_types_to_quantize=["MatMul", "Gemm"], per_channel=True))
    return dst


def export_onnx(model_path: str, out: str, quantize: str = "none", check: bool = True) -> dict:
    """Export a fine-tuned checkpoint to `out/model.onnx` (+ int8), checked against PyTorch.

    Returns {"onnx": path, "max_diff": float, "int8": path or None}. Raises XlmrError when the
    ONNX logits differ from PyTorch's by more than TOLERANCE.
    """
    src = resolve(model_path)
    model = load(src).eval()
    if model.head not in ("sequence", "token"):
        raise XlmrError(f"{src}: export-onnx needs a fine-tuned model (sequence or token head), got '{model.head}'")
    dst = Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    names = input_names(model)
    example = sample_inputs(model, 2, 7)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"} if model.head == "sequence" else {0: "batch", 1: "sequence"}

    def write(tmp):
        with warnings.catch_warnings():  # the TorchScript exporter warns about its own deprecation
            warnings.simplefilter("ignore")
            torch.onnx.export(model, tuple(example[n] for n in names), tmp, input_names=names,
                              output_names=["logits"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)

    atomic_write(dst / ONNX_FILE, write)
    for name in SIDE_FILES:
        if (src / name).is_file() and src.resolve() != dst.resolve():
            shutil.copyfile(src / name, dst / name)
    result = {"onnx": str(dst / ONNX_FILE), "max_diff": None, "int8": None}
    if check:
        diff = max_difference(model, session_for(dst / ONNX_FILE))
        result["max_diff"] = diff
        if not diff <= TOLERANCE:
            raise XlmrError(f"{dst / ONNX_FILE}: ONNX logits differ from PyTorch by {diff:.3g} (> {TOLERANCE})")
    if quantize == "int8":
        result["int8"] = str(quantize_int8(dst / ONNX_FILE, dst / INT8_FILE))
    return result


class OnnxSession(nn.Module):
    """An onnxruntime session behind a model's interface: forward(ids, mask, types) -> the graph's first
    output as a tensor. It holds one empty parameter so code that asks `next(model.parameters()).device`
    sees the CPU; a subclass builds the graph and calls `open`."""

    def __init__(self):
        super().__init__()
        self._anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def open(self, path: Path, threads: int | None = None) -> None:
        self.path = path
        self.session = session_for(path, threads)
        self.names = [i.name for i in self.session.get_inputs()]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        out = self.session.run(None, {n: feed[n].cpu().numpy().astype(np.int64) for n in self.names})[0]
        return torch.from_numpy(out)


class OnnxModel(OnnxSession):
    """The Model interface on onnxruntime: forward(ids, mask, types) -> logits tensor."""

    def __init__(self, directory: Path, quantize: str = "none"):
        super().__init__()
        self.config, self.head = read_config(directory)
        self._tmp = None
        path = directory / ONNX_FILE
        if not path.is_file():  # a torch checkpoint: export it to a private temporary directory
            self._tmp = tempfile.TemporaryDirectory(prefix="xlmr-onnx-")
            export_onnx(str(directory), self._tmp.name, quantize=quantize)
            path = Path(self._tmp.name) / ONNX_FILE
        if quantize == "int8":
            q = path.with_name(INT8_FILE)
            if not q.is_file():
                if self._tmp is None:
                    self._tmp = tempfile.TemporaryDirectory(prefix="xlmr-onnx-")
                q = quantize_int8(path, Path(self._tmp.name) / INT8_FILE)
            path = q
        self.open(path)



def load_backend(model_path: str, backend: str = "torch", quantize: str = "none",
                 device: str | None = None) -> nn.Module:
    """The model to run: PyTorch (fp32 or int8 dynamic) or onnxruntime (fp32 or int8), in eval mode."""
    if backend not in ("torch", "onnx"):
        raise XlmrError(f"unknown --backend {backend!r}; expected torch or onnx")
    if quantize not in ("none", "int8"):
        raise XlmrError(f"unknown --quantize {quantize!r}; expected none or int8")
    directory = resolve(model_path)
    if backend == "onnx":
        if device not in (None, "cpu"):
            raise XlmrError(f"--backend onnx runs on the CPU only, not {device!r}")
        return OnnxModel(directory, quantize).eval()
    if (directory / ONNX_FILE).is_file() and not (directory / "model.safetensors").is_file() \
            and not (directory / "pytorch_model.bin").is_file():
        raise XlmrError(f"{directory}: holds only an ONNX model; use --backend onnx")
    from .peft_methods import load_model

    model = load_model(directory)  # a checkpoint, or a base + adapter directory
    auto = "cuda" if torch.cuda.is_available() and quantize == "none" else "cpu"
    dev = torch.device(device or auto)
    if quantize == "int8":
        if dev.type != "cpu":
            raise XlmrError("--quantize int8 runs on the CPU only; pass --device cpu")
        model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return model.to(dev).eval()
