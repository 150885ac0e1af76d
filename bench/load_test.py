"""Load test on loopback: start `xlmr serve`, send N requests from C concurrent clients, report
errors, p50/p99 latency, throughput, batch sizes and the server's RSS over the run (the check: RSS over
the last 200 requests within 10% of its peak over the first half).

A share of the requests (--poison-pct, 5% by default) is poisoned, in turn: a body that is not UTF-8,
a text with a lone surrogate, JSON nested 100,000 deep, and a stalled body (headers declare 1,000
bytes, 10 are sent, then nothing). Each poisoned request must get a 4xx: 400 for the first three, and
for the stalled body a 408 followed by the server closing the connection (after its --read-timeout).
Every good request must get 200 with one prediction per text.

    PYTHONPATH=. python bench/load_test.py --model runs/serve_ner/best --requests 1000 --clients 50

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


POISON = {  # kind -> request body (the stalled body is sent by hand, see `stalled`)
    "bad encoding": '{"texts": ["caf\u00e9 cr\u00e8me"]}'.encode("latin-1"),
    "surrogate": b'{"texts": ["fine", "a\\ud800b"]}',
    "deep JSON": b"[" * 100_000,
    "stalled body": None,
}


async def stalled(url: str) -> int | str:
    """Declare a 1,000-byte body, send 10 bytes, then wait: the status the server answers, once it has
    also closed the connection (a status it answered but a connection it kept open counts as not closed)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"texts\": ")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), 60)  # read(-1): until the server closes it
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else "closed without an answer"
    except asyncio.TimeoutError:
        return "not closed within 60 s"
    finally:
        writer.close()


async def load(url: str, texts: list[str], n: int, clients: int, deadline: float, done: list,
               poison_every: int) -> list:
    """(seconds, ok, status, kind) per request; kind is "good" or a POISON kind."""
    import httpx

    results, next_i, kinds = [], iter(range(n)), list(POISON)

    async def client():
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            for i in next_i:
                if time.monotonic() > deadline:
                    return
                kind = kinds[(i // poison_every) % len(kinds)] if poison_every and i % poison_every == 1 else "good"
                batch = [texts[(i * 3 + k) % len(texts)] for k in range(1 + i % 3)]  # 1-3 texts
                t0 = time.perf_counter()
                try:
                    if kind == "stalled body":
                        status = await stalled(url)
                    elif kind != "good":
                        r = await c.post("/v1/predict", content=POISON[kind],
                                         headers={"Content-Type": "application/json"})
                        status = r.status_code
                    else:
                        r = await c.post("/v1/predict", json={"texts": batch})
                        status = r.status_code
                        ok = status == 200 and len(r.json()["predictions"]) == len(batch)
                    if kind != "good":
                        ok = isinstance(status, int) and 400 <= status < 500
                except Exception as e:  # counted as an error, reported by type
                    ok, status = False, type(e).__name__
                results.append((time.perf_counter() - t0, ok, status, kind))
                done[0] += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--poison-pct", type=float, default=5.0, help="share of poisoned requests, percent (0: none)")
    ap.add_argument("--time-limit", type=float, default=600, help="seconds; stop sending after this")
    data = os.environ.get("XLMR_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))
    ap.add_argument("--test", default=os.path.join(data, "wikiann", "en", "test.conll"),
                    help="WikiANN test file ($XLMR_DATA/wikiann/en/test.conll)")
    ap.add_argument("--json", default=None)
    ap.add_argument("server_args", nargs="*", help="extra `xlmr serve` options, after -- (e.g. -- --timeout 30)")
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
        every = round(100 / args.poison_pct) if args.poison_pct > 0 else 0
        results = asyncio.run(load(url, texts, args.requests, args.clients, time.monotonic() + args.time_limit, done,
                                   every))
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
        import httpx

        metrics = httpx.get(url + "/metrics").text
        healthy = httpx.get(url + "/healthz").status_code == 200
    finally:
        stop.set()
        code = stop_server(proc)
    good = [r for r in results if r[3] == "good"]
    poisoned = [r for r in results if r[3] != "good"]
    lat = sorted(r[0] for r in good)
    errors = [r[2] for r in good if not r[1]]
    poison_codes = {kind: {str(s): sum(1 for r in poisoned if r[3] == kind and r[2] == s)
                           for s in {r[2] for r in poisoned if r[3] == kind}} for kind in POISON}
    print(f"good requests succeeded: {sum(r[1] for r in good)} / {len(good)}")
    print(f"poisoned answered 4xx: {sum(r[1] for r in poisoned)} / {len(poisoned)}  {poison_codes}")
    print(f"good p50 {1000 * statistics.median(lat):.0f} ms, p99 {1000 * lat[int(0.99 * (len(lat) - 1))]:.0f} ms")
    # A leak grows with the requests served; the allocator's high-water mark rises while new batch shapes
    # arrive and then stays. So the check compares the last 200 requests against the peak of the first
    # half (the warm-up), not against the first 200 requests.
    window = min(200, len(results))
    first = max(m for d, m in samples if d <= window)
    half = max(m for d, m in samples if d <= len(results) // 2)
    last = max(m for d, m in samples if d >= len(results) - window)
    total = float(re.search(r"^xlmr_batch_size_sum (\S+)", metrics, re.M).group(1))
    calls = float(re.search(r"^xlmr_batch_size_count (\S+)", metrics, re.M).group(1))
    report = {
        "requests": len(results), "clients": args.clients, "good": len(good), "errors": len(errors),
        "poisoned": len(poisoned), "poisoned_4xx": sum(r[1] for r in poisoned), "poisoned_status": poison_codes,
        "error_kinds": {str(k): errors.count(k) for k in set(errors)},
        "p50_ms": round(1000 * statistics.median(lat), 1), "p99_ms": round(1000 * lat[int(0.99 * (len(lat) - 1))], 1),
        "throughput_rps": round(len(results) / wall, 1), "wall_s": round(wall, 2),
        "mean_batch_texts": round(total / max(calls, 1), 2), "model_calls": int(calls),
        "rss_start_mb": round(rss_start, 1), "rss_first200_mb": round(first, 1), "rss_last200_mb": round(last, 1),
        "rss_first_half_peak_mb": round(half, 1), "rss_growth_pct": round(100 * (last / half - 1), 2),
        "rss_peak_by_quarter_mb": [round(max(m for d, m in samples if d <= q * len(results) // 4), 1) for q in (1, 2, 3, 4)],
        "healthy_after": healthy, "exit_code": code,
        "server_args": args.server_args, "load_avg": os.getloadavg(),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    ok = (not errors and all(r[1] for r in poisoned) and report["rss_growth_pct"] < 10 and healthy
          and len(results) == args.requests)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
