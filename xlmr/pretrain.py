"""MLM pretraining on a prepared corpus, with the shared loop, on one process or many (torchrun).

Data: `PackedStream` (alpha-sampled, packed, no padding); masking: `mask_rows` (a pure function of
seed and global sequence number); the vocabulary projection runs only at masked positions.
Checkpoints (model, optimizer, scheduler, data position, RNG) go through torch.distributed.checkpoint
and resume exactly, also on another number of processes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import resume
from .checkpoint import check_length, config_from_dict, config_to_dict, copy_tokenizer, load, save
from .errors import XlmrError
from .io import atomic_write_json, count_parameters
from .model import PRESETS, Model
from .parallel import World, apply_ac, apply_compile, apply_ddp, apply_fsdp, init_distributed
from .rundir import run_directory
from .tokenizer import Tokenizer
from .train import TrainConfig, seed_everything, train

VALID_INDEX = 1 << 40  # masking seeds of held-out sequences live far from the training ones


@dataclass
class PretrainConfig(resume.ResumeOptions, TrainConfig):
    """What `xlmr pretrain` takes (a YAML file can hold any of it)."""

    data: str = field(default="", metadata={"help": "directory made by `xlmr data prepare`"})
    tokenizer: str = field(default="", metadata={"help": "tokenizer directory used to prepare the data"})
    out: str = field(default="runs/pretrain", metadata={"help": "output directory"})
    preset: Literal["tiny", "small", "base", "large"] = field(default="tiny", metadata={"help": "model size"})
    init: str = field(default="", metadata={"help": "continue from this checkpoint instead of a preset"})
    position_embedding_type: Literal["learned", "sinusoidal", "continuous_sinusoidal", "rotary"] = field(
        default="learned", metadata={"help": "position encoding of a new model"})
    num_hidden_layers: int = field(default=0, metadata={"help": "override the preset's layers (0: keep)"})
    hidden_size: int = field(default=0, metadata={"help": "override the preset's hidden size (0: keep)"})
    dropout: float = field(default=0.1, metadata={"max": 1, "help": "hidden and attention dropout of a new model"})
    seq_len: int = field(default=128, metadata={"min": 1, "help": "tokens per packed sequence"})
    batch_size: int = field(default=32, metadata={"min": 1, "help": "sequences per micro-batch, all ranks together"})
    mlm_probability: float = field(default=0.15, metadata={"max": 1, "help": "share of tokens masked"})
    whole_word: bool = field(default=False, metadata={"help": "mask whole words"})
    alpha: float = field(default=0.3, metadata={"help": "language sampling exponent"})
    eval_sequences: int = field(default=8, metadata={"help": "held-out sequences per language"})
    parallel: Literal["ddp", "fsdp"] = field(default="ddp", metadata={"help": "data parallelism under torchrun"})
    activation_checkpointing: bool = field(default=False, metadata={"help": "recompute activations"})
    compile: bool = field(default=False, metadata={"help": "torch.compile each layer"})
    # pretraining defaults differ from fine-tuning ones
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate"})
    warmup: float = field(default=0.06, metadata={"help": "warm-up: a fraction of the steps if < 1, else steps"})
    max_steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    embeddings: Literal["dense", "sparse", "frozen"] = field(
        default="dense", metadata={"help": "the MLM decoder is tied to the embeddings, so they train densely"})
    eval_every: int = field(default=100, metadata={"help": "held-out evaluation every N steps"})
    log_every: int = field(default=10, metadata={"min": 1, "help": "log the loss every N steps"})
    head_warmup_steps: int = field(default=0, metadata={
        "help": "first train only the MLM head's transform and bias for N steps (encoder and embeddings "
                "frozen), then everything: for an --init checkpoint that ships no MLM head"})


@dataclass
class HeadInit:
    """What `build_model` did about the MLM head of an --init checkpoint."""

    fresh: bool  # the checkpoint had none: a new one (decoder tied to the word embeddings, new transform, zero bias)
    source: str


def has_mlm_head(directory) -> bool:
    """Whether the checkpoint in `directory` stores MLM head weights (BERT `cls.predictions`, XLM-R `lm_head`)."""
    from .checkpoint import read_weights, resolve

    directory = resolve(directory)
    names = [directory / "model.safetensors"]
    if names[0].is_file():
        from safetensors import safe_open

        with safe_open(str(names[0]), framework="pt") as f:  # names only: no tensor is read
            keys = list(f.keys())
    else:
        keys = list(read_weights(directory))
    return any(k.startswith(("cls.predictions.", "lm_head.")) for k in keys)


def build_model(cfg: PretrainConfig, tok: Tokenizer) -> Model:
    """A new MLM model from a preset sized to the tokenizer, or the `init` checkpoint. For a checkpoint
    without an MLM head (a sentence encoder such as e5), `load` adds one: the decoder is tied to the
    word embeddings, the transform starts from BERT's init and the bias from zero (see `head_init`)."""
    if cfg.init:
        model = load(cfg.init, head="mlm")
        check_length(model.config, cfg.seq_len, "--seq-len", cfg.init)
        if model.config.vocab_size != tok.vocab_size:
            raise XlmrError(f"{cfg.init}: vocabulary {model.config.vocab_size} does not match the tokenizer's "
                            f"{tok.vocab_size}")
        return model
    base = PRESETS[cfg.preset]
    overrides = {k: getattr(cfg, k) for k in ("num_hidden_layers", "hidden_size") if getattr(cfg, k)}
    if "hidden_size" in overrides:
        overrides["intermediate_size"] = 4 * overrides["hidden_size"]
        overrides["num_attention_heads"] = max(1, overrides["hidden_size"] // 64)
    special = {name: tok.backend.token_to_id(t) for name, t in
               (("bos_token_id", "<s>"), ("eos_token_id", "</s>"))}
    config = replace(base, vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id,
                     max_position_embeddings=max(base.max_position_embeddings, cfg.seq_len + tok.pad_token_id + 2),
                     position_embedding_type=cfg.position_embedding_type,
                     hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                     **{k: v for k, v in special.items() if v is not None}, **overrides)
    return Model(config, "mlm")


def head_init(cfg: PretrainConfig) -> HeadInit | None:
    """For an --init run: whether its checkpoint brings an MLM head or `build_model` added a fresh one."""
    return HeadInit(fresh=not has_mlm_head(cfg.init), source=cfg.init) if cfg.init else None


def head_only(model: Model) -> list[str]:
    """Freeze everything except the MLM head's own parameters (transform and bias; the decoder is the
    word-embedding matrix, which stays frozen). Returns the names left trainable."""
    head = {id(p) for p in model.mlm_head.parameters()}
    emb = model.encoder_model.embeddings.word_embeddings.weight
    names = []
    for name, p in model.named_parameters():
        p.requires_grad_(id(p) in head and p is not emb)
        if p.requires_grad:
            names.append(name)
    return names


def warm_up_head(model: Model, cfg: PretrainConfig, batches, loss_fn, world: World) -> dict:
    """`cfg.head_warmup_steps` steps that train the MLM head alone (constant lr, no checkpoints), then
    every parameter trains again. Returns the warm-up's steps, seconds and last loss."""
    if world.size > 1:
        raise XlmrError("--head-warmup-steps runs on one process; warm the head up first, then start torchrun "
                        "with --init on its output")
    head_only(model)
    warm = replace(cfg, max_steps=cfg.head_warmup_steps, warmup=0, schedule="constant", eval_every=0,
                   max_minutes=0.0, progress=False)
    try:
        result = train(model, batches, loss_fn, warm)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    losses = [r["loss"] for r in result.history if "loss" in r]
    return {"steps": result.steps, "seconds": round(result.seconds, 2), "loss": losses[-1] if losses else None}


def mlm_loss(model, input_ids, index, vocab, seed: int, prob: float, whole_word: bool, world: World):
    """Cross-entropy over this rank's masked tokens, scaled so the gradient averaged over ranks
    equals the gradient of the mean over all masked tokens of the global batch."""
    from .mlm_data import mask_rows

    m = mask_rows(input_ids, index, vocab, seed, prob, whole_word)
    logits = model(m.input_ids.to(world.device), positions=m.positions.to(world.device))  # (N, V)
    total = logits.float().new_tensor(float(len(m.targets)))
    if world.size > 1:
        dist.all_reduce(total)
    loss = F.cross_entropy(logits.float(), m.targets.to(world.device), reduction="sum")
    return loss * world.size / total.clamp(min=1.0)


@torch.no_grad()
def evaluate_mlm(model, valid: dict, vocab, seed: int, prob: float, device) -> dict:
    """Held-out MLM loss and accuracy, overall and per language (fixed masks)."""
    from .mlm_data import mask_rows

    out, loss_sum, correct, count = {}, 0.0, 0, 0
    for lang, (ids, mask) in valid.items():
        index = torch.arange(len(ids)) + VALID_INDEX
        m = mask_rows(ids, index, vocab, seed, prob)
        keep = mask.flatten()[m.positions].bool()  # padded tail of a short language is never scored
        positions, targets = m.positions[keep], m.targets[keep]
        if len(targets) == 0:
            continue
        logits = model(m.input_ids.to(device), mask.to(device), positions=positions.to(device)).float()
        loss = F.cross_entropy(logits, targets.to(device), reduction="sum").item()
        hits = int((logits.argmax(-1).cpu() == targets).sum())
        out[f"loss_{lang}"] = loss / len(targets)
        loss_sum, correct, count = loss_sum + loss, correct + hits, count + len(targets)
    out["loss"] = loss_sum / max(count, 1)
    out["accuracy"] = correct / max(count, 1)
    return out


def _log(world: World, msg: str) -> None:
    if world.is_main:
        print(msg, file=sys.stderr, flush=True)


def pretrain(cfg: PretrainConfig) -> dict:
    """Pretrain (or resume) and write out/final as a checkpoint directory; returns a summary.
    Rank 0 holds the lock on `cfg.out` for the whole run (see xlmr.rundir)."""
    if not cfg.data or not cfg.tokenizer:
        raise XlmrError("pretrain needs --data (from `xlmr data prepare`) and --tokenizer")
    world = init_distributed()
    with run_directory(cfg.out, lock=world.is_main) as run:  # rank 0 writes the directory, so it holds the lock
        return _pretrain(cfg, world, run.run_id)


def _pretrain(cfg: PretrainConfig, world: World, run_id: str) -> dict:
    from .corpus import check_tokenizer
    from .mlm_data import MaskVocab, PackedStream, validation_set

    seed_everything(cfg.seed)
    tok = Tokenizer.from_pretrained(cfg.tokenizer)
    vocab = MaskVocab.from_tokenizer(tok)
    stream = PackedStream(cfg.data, cfg.seq_len, cfg.batch_size, alpha=cfg.alpha, seed=cfg.seed,
                          rank=world.rank, world_size=world.size)
    check_tokenizer(Path(cfg.data), stream.corpus.manifest, cfg.tokenizer,
                    fix="give the tokenizer the data was prepared with, or prepare the data again with this one")
    out = Path(cfg.out)
    model, head = build_model(cfg, tok), head_init(cfg)
    if head and head.fresh:
        _log(world, f"xlmr: {cfg.init} has no MLM head: added one (decoder tied to the word embeddings, new "
                    f"transform, zero bias)" + ("" if cfg.head_warmup_steps else
                                                "; --head-warmup-steps N trains it alone first"))
    if world.is_main:
        config = config_to_dict(model.config, "mlm")
        atomic_write_json(out / "model_config.json", config, indent=2)
        atomic_write_json(out / "pretrain_config.json", asdict(cfg), indent=2)
    model, core = _place(model, cfg, world)
    valid = validation_set(stream.corpus, cfg.seq_len, cfg.eval_sequences)
    params = count_parameters(core).total
    _log(world, f"xlmr: pretraining {params / 1e6:.1f}M parameters on {len(stream.languages)} languages, "
                f"world size {world.size} ({cfg.parallel if world.size > 1 else 'single process'}), "
                f"device {world.device}")

    def batches(epoch):
        for seqs in stream:
            yield seqs

    def loss_fn(m, seqs):
        return mlm_loss(m, seqs.input_ids, seqs.index, vocab, cfg.seed, cfg.mlm_probability, cfg.whole_word, world)

    def evaluate(m):  # every rank runs it: FSDP's forward gathers parameters collectively
        return evaluate_mlm(core, valid, vocab, cfg.seed, cfg.mlm_probability, world.device)

    ckpt = resume.Resumer(out / "checkpoints", model, cfg, stream.state_dict, stream.load_state_dict,
                          log=lambda s: _log(world, s))
    warmup, start_eval = (None, None) if resume.checkpoints(out / "checkpoints") else \
        _before_training(core, cfg, batches, loss_fn, lambda: evaluate_mlm(
            core.eval(), valid, vocab, cfg.seed, cfg.mlm_probability, world.device), world)
    run_cfg = replace(cfg, progress=cfg.progress and world.is_main)
    result = train(model, batches, loss_fn, run_cfg, evaluate=evaluate,
                   out_dir=out if world.is_main else None, restore=ckpt.restore, on_step=ckpt.on_step,
                   run_id=run_id)
    final = export_final(model, core, out / "final", tok_dir=Path(cfg.tokenizer), world=world)
    evals = [r for r in result.history if "eval_loss" in r]
    summary = {"steps": result.steps, "seconds": round(result.seconds, 2), "final": str(final),
               "eval": evals[-1] if evals else None, "eval_start": start_eval, "head_warmup": warmup,
               "head_added": bool(head and head.fresh)}
    if world.is_main:
        atomic_write_json(out / "summary.json", summary, indent=2)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _place(core: Model, cfg: PretrainConfig, world: World):
    """Move the model to its device and apply, from outside, activation checkpointing, compile and
    DDP/FSDP. (the model the loop trains, the plain Model underneath)."""
    core.to(world.device)
    if cfg.activation_checkpointing:
        apply_ac(core)
    if cfg.compile:
        apply_compile(core)
    if world.size > 1:
        return (apply_fsdp(core) if cfg.parallel == "fsdp" else apply_ddp(core, world.device)), core
    return core, core


def _before_training(core, cfg: PretrainConfig, batches, loss_fn, held_out, world: World):
    """A fresh run's start: the head-only warm-up (--head-warmup-steps) and the held-out MLM loss per
    language before the encoder trains (one process only). (warm-up summary or None, held-out losses or
    None); a resumed run is past both."""
    warmup, start_eval = None, None
    if cfg.head_warmup_steps:
        warmup = warm_up_head(core, cfg, batches, loss_fn, world)
        _log(world, f"xlmr: head-only warm-up, {warmup['steps']} steps in {warmup['seconds']} s, "
                    f"loss {warmup['loss']:.4f}")
    # One process only: under FSDP this forward before the first step made saving the optimizer state
    # fail (KeyError in torch's get_state_dict).
    if cfg.eval_every and world.size == 1:
        start_eval = held_out()
        _log(world, "xlmr: held-out MLM loss before training the encoder: " +
             ", ".join(f"{k[5:]} {v:.4f}" for k, v in start_eval.items() if k.startswith("loss_")))
    return warmup, start_eval


def export_final(model, core: Model, directory: Path, tok_dir: Path, world: World) -> Path:
    """Gather full weights (works for DDP and FSDP2) and save a checkpoint directory on rank 0."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if world.is_main:
        clean = Model(core.config, "mlm")
        clean.load_state_dict({k: v for k, v in sd.items()}, strict=False)
        clean.tie_weights()
        save(clean, directory)
        copy_tokenizer(tok_dir, directory)
    return directory


def export_checkpoint(run_dir: str, out: str, step: int | None = None) -> Path:
    """`xlmr export`: a training checkpoint of a run -> an HF directory (XLMRobertaForMaskedLM layout)."""
    from .checkpoint import export_hf

    run = Path(run_dir)
    cfg_file = run / "model_config.json"
    if not cfg_file.is_file():
        raise XlmrError(f"{run}: no model_config.json; is this an `xlmr pretrain` output directory?")
    config, _ = config_from_dict(json.loads(cfg_file.read_text(encoding="utf-8")), str(cfg_file))
    found = resume.checkpoints(run / "checkpoints")
    if step is not None:
        found = [p for p in found if int(p.name[len(resume.PREFIX):]) == step]
    if not found:
        raise XlmrError(f"{run}/checkpoints: no checkpoint" + (f" for step {step}" if step is not None else ""))
    model = Model(config, "mlm")
    sd = {"model": dict(model.state_dict())}
    resume.verify(found[-1])
    resume.read(sd, found[-1])
    model.load_state_dict(sd["model"])
    model.tie_weights()
    directory = export_hf(model, out)
    pretrain_cfg = run / "pretrain_config.json"
    if pretrain_cfg.is_file():
        copy_tokenizer(Path(json.loads(pretrain_cfg.read_text())["tokenizer"]), Path(directory))
    return Path(directory)
