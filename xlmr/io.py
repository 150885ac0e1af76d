"""Small helpers shared by every module: atomic writes and the parameter counter.

An atomic write goes to a temporary file beside the target and is renamed over it, so a reader (or
a run that was killed) never sees half a file. The temporary file is created with mode 0o666 and
the process umask applies, as with a plain `open(path, "w")`: a model directory written by one
user stays readable by the others of a shared machine when the umask allows it.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    `write` gets the temporary file's name (it exists, empty, with the umask's mode) and writes to it
    by name; the name keeps `path`'s suffix, for writers that pick a format from it. On any error the
    temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{path.suffix}")
        try:  # O_EXCL: never reuse another writer's file; 0o666 & ~umask like open()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        os.close(fd)
        write(str(tmp))
        # Some writers replace the file by their own temporary one (safetensors' save_file does, at 0600).
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a UTF-8 text file atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write a binary file atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: str | os.PathLike, data, **dumps) -> Path:
    """Write `json.dumps(data, **dumps)` plus a newline atomically."""
    return atomic_write_text(path, json.dumps(data, **dumps) + "\n")



@dataclass
class ParameterCount:
    """Parameters of a model, each tensor counted once (tied embeddings are one tensor)."""

    trainable: int  # with requires_grad
    total: int
    parts: dict[str, int] = field(default_factory=dict)  # {part(name): total}, when a `part` was given


def count_parameters(model: nn.Module, part: Callable[[str], str] | None = None) -> ParameterCount:
    """Count `model`'s parameters; `part(name)` (if given) also splits the total by parameter name
    (a shared tensor goes to the part of its first name)."""
    count = ParameterCount(0, 0)
    for name, p in model.named_parameters():  # each tensor once, under its first name
        count.total += p.numel()
        count.trainable += p.numel() if p.requires_grad else 0
        if part is not None:
            key = part(name)
            count.parts[key] = count.parts.get(key, 0) + p.numel()
    return count
