"""Load test on loopback: start `xlmr serve`, send N requests from C concurrent clients, report
errors, p50/p99 latency, throughput, batch sizes and the server's RSS over the run.

    PYTHONPATH=. python bench/load_test.py --model runs/serve_ner/best --requests 1000 --clients 32

Only ever targets 127.0.0.1, with a bounded request count and a time limit.
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serve_models import start_server, stop_server  # noqa: E402


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


async def load(url: str, texts: list[str], n: int, clients: int, deadline: float, done: list) -> list:
    import httpx

    results, next_i = [], iter(range(n))

    async def client():
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            for i in next_i:
                if time.monotonic() > deadline:
                    return
                batch = [texts[(i * 3 + k) % len(texts)] for k in range(1 + i % 3)]  # 1-3 texts
                t0 = time.perf_counter()
                try:
                    r = await c.post("/v1/predict", json={"texts": batch})
                    ok = r.status_code == 200 and len(r.json()["predictions"]) == len(batch)
                    status = r.status_code
                except Exception as e:  # counted as an error, reported by type
                    ok, status = False, type(e).__name__
                results.append((time.perf_counter() - t0, ok, status))
                done[0] += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--time-limit", type=float, default=600, help="seconds; stop sending after this")
    data = os.environ.get("XLMR_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))
    ap.add_argument("--test", default=os.path.join(data, "wikiann", "en", "test.conll"),
                    help="WikiANN test file ($XLMR_DATA/wikiann/en/test.conll)")
    ap.add_argument("--json", default=None)
    ap.add_argument("server_args", nargs="*", help="extra `xlmr serve` options, after --")
    args = ap.parse_args()

    from xlmr.tasks import get_task

    texts = [" ".join(ex.words) for ex in get_task("ner").read(args.test)[:2000]]
    proc, url = start_server(args.model, *args.server_args)
    done, samples, stop = [0], [], threading.Event()

    def sample():  # (requests completed, RSS MB) every 50 ms
        while not stop.is_set():
            samples.append((done[0], rss_mb(proc.pid)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        rss_start = rss_mb(proc.pid)
        sampler.start()
        t0 = time.perf_counter()
        results = asyncio.run(load(url, texts, args.requests, args.clients, time.monotonic() + args.time_limit, done))
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
        import httpx

        metrics = httpx.get(url + "/metrics").text
        healthy = httpx.get(url + "/healthz").status_code == 200
    finally:
        stop.set()
        code = stop_server(proc)
    lat = sorted(r[0] for r in results)
    errors = [r[2] for r in results if not r[1]]
    window = min(200, len(results))
    first = max(m for d, m in samples if d <= window)
    last = max(m for d, m in samples if d >= len(results) - window)
    total = float(re.search(r"^xlmr_batch_size_sum (\S+)", metrics, re.M).group(1))
    calls = float(re.search(r"^xlmr_batch_size_count (\S+)", metrics, re.M).group(1))
    report = {
        "requests": len(results), "clients": args.clients, "errors": len(errors),
        "error_kinds": {str(k): errors.count(k) for k in set(errors)},
        "p50_ms": round(1000 * statistics.median(lat), 1), "p99_ms": round(1000 * lat[int(0.99 * (len(lat) - 1))], 1),
        "throughput_rps": round(len(results) / wall, 1), "wall_s": round(wall, 2),
        "mean_batch_texts": round(total / max(calls, 1), 2), "model_calls": int(calls),
        "rss_start_mb": round(rss_start, 1), "rss_first200_mb": round(first, 1), "rss_last200_mb": round(last, 1),
        "rss_growth_pct": round(100 * (last / first - 1), 2), "healthy_after": healthy, "exit_code": code,
        "server_args": args.server_args, "load_avg": os.getloadavg(),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    ok = not errors and report["rss_growth_pct"] < 10 and healthy and len(results) == args.requests
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
