"""Training checkpoints for resume: torch.distributed.checkpoint for model and optimizer state,
JSON for the loop, data-stream and RNG state. Written atomically (temporary directory, then rename),
last N kept; a damaged latest checkpoint is skipped with a warning in favour of the one before.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

PREFIX = "step_"


def _rng_to_json() -> dict:
    np_state = np.random.get_state()
    return {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch": torch.get_rng_state().tolist()}


def _rng_from_json(d: dict) -> None:
    random.setstate((d["python"][0], tuple(d["python"][1]), d["python"][2]))
    n = d["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(torch.tensor(d["torch"], dtype=torch.uint8))


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        return fn(*args, **kw)


def checkpoints(root: Path) -> list[Path]:
    """Completed checkpoints, oldest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                   and not p.name.endswith(".tmp")), key=lambda p: int(p.name[len(PREFIX):]))


def save(root: str | os.PathLike, step: int, model, optimizers: list, state: dict, keep: int = 3) -> Path:
    """Save model + optimizers (DCP, every rank its shard) and `state` (JSON, rank 0) as step_N."""
    root = Path(root)
    main = not dist.is_initialized() or dist.get_rank() == 0
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f"{PREFIX}{step:08d}.tmp"
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if dist.is_initialized():
        dist.barrier()
    msd, osd = get_state_dict(model, optimizers)
    _quiet(dcp.save, {"model": msd, "optim": osd}, checkpoint_id=str(tmp))
    if dist.is_initialized():
        dist.barrier()
    if main:
        payload = {"step": step, "rng": _rng_to_json(), **state}
        (tmp / "trainer_state.json").write_text(json.dumps(payload), encoding="utf-8")
        sizes = {f.name: f.stat().st_size for f in tmp.iterdir()}
        (tmp / "files.json").write_text(json.dumps(sizes), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()
    return final


def _intact(path: Path) -> bool:
    try:
        sizes = json.loads((path / "files.json").read_text())
        return all((path / name).stat().st_size == size for name, size in sizes.items())
    except (OSError, ValueError):
        return False


def load_latest(root: str | os.PathLike, model, optimizers: list, log=print) -> dict | None:
    """Restore the newest intact checkpoint into model and optimizers; return its JSON state
    (None when there is none). A damaged checkpoint is skipped with a warning."""
    for path in reversed(checkpoints(Path(root))):
        if not _intact(path):
            log(f"warning: checkpoint {path} is incomplete or damaged; trying the one before")
            continue
        try:
            msd, osd = get_state_dict(model, optimizers)
            sd = {"model": msd, "optim": osd}
            _quiet(dcp.load, sd, checkpoint_id=str(path))
            set_state_dict(model, optimizers, model_state_dict=sd["model"], optim_state_dict=sd["optim"],
                           options=StateDictOptions(strict=True))
        except Exception as e:  # a damaged shard: fall back
            log(f"warning: checkpoint {path} could not be read ({type(e).__name__}); trying the one before")
            continue
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        _rng_from_json(state.pop("rng"))
        return state
    return None
