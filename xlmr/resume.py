"""Training checkpoints for resume: torch.distributed.checkpoint for model and optimizer state,
JSON for the loop, data-stream and RNG state, and last a manifest with the size and sha256 of every
file. Written atomically (temporary directory, then rename), last N kept. Resume verifies the
manifest and falls back to the newest intact checkpoint with one warning per damaged one; when none
is intact it stops with one line (`fresh` starts over on purpose). A checkpoint is never written
from weights or optimizer state that are not finite.

Reading never runs code from the checkpoint. torch's FileSystemReader unpickles `.metadata` with
plain `pickle`, and its default planner reads non-tensor items with `torch.load(weights_only=False)`;
`read` swaps in a reader whose unpickler admits only the classes checkpoint metadata is made of,
and a planner that reads items with `weights_only=True`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import random
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from .errors import XlmrError
from .train import LoopState

PREFIX = "step_"
MANIFEST = "manifest.json"
STATE = "trainer_state.json"
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
    """A checkpoint whose files do not match its manifest, or that DCP could not read."""


@dataclass
class ResumeOptions:
    """Training checkpoints under out/checkpoints: how often, how many, and whether to start over."""

    save_every: int = field(default=100, metadata={"help": "write a training checkpoint every N steps (0: never)"})
    keep: int = field(default=3, metadata={"min": 1, "help": "training checkpoints kept"})
    fresh: bool = field(default=False, metadata={
        "help": "start from step 0 and delete the training checkpoints in out/checkpoints (without it, a run "
                "resumes from the newest intact one, and stops if none is intact)"})


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        value = None
        if module == _METADATA_MODULE and not name.startswith("__"):
            import torch.distributed.checkpoint.metadata as metadata

            value = getattr(metadata, name, None)
            value = value if isinstance(value, type) else None  # its dataclasses and enums only
        elif module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            value = getattr(torch, name)
        elif (module, name) in _SAFE_GLOBALS:
            value = super().find_class(module, name)
        if value is None:
            raise UnsafeCheckpoint(f"{self.source}: refused to load {module}.{name}; a checkpoint's metadata "
                                   f"may only hold torch.distributed.checkpoint records")
        return value


@functools.cache
def _safe_classes():
    """(_SafeReader, _SafePlanner), defined on first use: torch.distributed.checkpoint takes seconds to
    import, and the CLI imports this module to build its parser."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint._traverse import set_element

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

    return _SafeReader, _SafePlanner


def _first_failure(e: BaseException) -> BaseException:
    """The exception a rank raised inside DCP (which wraps them all in a CheckpointException)."""
    from torch.distributed.checkpoint.api import CheckpointException

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
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    reader_class, planner_class = _safe_classes()
    reader = reader_class(path)
    try:  # CheckpointException derives from BaseException: `except Exception` would miss it
        _quiet(dcp.load, state_dict, storage_reader=reader, planner=planner_class())
    except CheckpointException as e:
        inner = _first_failure(e)
        if isinstance(inner, XlmrError):
            raise type(inner)(str(inner) if str(path) in str(inner) else f"{path}: {inner}") from None
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
                   and p.name[len(PREFIX):].isdigit()), key=lambda p: int(p.name[len(PREFIX):]))


def _main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save(root: str | os.PathLike, step: int, model, optimizers: list, state: dict, keep: int = 3) -> Path:
    """Save model + optimizers (DCP, every rank its shard), `state` (JSON, rank 0) and last the
    manifest as step_N, then rename it into place and delete all but the newest `keep`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = Path(root)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f"{PREFIX}{step:08d}.tmp"
    try:
        if _main():
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        msd, osd = get_state_dict(model, _with_sparse_state(optimizers))
        _quiet(dcp.save, {"model": msd, "optim": osd}, checkpoint_id=str(tmp))
        _barrier()
        if _main():
            payload = {"step": step, "rng": _rng_to_json(), **state}
            (tmp / STATE).write_text(json.dumps(payload), encoding="utf-8")
        write_manifest(tmp)
        if _main():
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in checkpoints(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    except (OSError, CheckpointException) as e:  # a full disk, a lost mount
        inner = _first_failure(e)
        raise XlmrError(f"{tmp}: could not write the checkpoint ({type(inner).__name__}: {inner})") from None
    _barrier()
    return final


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _records(directory: Path, names) -> dict:
    return {n: {"size": (directory / n).stat().st_size, "sha256": _sha256(directory / n)} for n in names}


def write_manifest(directory: Path) -> None:
    """Write manifest.json: size and sha256 of every other file in `directory`. Every rank hashes
    the shards it wrote (`__RANK_*.distcp`), rank 0 the rest; call it on every rank, last."""
    directory = Path(directory)
    files: dict = {}
    if dist.is_initialized():
        rank = dist.get_rank()
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, _records(directory, [p.name for p in directory.iterdir()
                                                           if p.name.startswith(f"__{rank}_")]))
        for part in parts:
            files.update(part)
    if not dist.is_initialized() or dist.get_rank() == 0:
        rest = sorted(p.name for p in directory.iterdir() if p.name not in files and p.name != MANIFEST)
        files.update(_records(directory, rest))
        (directory / MANIFEST).write_text(json.dumps({"format": 1, "files": files}, indent=1, sort_keys=True) + "\n",
                                          encoding="utf-8")


def _problem(path: Path, name: str, size: int, digest: str) -> str | None:
    if Path(name).name != name or name in ("", ".", ".."):
        return f"{path / MANIFEST}: lists {name!r}, which is not a file of the checkpoint"
    f = path / name
    if not f.is_file():
        return f"{f}: missing"
    actual = f.stat().st_size
    if actual != size:
        return f"{f}: {actual} bytes where the manifest records {size}"
    if _sha256(f) != digest:
        return f"{f}: contents do not match the sha256 in the manifest"
    return None


def verify(path: str | os.PathLike) -> None:
    """Check every file against manifest.json (size, then sha256); raise DamagedCheckpoint naming
    the first bad file and why. Under torch.distributed the ranks share the hashing and all agree."""
    path = Path(path)
    try:
        files = json.loads((path / MANIFEST).read_text(encoding="utf-8"))["files"]
        items = sorted((str(n), int(r["size"]), str(r["sha256"])) for n, r in files.items())
    except FileNotFoundError:
        raise DamagedCheckpoint(f"{path}: no {MANIFEST} (the checkpoint was not completely written)") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DamagedCheckpoint(f"{path / MANIFEST}: not a readable manifest ({type(e).__name__})") from None
    missing = [n for n in (".metadata", STATE) if n not in {name for name, _, _ in items}]
    problems = [f"{path / MANIFEST}: does not list {missing[0]}"] if missing else []
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    for name, size, digest in items[rank::world]:
        problem = None if problems else _problem(path, name, size, digest)
        if problem:
            problems.append(problem)
    if dist.is_initialized():
        parts: list = [None] * world
        dist.all_gather_object(parts, problems)
        problems = [p for part in parts for p in part]
    if problems:
        raise DamagedCheckpoint(problems[0])


def _read_state(path: Path) -> dict:
    """trainer_state.json, checked to hold a step and the RNG state."""
    try:
        state = json.loads((path / STATE).read_text(encoding="utf-8"))
        if not (isinstance(state, dict) and isinstance(state.get("step"), int) and isinstance(state.get("rng"), dict)):
            raise ValueError("no step or RNG state")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DamagedCheckpoint(f"{path / STATE}: unreadable ({e})") from None
    return state


def _load(path: Path, model, optimizers: list, accept: Callable[[dict], object]):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    verify(path)
    state = _read_state(path)
    msd, osd = get_state_dict(model, _with_sparse_state(optimizers))
    sd = {"model": msd, "optim": osd}
    read(sd, path)
    set_state_dict(model, optimizers, model_state_dict=sd["model"], optim_state_dict=sd["optim"],
                   options=StateDictOptions(strict=True))
    _rng_from_json(state.pop("rng"))
    return accept(state)


def load_latest(root: str | os.PathLike, model, optimizers: list, log=print,
                accept: Callable[[dict], object] = lambda state: state):
    """Restore the newest intact checkpoint into model and optimizers and return `accept(state)` of
    its JSON state (None when there is no checkpoint). A checkpoint that fails the manifest, DCP, or
    `accept` is skipped, with one warning each once an intact one is found; when none is intact,
    raises XlmrError naming the checkpoint directory."""
    found = checkpoints(Path(root))
    skipped = []
    for path in reversed(found):
        try:
            result = _load(path, model, optimizers, accept)
        except XlmrError as e:
            skipped.append(str(e))
            continue
        except Exception as e:  # a state that does not fit this model or run
            first = (str(e).strip().splitlines() or [""])[0]
            skipped.append(f"{path}: does not fit this run ({type(e).__name__}{': ' + first if first else ''})")
            continue
        for reason in skipped:
            log(f"xlmr: warning: skipped a damaged checkpoint: {reason}")
        return result
    if skipped:
        raise XlmrError(f"{root}: none of the {len(found)} checkpoints is intact (the newest: {skipped[0]}); "
                        f"run with --fresh to start from step 0 (it deletes them)")
    return None


def discard(root: str | os.PathLike, log=print) -> None:
    """Delete the checkpoints under `root` (finished and half-written), for a fresh start."""
    root = Path(root)
    if _main() and root.is_dir():
        gone = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
        for p in gone:
            shutil.rmtree(p)
        if gone:
            log(f"xlmr: starting fresh: deleted {len(gone)} checkpoint(s) in {root}")
    _barrier()


def _with_sparse_state(optimizers: list) -> list:
    """Give a SparseAdam without state its (zero) state, so get_state_dict has tensors to load
    into: its own initialisation steps with dense zero gradients, which SparseAdam refuses."""
    for o in optimizers:
        if isinstance(o, torch.optim.SparseAdam) and not o.state:
            for group in o.param_groups:
                for p in group["params"]:
                    o.state[p] = {"step": 0, "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                  "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
    return optimizers


def _non_finite(model, optimizers: list) -> str | None:
    """'weights' or 'optimizer state' when any of it is inf/NaN on any rank, else None."""
    def bad(tensors) -> bool:
        return any(not bool(torch.isfinite(t.to_local() if hasattr(t, "to_local") else t).all())
                   for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point())

    states = (t for o in optimizers for s in o.state.values() for t in s.values())
    device = next(model.parameters()).device
    flags = torch.tensor([float(bad(model.parameters())), float(bad(states))], device=device)
    if dist.is_initialized():
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return "weights" if flags[0] else "optimizer state" if flags[1] else None


class Resumer:
    """The train loop's `restore` and `on_step` hooks for the checkpoints under `root`: resume from
    the newest intact one (or start over with `opts.fresh`), save every `opts.save_every` steps and
    at the end. `data_state()` / `load_data(d)` save and restore the data position."""

    def __init__(self, root: str | os.PathLike, model, opts: ResumeOptions, data_state: Callable[[], dict],
                 load_data: Callable[[dict], None], log=print):
        self.root, self.model, self.opts, self.log = Path(root), model, opts, log
        self.data_state, self.load_data = data_state, load_data

    def _accept(self, state: dict) -> LoopState:
        loop = LoopState(**state["loop"], saved_step=state["step"])
        self.load_data(state["data"])
        return loop

    def restore(self, model, optimizers: list) -> LoopState | None:
        if self.opts.fresh:
            discard(self.root, self.log)
            return None
        loop = load_latest(self.root, model, optimizers, self.log, accept=self._accept)
        if loop is not None:
            self.log(f"xlmr: resumed from step {loop.step}")
        return loop

    def on_step(self, state: LoopState) -> None:
        every = self.opts.save_every
        if not every or not (state.step % every == 0 or state.finished):
            return
        # The loop stops at a non-finite loss before any save; weights can still overflow in an update.
        bad = _non_finite(self.model, state.optimizers)
        if bad:
            raise XlmrError(f"the {bad} became inf or NaN at step {state.step}; stopping without saving it "
                            f"({state.checkpoint_note()}). Try a lower learning rate.")
        save(self.root, state.step, self.model, state.optimizers,
             {"loop": state.state_dict(), "data": self.data_state()}, keep=self.opts.keep)
        state.saved_step = state.step
