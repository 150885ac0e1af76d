"""`xlmr adapt-language`: a MAD-X language adapter trained with MLM on raw text, on the shared loop.

The base model is frozen; only the `lang` bottleneck adapters train (and the MLM head's transform when
the checkpoint has no MLM head of its own, since a random head would make the loss meaningless; that head
is not saved). Lines are tokenized once, batched by length and masked with `mlm_data.mask_tokens`.
No invertible embedding adapter: see docs/peft.md.
"""

from __future__ import annotations

import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from . import adapters as A
from .batching import sorted_batches
from .checkpoint import check_length, load, read_config, resolve
from .errors import XlmrError
from .io import atomic_write_json, count_parameters
from .rundir import run_directory
from .train import TrainConfig, seed_everything, train


@dataclass
class AdaptLanguageConfig(TrainConfig):
    """What `xlmr adapt-language` takes."""

    model: str = field(default="", metadata={"help": "base checkpoint directory"})
    corpus: str = field(default="", metadata={"help": "raw text, one sentence or paragraph per line"})
    out: str = field(default="", metadata={"help": "output adapter directory"})
    language: str = field(default="", metadata={"help": "language name (default: the corpus file name)"})
    adapter_reduction: int = field(default=2, metadata={"min": 1, "help": "bottleneck width = hidden size / this"})
    adapter_placement: Literal["houlsby", "pfeiffer"] = field(default="pfeiffer", metadata={"help": "where"})
    max_length: int = field(default=128, metadata={"min": 1, "help": "tokens per line (longer lines are cut)"})
    batch_size: int = field(default=32, metadata={"min": 1, "help": "lines per batch"})
    max_lines: int = field(default=0, metadata={"help": "use only the first N lines (0: all)"})
    held_out: int = field(default=200, metadata={"help": "last N lines scored for held-out MLM loss"})
    mlm_probability: float = field(default=0.15, metadata={"max": 1, "help": "share of tokens masked"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    max_steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    embeddings: Literal["dense", "sparse", "frozen"] = field(default="frozen", metadata={"help": "frozen"})


def read_lines(path: str, limit: int) -> list[str]:
    """The corpus's non-blank lines (split on \\n only; bad UTF-8 names its line)."""
    from .tasks.base import lines_of, read_text

    p = Path(path)
    if not p.is_file():
        raise XlmrError(f"{p}: no such corpus file")
    lines = [line for line in lines_of(read_text(p)) if line.strip()]
    lines = lines[:limit] if limit else lines
    if len(lines) < 2:
        raise XlmrError(f"{p}: needs at least 2 non-empty lines, found {len(lines)}")
    return lines


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    return ids, mask


def adapt_language(cfg: AdaptLanguageConfig) -> dict:
    """Train a language adapter; write it to cfg.out (held locked, see xlmr.rundir); return a summary."""
    if not cfg.model or not cfg.corpus or not cfg.out:
        raise XlmrError("adapt-language needs --model, --corpus and --out")
    with run_directory(cfg.out) as run:
        return _adapt_language(cfg, run.run_id)


def _adapt_language(cfg: AdaptLanguageConfig, run_id: str) -> dict:
    from .mlm_data import MaskVocab, mask_tokens
    from .peft_methods import peak_memory
    from .tokenizer import Tokenizer

    seed_everything(cfg.seed)
    src = resolve(cfg.model)
    check_length(read_config(src)[0], cfg.max_length, "--max-length", src)
    lang = cfg.language or Path(cfg.corpus).stem
    tok = Tokenizer.from_pretrained(src)
    vocab = MaskVocab.from_tokenizer(tok)
    lines = read_lines(cfg.corpus, cfg.max_lines)
    n_eval = min(cfg.held_out, len(lines) // 10)
    enc = tok.encode(lines, max_length=cfg.max_length)
    rows = [[t for t, m in zip(ids, mask) if m] for ids, mask in zip(enc.input_ids, enc.attention_mask)]
    train_rows, eval_rows = rows[:len(rows) - n_eval], rows[len(rows) - n_eval:]

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = _adapter_model(src, lang, cfg).to(device)
    count = count_parameters(model)
    trainable, total = count.trainable, count.total

    chunks = sorted_batches([len(r) for r in train_rows], cfg.batch_size)

    def batches(epoch):
        rng = random.Random(cfg.seed * 1000 + epoch)
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        for chunk in rng.sample(chunks, len(chunks)):
            ids, mask = _pad([train_rows[i] for i in chunk], tok.pad_token_id)
            yield mask_tokens(ids, vocab, g, cfg.mlm_probability), mask

    def loss_fn(m, batch):
        masked, mask = batch
        logits = m(masked.input_ids.to(device), mask.to(device), positions=masked.positions.to(device))
        return F.cross_entropy(logits.float(), masked.targets.to(device))

    evaluate = lambda m: _held_out(m, eval_rows, tok.pad_token_id, vocab, cfg, device)

    out = Path(cfg.out)
    print(f"xlmr: language adapter '{lang}' on {len(train_rows)} lines ({n_eval} held out), {trainable:,} of "
          f"{total:,} parameters train, device {device}", file=sys.stderr)
    before = None
    if eval_rows:
        model.eval()
        with torch.no_grad():
            before = evaluate(model)
    result = train(model, batches, loss_fn, cfg, steps_per_epoch=len(chunks), out_dir=out, run_id=run_id)
    after = None
    if eval_rows:
        with torch.no_grad():
            after = evaluate(model)
    _save_adapter(out, model, lang, src, cfg)
    summary = {"language": lang, "steps": result.steps, "train_seconds": round(result.seconds, 2),
               "trainable_params": trainable, "total_params": total,
               "trainable_percent": round(100 * trainable / total, 4),
               "saved_bytes": (out / "adapter_model.safetensors").stat().st_size,
               "steps_per_second": round(result.steps / max(result.seconds, 1e-9), 3),
               "held_out_before": before, "held_out_after": after, **peak_memory()}
    atomic_write_json(out / "summary.json", summary, indent=2)
    return summary


def _adapter_model(src: Path, lang: str, cfg: AdaptLanguageConfig):
    """The frozen MLM model with a trainable language adapter (and a trainable MLM transform when the
    checkpoint has no pretrained MLM head)."""
    has_head = read_config(src)[1] == "mlm"
    model = load(src, head="mlm")
    for p in model.parameters():
        p.requires_grad_(False)
    if not has_head:  # no pretrained MLM head: its transform must learn too (not saved)
        print(f"xlmr: {src} has no MLM head; training a fresh one alongside the adapter", file=sys.stderr)
        for name, p in model.mlm_head.named_parameters():
            if not name.startswith("decoder."):
                p.requires_grad_(True)
    A.add_adapter(model, "lang", cfg.adapter_placement, cfg.adapter_reduction, source=lang)
    return model


@torch.no_grad()
def _held_out(m, rows: list[list[int]], pad_id: int, vocab, cfg: AdaptLanguageConfig, device) -> dict:
    """Masked-LM loss and accuracy on held-out rows, with fixed masks: the same positions every time."""
    from .mlm_data import mask_tokens

    g = torch.Generator().manual_seed(12345)
    total_loss, hits, count = 0.0, 0, 0
    for i in range(0, len(rows), cfg.batch_size):
        ids, mask = _pad(rows[i:i + cfg.batch_size], pad_id)
        masked = mask_tokens(ids, vocab, g, cfg.mlm_probability)
        logits = m(masked.input_ids.to(device), mask.to(device), positions=masked.positions.to(device)).float()
        targets = masked.targets.to(device)
        total_loss += F.cross_entropy(logits, targets, reduction="sum").item()
        hits += int((logits.argmax(-1) == targets).sum())
        count += len(targets)
    return {"loss": total_loss / max(count, 1), "accuracy": hits / max(count, 1)}


def _save_adapter(out: Path, model, lang: str, src: Path, cfg: AdaptLanguageConfig) -> None:
    """adapter_config.json, adapter_model.safetensors and the run info of the language adapter."""
    from .peft_methods import base_info, write_adapter_dir

    config = {"peft_type": "BOTTLENECK", "role": "language", "language": lang, "placement": cfg.adapter_placement,
              "reduction": cfg.adapter_reduction, "base_model_name_or_path": str(src)}
    info = {"method": "language_adapter", "base": base_info(model), "corpus": str(cfg.corpus),
            "options": asdict(cfg)}
    write_adapter_dir(out, config, A.adapter_state(model, "lang"), info)
