"""The one training loop: pretraining and every fine-tuning method run through `train`.

A method changes which parameters train (requires_grad) and what is saved, never this loop.
The loop owns: AdamW (plus SparseAdam for sparse embedding rows), warm-up + decay schedules,
layer-wise learning-rate decay, gradient accumulation and clipping, bf16 autocast where the hardware
multiplies bf16 natively (CUDA, or a CPU with AMX units),
periodic evaluation with best-checkpoint keeping and early stopping, JSONL logs, a loss-curve PNG,
a progress bar, and a stop on a NaN/inf loss.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import numpy as np
import torch
from torch import nn

from .errors import XlmrError
from .io import atomic_write
from .options import validate
from .parallel import unwrap
from .rundir import new_run_id


# `--embeddings auto` trains the word embeddings sparsely above this many rows. Measured
# (docs/benchmarks.md): sparse is the faster mode at XLM-R's 250k rows, dense at MiniLM's 30k.
SPARSE_ABOVE_ROWS = 100_000


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping options shared by every training command."""

    lr: float = field(default=5e-5, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases/LayerNorm)"})
    warmup: float = field(default=0.1, metadata={"help": "warm-up: a fraction of the steps if < 1, else steps"})
    schedule: Literal["linear", "inverse_sqrt", "constant"] = field(
        default="linear", metadata={"help": "decay after warm-up"})
    max_steps: int = field(default=0, metadata={"help": "optimizer steps (0: from epochs)"})
    epochs: float = field(default=3.0, metadata={"help": "passes over the data when max_steps is 0"})
    grad_accum: int = field(default=1, metadata={"min": 1, "help": "micro-batches per optimizer step"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping (0: off)"})
    layer_decay: float = field(default=1.0, metadata={"help": "layer-wise lr decay factor (1: off)"})
    embeddings: Literal["auto", "dense", "sparse", "frozen"] = field(
        default="auto", metadata={"help": "how the word-embedding matrix trains (auto: sparse above "
                                          f"{SPARSE_ABOVE_ROWS:,} rows, else dense)"})
    max_minutes: float = field(default=0.0, metadata={"help": "stop after this much wall time (0: off)"})
    eval_every: int = field(default=0, metadata={"help": "evaluate every N steps (0: each epoch)"})
    patience: int = field(default=0, metadata={"help": "early stopping after N evaluations without gain (0: off)"})
    log_every: int = field(default=10, metadata={"min": 1, "help": "log the loss every N steps"})
    seed: int = field(default=0, metadata={"min": 0, "help": "random seed"})
    bf16: bool = field(default=True, metadata={
        "help": "bf16 autocast on CUDA and on CPUs with AMX bf16 units (--no-bf16: fp32 everywhere)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self):
        validate(self)  # types and bounds of every field, for Python callers as for the CLI


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads: int = 0) -> int:
    """Set torch's CPU thread count and return it. 0 picks it from the load: on a machine whose
    cores are already busy, extra OpenMP threads wait on each other at every op (a step can run 3x
    slower with 2 threads than with 1 on a loaded 2-core machine), so use only the idle cores."""
    if threads <= 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        threads = max(1, cores - int(busy + 0.5))
    torch.set_num_threads(threads)
    return threads


def autocast_device(device: torch.device, bf16: bool = True) -> str | None:
    """The autocast device type for bf16 training, or None for fp32. On a CPU, bf16 autocast
    only pays where AMX tiles multiply bf16 matrices natively (about 3x fp32 matmul
    throughput on a Xeon with AMX); elsewhere bf16 is emulated and slower than fp32."""
    if not bf16:
        return None
    if device.type == "cuda":
        return "cuda" if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
        return "cpu" if caps.get("amx_bf16") else None
    return None


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak lr at a step: linear warm-up, then linear / inverse-sqrt / constant."""

    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "linear":
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
        if schedule == "inverse_sqrt":
            return math.sqrt(max(1, warmup_steps) / max(step, 1))
        return 1.0

    return f


def _layer_of(name: str, num_layers: int) -> int:
    """0 for embeddings, i+1 for encoder layer i, num_layers+1 for heads (layer-wise lr decay)."""
    if ".embeddings." in name or name.startswith("embeddings.") or ".position_bias." in name:
        return 0
    if ".layer." in name:
        return int(name.split(".layer.")[1].split(".")[0]) + 1
    return num_layers + 1


def build_optimizers(model: nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """AdamW over dense parameters (no decay on biases/LayerNorm), SparseAdam over sparse embeddings."""
    core = unwrap(model)
    num_layers = core.config.num_hidden_layers if hasattr(core, "config") else 0
    groups: dict[tuple, list] = {}
    sparse = []
    seen = set()
    for name, p in core.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if _is_sparse_embedding(core, p):
            sparse.append(p)
            continue
        decay = 0.0 if (p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name) else cfg.weight_decay
        scale = cfg.layer_decay ** (num_layers + 1 - _layer_of(name, num_layers))
        groups.setdefault((decay, scale), []).append(p)
    if not groups and not sparse:
        raise XlmrError("no trainable parameters: every parameter is frozen")
    opts: list[torch.optim.Optimizer] = []
    if groups:
        # The fused kernel (one pass over each tensor) is several times faster than foreach on CPU and
        # CUDA; it needs floating-point parameters on one of those devices.
        dense = [p for ps in groups.values() for p in ps]
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in dense)
        opts.append(torch.optim.AdamW([{"params": ps, "weight_decay": d, "lr": cfg.lr * s}
                                       for (d, s), ps in groups.items()], lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                                      **({"fused": True} if fused else {"foreach": True})))
    if sparse:
        scale = cfg.layer_decay ** (num_layers + 1)
        opts.append(torch.optim.SparseAdam(sparse, lr=cfg.lr * scale))
    return opts


def _is_sparse_embedding(model: nn.Module, p: torch.Tensor) -> bool:
    return any(isinstance(m, nn.Embedding) and m.sparse and m.weight is p for m in model.modules())


def apply_embedding_mode(model: nn.Module, mode: str) -> str:
    """dense: ordinary training; sparse: only rows a batch touches get gradients and updates;
    frozen: the word-embedding matrix does not train; auto: sparse for a vocabulary of more than
    SPARSE_ABOVE_ROWS rows, else dense. A matrix tied to an MLM decoder stays dense. Returns the mode."""
    core = unwrap(model)
    emb = core.encoder_model.embeddings.word_embeddings
    if mode == "auto":
        mode = "sparse" if emb.num_embeddings > SPARSE_ABOVE_ROWS else "dense"
    tied = getattr(core, "head", None) == "mlm"
    emb.sparse = mode == "sparse" and not tied
    if mode == "frozen":
        emb.weight.requires_grad_(False)
    return "dense" if tied and mode == "sparse" else mode


def clip_grad_norm(params: list[torch.Tensor], max_norm: float, optimizers: Iterable = ()) -> float:
    """Global-norm clipping that also handles sparse gradients; returns the norm before clipping.
    A non-finite norm is returned with the gradients untouched (scaling by 0 would hide it).

    When every dense gradient is a plain fp32 CPU tensor whose parameter a fused AdamW in `optimizers`
    updates, the coefficient is handed to that optimizer (`grad_scale`, which its kernel divides the
    gradients by in the same pass as the update) instead of rescaling the gradients in a pass of
    their own; the loop clears it after the step. Measured in docs/benchmarks.md.
    """
    dense = [p for p in params if p.grad is not None and not p.grad.is_sparse]
    sparse = [p.grad for p in params if p.grad is not None and p.grad.is_sparse]
    if not dense and not sparse:
        return 0.0
    squares = [g.coalesce().values().float().pow(2).sum() for g in sparse]
    grads = [p.grad for p in dense]
    plain = all(type(g) is torch.Tensor and g.device.type == "cpu" and g.dtype == torch.float32 for g in grads)
    if dense and plain:  # one BLAS dot per tensor: about twice as fast on a CPU as foreach norms
        squares.append(torch.stack([torch.dot(g.reshape(-1), g.reshape(-1)) for g in grads]).sum())
    elif dense:
        squares.append(torch.nn.utils.get_total_norm(grads, foreach=True).float() ** 2)
    total = float(torch.stack(squares).sum().sqrt())
    if max_norm <= 0 or total <= max_norm or not math.isfinite(total):
        return total  # an inf/NaN norm leaves the gradients as they are: the caller must not step on them
    coef = max_norm / (total + 1e-6)
    if grads:
        fused = [o for o in optimizers if o.defaults.get("fused")]
        covered = {id(p) for o in fused for g in o.param_groups for p in g["params"]}
        if plain and all(id(p) in covered for p in dense):
            for o in fused:
                o.grad_scale = torch.tensor(1.0 / coef)
        else:
            torch._foreach_mul_(grads, coef)
    for g in sparse:
        g.mul_(coef)
    return total


@dataclass
class TrainResult:
    steps: int
    best_metric: float | None
    best_step: int | None
    seconds: float
    history: list[dict]
    stopped_early: bool = False


class JsonlLog:
    """Append-only JSONL metrics log; also keeps the records for the loss-curve plot.

    Every line carries `run_id`, so the lines of two runs (a resumed run, say) in one file stay apart.
    """

    def __init__(self, path: Path | None, run_id: str):
        self.path, self.run_id, self.records = path, run_id, []

    def write(self, **record: Any) -> None:
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"run_id": self.run_id, **record}) + "\n")


def plot_loss(records: list[dict], path: Path, title: str = "training loss") -> None:
    """Write a loss-curve PNG (train loss per logged step, and any eval losses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*zip(*train), label="train")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def train(model: nn.Module, batches: Callable[[int], Iterable], loss_fn: Callable[[nn.Module, Any], torch.Tensor],
          cfg: TrainConfig, steps_per_epoch: int | None = None, evaluate: Callable[[nn.Module], dict] | None = None,
          metric: str | None = None, on_best: Callable[[nn.Module, dict], None] | None = None,
          out_dir: str | os.PathLike | None = None,
          restore: Callable[[nn.Module, list], "LoopState | None"] | None = None,
          on_step: Callable[["LoopState"], None] | None = None, run_id: str | None = None) -> TrainResult:
    """Run optimisation until `max_steps` (or `epochs` x `steps_per_epoch` optimizer steps).

    `batches(epoch)` yields micro-batches; `loss_fn(model, batch)` returns a scalar loss;
    `evaluate(model)` returns metrics, of which `metric` (higher is better) picks the best
    checkpoint, handed to `on_best`. `restore(model, optimizers)` may load a saved run into the
    freshly built optimizers and return its LoopState; `on_step` sees the state after every
    optimizer step (checkpointing hooks in there). `run_id` tags every metrics.jsonl line (the id
    of the `rundir.run_directory` lock the caller holds on `out_dir`; a fresh one if not given).

    long: this is the one training loop, and it reads best whole: the order of backward, clipping,
    optimizer and scheduler steps, logging, evaluation, the time limit and the checkpoint hook is
    what bit-exact resume depends on, and pieces of it would pass most of the loop's state around.
    """
    device = next(model.parameters()).device
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    total = cfg.max_steps or math.ceil(cfg.epochs * (steps_per_epoch or 0))
    if total <= 0:
        raise XlmrError("nothing to train: set max_steps, or give data for at least one step")
    warmup = int(cfg.warmup * total) if cfg.warmup < 1 else int(cfg.warmup)
    optimizers = build_optimizers(model, cfg)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_lambda(cfg.schedule, warmup, total)) for o in optimizers]
    params = [p for o in optimizers for g in o.param_groups for p in g["params"]]
    state = (restore(model, optimizers) if restore else None) or LoopState()
    for sch, saved in zip(schedulers, state.scheduler_states):
        sch.load_state_dict(saved)
    state.optimizers, state.schedulers = optimizers, schedulers
    log = JsonlLog(out / "metrics.jsonl" if out else None, run_id or new_run_id())
    eval_every = cfg.eval_every or (steps_per_epoch or 0)
    amp = autocast_device(device, cfg.bf16)
    bar = _progress(cfg.progress, total, state.step)
    start, tokens, running, n_running = time.perf_counter(), 0, 0.0, 0
    model.train()
    stopped_early = False
    while state.step < total and not stopped_early:
        micro = 0
        for batch in batches(state.epoch):
            with torch.autocast(amp or device.type, dtype=torch.bfloat16, enabled=amp is not None):
                loss = loss_fn(model, batch)
            if not torch.isfinite(loss):  # before backward: no update, and so no checkpoint, follows it
                raise XlmrError(f"loss became {loss.item()} at step {state.step}; stopping "
                                f"({state.checkpoint_note()}). Try a lower learning rate.")
            (loss / cfg.grad_accum).backward()
            running, n_running, micro = running + loss.item(), n_running + 1, micro + 1
            tokens += _count_tokens(batch)
            if micro % cfg.grad_accum:
                continue
            if cfg.max_grad_norm > 0:
                norm = clip_grad_norm(params, cfg.max_grad_norm, optimizers)
                if not math.isfinite(norm):  # a finite loss whose gradients overflowed: stop as for a NaN loss
                    raise XlmrError(f"the gradient norm became {norm} at step {state.step}; stopping before "
                                    f"the update ({state.checkpoint_note()}). Try a lower learning rate.")
            for o in optimizers:
                o.step()
                o.__dict__.pop("grad_scale", None)  # clip_grad_norm's coefficient, for this step only
                o.zero_grad(set_to_none=True)
            for s in schedulers:
                s.step()
            state.step += 1
            if bar is not None:
                bar.update(1)
                elapsed = time.perf_counter() - start
                # With --max-minutes the step total is only an upper bound, so also show the time left.
                left = {"left": f"{max(0.0, 60 * cfg.max_minutes - elapsed):.0f}s"} if cfg.max_minutes else {}
                bar.set_postfix(loss=f"{running / n_running:.4f}", tok_s=f"{tokens / max(elapsed, 1e-9):.0f}", **left)
            if state.step % cfg.log_every == 0 or state.step == total:
                log.write(step=state.step, epoch=state.epoch, loss=running / n_running,
                          lr=schedulers[0].get_last_lr()[0], elapsed=time.perf_counter() - start)
                running, n_running = 0.0, 0
            if evaluate and eval_every and (state.step % eval_every == 0 or state.step == total):
                stopped_early = _evaluate(model, evaluate, metric, on_best, state, log, cfg)
                model.train()
            if cfg.max_minutes and _out_of_time(start, cfg.max_minutes):
                total = state.step  # the run ends here: evaluate, checkpoint and export as at the end
                if evaluate and eval_every:
                    _evaluate(model, evaluate, metric, on_best, state, log, cfg)
                    model.train()
            state.finished = state.step >= total or stopped_early
            if on_step:
                on_step(state)
            if state.finished:
                break
        else:
            state.epoch += 1
            if micro == 0:
                raise XlmrError("the training data yielded no batches")
    if bar is not None:
        bar.close()
    if n_running:  # steps since the last log line (a run cut short by max_minutes or early stopping)
        log.write(step=state.step, epoch=state.epoch, loss=running / n_running,
                  lr=schedulers[0].get_last_lr()[0], elapsed=time.perf_counter() - start)
    if out:
        plot_loss(log.records, out / "loss.png")
    model.eval()
    return TrainResult(state.step, state.best_metric, state.best_step, time.perf_counter() - start,
                       log.records, stopped_early)


def _evaluate(model, evaluate, metric, on_best, state: "LoopState", log: JsonlLog, cfg: TrainConfig) -> bool:
    """Evaluate, keep the best checkpoint, and say whether to stop early."""
    model.eval()
    with torch.no_grad():
        metrics = evaluate(model)
    log.write(step=state.step, epoch=state.epoch, **{f"eval_{k}": v for k, v in metrics.items()
                                                       if isinstance(v, (int, float))})
    if metric is None:
        return False
    value = metrics[metric]
    if state.best_metric is None or value > state.best_metric:
        state.best_metric, state.best_step, state.bad_evals = value, state.step, 0
        if on_best:
            on_best(model, metrics)
        return False
    state.bad_evals += 1
    return bool(cfg.patience) and state.bad_evals >= cfg.patience


def _out_of_time(start: float, minutes: float) -> bool:
    """Whether the wall-time budget is spent; all ranks agree (rank 0's clock decides)."""
    over = torch.tensor([float(time.perf_counter() - start > 60 * minutes)])
    if torch.distributed.is_initialized():
        torch.distributed.broadcast(over, src=0)
    return bool(over.item())


def _count_tokens(batch) -> int:
    if hasattr(batch, "input_ids") and not isinstance(batch, dict):  # packed sequences: no padding
        return int(batch.input_ids.numel())
    if isinstance(batch, dict):
        m = batch.get("attention_mask")
        if m is not None:
            return int(m.sum())
        ids = batch.get("input_ids")
        return int(ids.numel()) if ids is not None else 0
    return 0


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


@dataclass
class LoopState:
    """Where a run stands: with the model, optimizer and data states, enough to resume exactly.
    state_dict() is JSON-serialisable (optimizer tensors are saved separately, see resume.py)."""

    step: int = 0
    epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    finished: bool = False  # set on the last step, before on_step
    saved_step: int | None = None  # step of the newest training checkpoint written or resumed from
    scheduler_states: list = field(default_factory=list)
    optimizers: list = field(default_factory=list, repr=False)
    schedulers: list = field(default_factory=list, repr=False)

    def checkpoint_note(self) -> str:
        """What a stopped run leaves to resume from, for its error message."""
        if self.saved_step is None:
            return "no checkpoint was saved"
        return f"the last good checkpoint is step {self.saved_step}"

    def state_dict(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "best_metric": self.best_metric,
                "best_step": self.best_step, "bad_evals": self.bad_evals,
                "scheduler_states": [s.state_dict() for s in self.schedulers]}
