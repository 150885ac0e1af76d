"""Batched prediction for fine-tuned models: labels and probabilities, or entities with offsets."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import resolve
from .errors import XlmrError
from .io import atomic_write
from .tasks.base import MAX_LENGTH, STRIDE
from .tokenizer import Tokenizer


class Predictor:
    """Load a fine-tuned model once; call it on a list of texts."""

    def __init__(self, model_path: str, task: str | None = None, quantize: str = "none", device: str | None = None,
                 backend: str = "torch"):
        from .checkpoint import load_task_info
        from .onnx_export import load_backend
        from .tasks import get_task

        directory = resolve(model_path)
        info = load_task_info(directory, task)
        self.model = load_backend(directory, backend, quantize, device)  # torch or onnxruntime, fp32 or int8
        self.device = next(self.model.parameters()).device
        self.task = get_task(info["task"], **info.get("options", {}))
        self.task.set_labels(self.model.config.id2label)
        self.tokenizer = Tokenizer.from_pretrained(directory)
        self.max_length, self.stride = info.get("max_length", MAX_LENGTH), info.get("stride", STRIDE)

    @torch.inference_mode()
    def __call__(self, texts: list[str], pairs: list[str] | None = None) -> list[dict]:
        from .tasks import ClassPrediction, TextExample, WordExample, char_entities, run_model, split_words

        if self.task.head == "sequence":
            examples = [TextExample(t, pairs[i] if pairs else None) for i, t in enumerate(texts)]
        else:
            split = [split_words(t) for t in texts]
            examples = [WordExample(words, None) for words, _ in split]
        features = self.task.encode(examples, self.tokenizer, self.max_length, self.stride)
        outputs = run_model(self.model, self.task, features, self.tokenizer.pad_token_id) if features else []
        preds = self.task.predict(outputs, features, examples)
        results = []
        for i, (text, pred) in enumerate(zip(texts, preds)):
            if isinstance(pred, ClassPrediction):
                results.append({"text": text, "label": pred.label,
                                "probs": {l: round(float(p), 6) for l, p in zip(self.task.labels, pred.probs)}})
            else:
                results.append({"text": text, "entities": char_entities(text, split[i][1], pred.tags, pred.scores)}
                               if self.task.name == "ner" else
                               {"text": text, "tags": pred.tags, "words": split[i][0]})
        return results


def read_inputs(path: str) -> tuple[list[str], list[str] | None]:
    """Text lines, or JSONL objects with "text" (and optional "text_pair")."""
    p = Path(path)
    if not p.is_file():
        raise XlmrError(f"{p}: no such file")
    texts, pairs = [], []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if p.suffix == ".jsonl":
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise XlmrError(f"{p}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise XlmrError(f'{p}:{n}: expected an object with a "text" string')
            texts.append(obj["text"])
            pairs.append(obj.get("text_pair"))
        else:
            texts.append(line)
    if not texts:
        raise XlmrError(f"{p}: no input texts")
    return texts, (pairs if any(x is not None for x in pairs) else None)


def predict_file(model: str, input_path: str, output: str, batch: int = 256, quantize: str = "none",
                 task: str | None = None, backend: str = "torch") -> int:
    """Predict every input line and write JSONL (atomically). Returns the number of predictions."""
    predictor = Predictor(model, task=task, quantize=quantize, backend=backend)
    texts, pairs = read_inputs(input_path)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            for s in range(0, len(texts), batch):
                chunk_pairs = pairs[s:s + batch] if pairs else None
                for r in predictor(texts[s:s + batch], chunk_pairs):
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")

    atomic_write(output, write)
    return len(texts)


