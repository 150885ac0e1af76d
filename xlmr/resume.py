"""Training checkpoints for resume: torch.distributed.checkpoint for model and optimizer state,
JSON for the loop, data-stream and RNG state. Written atomically (temporary directory, then rename),
last N kept; a damaged latest checkpoint is skipped with a warning in favour of the one before.

Reading never runs code from the checkpoint. torch's FileSystemReader unpickles `.metadata` with
plain `pickle`, and its default planner reads non-tensor items with `torch.load(weights_only=False)`;
`read` swaps in a reader whose unpickler admits only the classes checkpoint metadata is made of,
and a planner that reads items with `weights_only=True`.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from .errors import XlmrError

PREFIX = "step_"
# What DCP metadata is made of: its dataclasses, the storage records of the filesystem writer,
# torch.Size, dtypes and layouts (by name), and paths. Nothing here runs code when called.
_METADATA_MODULE = "torch.distributed.checkpoint.metadata"
_SAFE_GLOBALS = {("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
                 ("torch.serialization", "_get_layout"), ("torch", "Size"),
                 ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"),
                 ("collections", "OrderedDict")}


class UnsafeCheckpoint(XlmrError):
    """A checkpoint file that would need arbitrary code (or is not a DCP file at all) to be read."""


class DamagedCheckpoint(XlmrError):
    """A checkpoint whose files DCP could not read."""


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        value = None
        if module == _METADATA_MODULE and not name.startswith("__"):
            value = getattr(dcp.metadata, name, None)
            value = value if isinstance(value, type) else None  # its dataclasses and enums only
        elif module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            value = getattr(torch, name)
        elif (module, name) in _SAFE_GLOBALS:
            value = super().find_class(module, name)
        if value is None:
            raise UnsafeCheckpoint(f"{self.source}: refused to load {module}.{name}; a checkpoint's metadata "
                                   f"may only hold torch.distributed.checkpoint records")
        return value


class _SafeReader(dcp.FileSystemReader):
    """FileSystemReader whose metadata comes from `_MetadataUnpickler`. The metadata is read once,
    up front by `read`, so a refusal is raised here rather than logged and wrapped inside DCP."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(str(path))
        meta_path = Path(self._get_metadata_path())
        try:
            with open(meta_path, "rb") as f:
                metadata = _MetadataUnpickler(f, str(meta_path)).load()
        except UnsafeCheckpoint:
            raise
        except Exception as e:
            raise UnsafeCheckpoint(f"{meta_path}: not a readable checkpoint metadata file "
                                   f"({type(e).__name__})") from None
        if not isinstance(metadata, dcp.metadata.Metadata):
            raise UnsafeCheckpoint(f"{meta_path}: holds a {type(metadata).__name__}, not checkpoint metadata")
        self._metadata = metadata

    def read_metadata(self, *args, **kwargs):
        metadata = self._metadata
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = dcp.metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _SafePlanner(dcp.DefaultLoadPlanner):
    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except Exception as e:
            raise UnsafeCheckpoint(f"checkpoint item {read_item.dest_index.fqn!r} cannot be read safely "
                                   f"({type(e).__name__})") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def _first_failure(e: BaseException) -> BaseException:
    """The exception a rank raised inside DCP (which wraps them all in a CheckpointException)."""
    if isinstance(e, CheckpointException):
        for failure in e.failures.values():
            inner = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(inner, BaseException):
                return inner
    return e


def read(state_dict: dict, path: str | os.PathLike) -> None:
    """Load a DCP checkpoint directory into `state_dict` in place, running no code from its files.
    Raises UnsafeCheckpoint naming the file when the metadata holds anything else, and
    DamagedCheckpoint when DCP fails to read it."""
    reader = _SafeReader(path)
    try:
        _quiet(dcp.load, state_dict, storage_reader=reader, planner=_SafePlanner())
    except CheckpointException as e:
        inner = _first_failure(e)
        if isinstance(inner, XlmrError):
            raise inner from None
        first = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
        raise DamagedCheckpoint(f"{path}: checkpoint could not be read ({type(inner).__name__}"
                                f"{': ' + first if first else ''})") from None


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
            read(sd, path)
            set_state_dict(model, optimizers, model_state_dict=sd["model"], optim_state_dict=sd["optim"],
                           options=StateDictOptions(strict=True))
        except UnsafeCheckpoint as e:
            log(f"warning: {e}; trying the checkpoint before")
            continue
        except Exception as e:  # a damaged shard: fall back
            log(f"warning: checkpoint {path} could not be read ({type(e).__name__}); trying the one before")
            continue
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        _rng_from_json(state.pop("rng"))
        return state
    return None
