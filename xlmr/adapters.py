"""Bottleneck adapters (Houlsby, Pfeiffer) and MAD-X language + task adapter stacking.

peft 0.21 has no serial bottleneck adapter (its methods are weight deltas such as LoRA/IA3/BOFT, prompt
methods, or decoder-only schemes such as Shadow), so these are small modules injected the way peft
injects: the projection `...output.dense` is replaced in place by `AdaptedLinear`, which keeps the
original layer as `base_layer` and runs the active adapters on its output, before dropout and the
residual add of the post-LN block:

    LayerNorm(dropout(adapter_k(...adapter_1(dense(h)))) + residual),  adapter(x) = x + up(relu(down(x)))

Houlsby: after the attention output projection and after the FFN output projection of every layer.
Pfeiffer: after the FFN output projection only. Each host holds named slots (`lang`, `task`); the
active slots run in order, so a task adapter sits above a language adapter (MAD-X "Stack").
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .errors import XlmrError

Placement = Literal["houlsby", "pfeiffer"]
SITES = {"houlsby": ("attention.output.dense", "output.dense"), "pfeiffer": ("output.dense",)}
SLOTS = ("lang", "task")  # stacking order: the language adapter runs first, the task adapter above it


class Bottleneck(nn.Module):
    """x + up(relu(down(x))): (B, T, D) -> (B, T, D). `up` starts at zero, so a new adapter is the identity."""

    def __init__(self, hidden_size: int, reduction: int):
        super().__init__()
        if reduction < 1 or hidden_size // reduction < 1:
            raise XlmrError(f"adapter reduction {reduction} leaves no bottleneck for hidden size {hidden_size}")
        width = hidden_size // reduction
        self.down = nn.Linear(hidden_size, width)
        self.up = nn.Linear(width, hidden_size)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.relu(self.down(x)))


class AdaptedLinear(nn.Module):
    """A linear layer (kept as `base_layer`) followed by the active bottleneck adapters, in slot order."""

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer
        self.adapters = nn.ModuleDict()
        self.active: list[str] = []
        self.sources: dict[str, str] = {}  # slot -> which adapter is loaded there (a name or a path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)
        for slot in self.active:
            h = self.adapters[slot](h)
        return h


def site_names(model: nn.Module, placement: Placement, skip_last: bool = False) -> list[str]:
    """Module names where a `placement` adapter goes, e.g. 'roberta.encoder.layer.0.output.dense'."""
    if placement not in SITES:
        raise XlmrError(f"unknown adapter placement {placement!r}; expected houlsby or pfeiffer")
    n = model.config.num_hidden_layers
    layers = range(n - 1) if skip_last else range(n)
    return [f"{model.prefix}.encoder.layer.{i}.{site}" for i in layers for site in SITES[placement]]


def add_adapter(model: nn.Module, slot: str, placement: Placement, reduction: int, skip_last: bool = False,
                source: str = "") -> list[str]:
    """Inject a fresh adapter into `slot` at every site (hosts are created on first use); returns the sites.

    `skip_last` leaves the last layer without this adapter (MAD-X 2.0 for the language slot)."""
    if slot not in SLOTS:
        raise XlmrError(f"unknown adapter slot {slot!r}; expected one of {', '.join(SLOTS)}")
    sites = site_names(model, placement, skip_last)
    for name in sites:
        host = model.get_submodule(name)
        if not isinstance(host, AdaptedLinear):
            parent, _, child = name.rpartition(".")
            host = AdaptedLinear(host)
            setattr(model.get_submodule(parent), child, host)
        ref = host.base_layer.weight
        host.adapters[slot] = Bottleneck(host.base_layer.out_features, reduction).to(ref.device, ref.dtype)
        host.active = [s for s in SLOTS if s in host.adapters]
        host.sources[slot] = source
    return sites


def hosts(model: nn.Module) -> dict[str, AdaptedLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, AdaptedLinear)}


def adapter_state(model: nn.Module, slot: str) -> dict[str, torch.Tensor]:
    """One slot's tensors under slot-free names: '<site>.adapter.down.weight' (as saved in files)."""
    out = {}
    for name, host in hosts(model).items():
        if slot in host.adapters:
            for key, value in host.adapters[slot].state_dict().items():
                out[f"{name}.adapter.{key}"] = value.detach().contiguous().cpu()
    return out


def load_adapter_state(model: nn.Module, slot: str, state: dict[str, torch.Tensor], source: str,
                       where: str) -> None:
    """Copy saved tensors into `slot` (which must already be injected at the same sites). Tensors of sites
    the model lacks in this slot (the last layer under MAD-X 2.0) are skipped."""
    targets = {f"{name}.adapter.{k}": (host, v) for name, host in hosts(model).items() if slot in host.adapters
               for k, v in host.adapters[slot].state_dict().items()}
    missing = sorted(set(targets) - set(state))
    if missing:
        raise XlmrError(f"{where}: adapter has no tensor '{missing[0]}' ({len(missing)} missing): it was made "
                        f"for another model or placement")
    with torch.no_grad():
        for key, (host, param) in targets.items():
            value = state[key]
            if tuple(value.shape) != tuple(param.shape):
                raise XlmrError(f"{where}: adapter tensor '{key}' has shape {tuple(value.shape)}, this model needs "
                                f"{tuple(param.shape)} (another model size or reduction)")
            param.copy_(value)
            host.sources[slot] = source


def active_adapters(model: nn.Module) -> dict[str, list[tuple[str, str]]]:
    """site -> [(slot, source), ...] in the order they run: what a test or a log checks."""
    return {name: [(s, host.sources.get(s, "")) for s in host.active] for name, host in hosts(model).items()}


def adapter_parameters(model: nn.Module, slot: str) -> list[nn.Parameter]:
    return [p for host in hosts(model).values() if slot in host.adapters for p in host.adapters[slot].parameters()]
