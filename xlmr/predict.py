"""Batched prediction for fine-tuned models: labels and probabilities, entities or answers with offsets.

Words of NER/POS input (`words`): `split` (the default) takes the whitespace-separated words of each
text, as a word-split sentence is written; `tokenizer` takes them from the tokenizer, for raw text in
scripts written without spaces (Chinese, Japanese, Thai...): see `tasks.words.tokenizer_words`.
Either way, entity offsets are character offsets into the text as given.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import resolve
from .errors import XlmrError
from .io import atomic_write
from .tasks.base import MAX_LENGTH, STRIDE
from .tokenizer import Tokenizer, as_batch

WORDS = ("split", "tokenizer")  # where NER/POS words come from: whitespace, or the tokenizer (raw text)


class Predictor:
    """Load a fine-tuned model once; call it on a list of texts."""

    def __init__(self, model_path: str, task: str | None = None, quantize: str = "none", device: str | None = None,
                 backend: str = "torch", words: str = "split"):
        from .checkpoint import load_task_info
        from .onnx_export import load_backend
        from .tasks import get_task

        if words not in WORDS:
            raise XlmrError(f"unknown --words {words!r}; expected one of {', '.join(WORDS)}")
        self.words = words
        directory = resolve(model_path)
        info = load_task_info(directory, task)
        self.model = load_backend(directory, backend, quantize, device)  # torch or onnxruntime, fp32 or int8
        self.device = next(self.model.parameters()).device
        self.task = get_task(info["task"], **info.get("options", {}))
        self.task.set_labels(self.model.config.id2label)
        self.tokenizer = Tokenizer.from_pretrained(directory)
        self.max_length, self.stride = info.get("max_length", MAX_LENGTH), info.get("stride", STRIDE)

    @torch.inference_mode()
    def __call__(self, texts: str | list[str], pairs: str | list[str | None] | None = None) -> list[dict]:
        """One prediction per text, in order. A str is one text; a blank text gets an empty prediction
        (no label, no entities, no tags) without reaching the model."""
        texts, pairs = as_batch(texts, pairs)
        out = [self.task.empty_prediction(t) for t in texts]
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if keep:
            found = self._predict([texts[i] for i in keep], [pairs[i] for i in keep] if pairs else None)
            for i, r in zip(keep, found):
                out[i] = r
        return out

    def _predict(self, texts: list[str], pairs: list[str | None] | None) -> list[dict]:
        from .tasks import run_model

        if self.words == "tokenizer":
            examples = self.task.examples_from_raw(texts, self.tokenizer, pairs)
        else:
            examples = [self.task.example_from_text(t, pairs[i] if pairs else None) for i, t in enumerate(texts)]
        features = self.task.encode(examples, self.tokenizer, self.max_length, self.stride)
        outputs = run_model(self.model, self.task, features, self.tokenizer.pad_token_id) if features else []
        preds = self.task.predict(outputs, features, examples)
        return [self.task.to_json(t, ex, pred) for t, ex, pred in zip(texts, examples, preds)]


def read_inputs(path: str) -> tuple[list[str], list[str | None] | None]:
    """One input per line of the file: text lines, or JSONL objects with "text" (and optional "text_pair"),
    or with "question" and "context" (question answering: the question is the text, the context its pair).

    Lines are split on \\n only, so a U+2028 or U+0085 inside a line stays part of its text. A blank
    line is an empty text (an empty prediction), so that output line i answers input line i.
    """
    from .tasks.base import json_object, lines_of, read_text

    p = Path(path)
    texts: list[str] = []
    pairs: list[str | None] = []
    for n, line in enumerate(lines_of(read_text(p)), 1):  # read_text names the line of bad UTF-8
        pair = None
        if p.suffix == ".jsonl" and line.strip():
            obj = json_object(p, n, line)
            if "question" in obj and "text" not in obj:  # question answering: "question" and "context"
                line, pair = obj.get("question"), obj.get("context")
                if not isinstance(line, str) or not isinstance(pair, str):
                    raise XlmrError(f'{p}:{n}: expected a "question" string and a "context" string')
            else:
                line, pair = obj.get("text"), obj.get("text_pair")
            if not isinstance(line, str) or not isinstance(pair, (str, type(None))):
                raise XlmrError(f'{p}:{n}: expected an object with a "text" string (and an optional "text_pair" '
                                f'string), or "question" and "context" strings')
        elif p.suffix == ".jsonl":
            line = ""
        texts.append(line)
        pairs.append(pair)
    if not any(t.strip() for t in texts):
        raise XlmrError(f"{p}: no input texts")
    return texts, (pairs if any(x is not None for x in pairs) else None)


def predict_file(model: str, input_path: str, output: str, batch: int = 256, quantize: str = "none",
                 task: str | None = None, backend: str = "torch", words: str = "split") -> int:
    """Predict every input line and write one JSONL line per input line (atomically, so a failed run
    leaves no partial or temporary file). Returns the number of lines written."""
    out = Path(output)
    if out.is_dir():
        raise XlmrError(f"{out}: is a directory; --output names the JSONL file to write")
    texts, pairs = read_inputs(input_path)
    predictor = Predictor(model, task=task, quantize=quantize, backend=backend, words=words)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            for s in range(0, len(texts), batch):
                for r in predictor(texts[s:s + batch], pairs[s:s + batch] if pairs else None):
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")

    try:
        atomic_write(out, write)
    except OSError as e:
        raise XlmrError(f"{out}: cannot write the predictions ({e.strerror or e})") from None
    return len(texts)
