"""One run per output directory: an exclusive lock on the directory, and the run id that tags its logs.

Every command that writes a run directory (`finetune`, `evaluate`, `pretrain`, `adapt-language`,
`data prepare`) holds `run_directory(out)` while it runs. A second run with the same directory fails
at once with one line naming the holder's PID, instead of mixing its files with the first run's.
The lock is a `flock` on `out/.xlmr.lock`, which the kernel drops when the holding process ends,
also on `kill -9`, so a crashed run never leaves a stale lock behind. The file itself stays.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import XlmrError

LOCK_FILE = ".xlmr.lock"


@dataclass(frozen=True)
class Run:
    """The locked output directory and this run's id (in every metrics.jsonl line)."""

    out: Path
    run_id: str


def new_run_id() -> str:
    """A short id that tells the runs writing one directory apart (UTC start time + random suffix)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def _holder(fd: int) -> str:
    """The PID the holder wrote into the lock file (it writes it right after taking the lock)."""
    for _ in range(20):
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
        if text:
            return text[0]
        time.sleep(0.01)
    return "unknown"


@contextmanager
def run_directory(out: str | os.PathLike, lock: bool = True) -> Iterator[Run]:
    """Create `out` and hold an exclusive lock on it until the block ends.

    `lock=False` (the non-main ranks of a distributed run, which write into rank 0's directory)
    takes no lock and only hands out a run id. Raises XlmrError when another process holds the lock.
    """
    out = Path(out)
    if not lock:
        yield Run(out, new_run_id())
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise XlmrError(f"{out}: cannot use as an output directory ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise XlmrError(f"{out}: another run (PID {_holder(fd)}) is writing to this directory; "
                            f"wait for it to finish or choose another output directory") from None
        run = Run(out, new_run_id())
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {run.run_id}\n".encode(), 0)
        yield run
    finally:
        os.close(fd)  # closing the only descriptor releases the flock
