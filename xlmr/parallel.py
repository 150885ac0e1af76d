"""Parallelism, activation checkpointing and compile, applied to a plain model from outside.

Order (as torchtitan): apply_ac -> apply_compile -> apply_fsdp | apply_ddp. Each wraps in place, so
parameter names stay stable for PEFT and checkpoints. Launch with `torchrun`; a plain `python`
run is a world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None) -> World:
    """Join the process group that torchrun describes in the environment (or a world of one)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1 and not dist.is_initialized():
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return World(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return World(dist.get_rank(), dist.get_world_size(), local_rank, device)


def apply_ac(model: nn.Module) -> None:
    """Activation checkpointing on each encoder layer (recompute activations in backward)."""
    from torch.utils.checkpoint import checkpoint

    for layer in model.encoder_model.encoder.layer:
        forward = layer.forward

        def wrapped(x, mask, positions=None, _forward=forward):
            return checkpoint(_forward, x, mask, positions, use_reentrant=False)

        layer.forward = wrapped


def apply_compile(model: nn.Module) -> None:
    """torch.compile each encoder layer (per-block compile keeps names and graphs small)."""
    for layer in model.encoder_model.encoder.layer:
        layer.compile()


def apply_fsdp(model: nn.Module, mixed_bf16: bool = False) -> nn.Module:
    """FSDP2: `fully_shard` each encoder layer, then the root (parameters become DTensors in place)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_bf16 else None
    kw = {"mp_policy": mp} if mp else {}
    for layer in model.encoder_model.encoder.layer:
        fully_shard(layer, **kw)
    fully_shard(model, **kw)
    return model


def apply_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel; returns the wrapper (the plain model stays at `.module`)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (FSDP2 and compile wrap in place: the model itself)."""
    return getattr(model, "module", model)
