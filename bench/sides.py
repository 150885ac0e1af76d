"""What the side-by-side benches share: each side in its own process, its peak memory, and the
time of xlmr's training loop alone (as HF's `trainer.train()` is timed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def timed_xlmr_train(timing: dict):
    """Inside the block, xlmr.finetune's training loop records its wall and CPU seconds in `timing`."""
    import xlmr.finetune as ft

    real_train = ft.train

    def timed_train(*a, **kw):
        w, c = time.perf_counter(), time.process_time()
        result = real_train(*a, **kw)
        timing["wall"], timing["cpu"] = time.perf_counter() - w, time.process_time() - c
        return result

    ft.train = timed_train
    try:
        yield
    finally:
        ft.train = real_train


def run_sides(script: str, sides: list[str], argv: list[str], threads: int) -> dict[str, dict]:
    """Run `script --side S *argv` for each side, one after the other; each prints its results as
    JSON on its last stdout line."""
    results = {}
    for side in sides:
        print(f"running {side} ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, script, "--side", side, *argv], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        if proc.returncode:
            sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
        results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results
