"""`xlmr serve`: a fine-tuned model behind HTTP, with micro-batching, limits and graceful shutdown.

Endpoints: POST /v1/predict {"texts": [...]} (pair tasks such as qa: also "text_pairs", one per text),
POST /v1/embeddings (OpenAI-compatible: {"input": str or [str], "model": ...}), GET /healthz, GET /metrics
(Prometheus), GET / (web page). A model without per-text predictions (an encoder such as multilingual-e5-small, or one trained for retrieval) serves embeddings only.

Requests wait in one queue; a single worker thread takes up to `max_batch` texts at a time, waiting at
most `max_wait_ms` after the oldest request for others to join, and runs the model. One thread,
because the tokenizer and the model are not safe to call concurrently, and because a batched call
uses the cores better than concurrent small ones.

Shutdown: the first SIGTERM/SIGINT turns the server to draining. New predict requests get 503 at once
(with Connection: close); requests already accepted finish; once no request has arrived for a
second, uvicorn stops (closing the socket earlier would reset connections the kernel had already
accepted). A second signal stops at once.
"""

import asyncio
import collections
import math
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import XlmrError
from .serve_requests import ApiError, parse_embedding_input, parse_texts, read_body

STATIC = Path(__file__).parent / "static"


@dataclass
class ServeConfig:
    """What `xlmr serve` takes."""

    model: str = field(default="", metadata={"help": "fine-tuned model directory (torch or exported ONNX)"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    backend: Literal["torch", "onnx"] = field(default="torch", metadata={"help": "inference back-end"})
    quantize: Literal["none", "int8"] = field(default="none", metadata={"help": "int8 dynamic quantization"})
    task: str | None = field(default=None, metadata={"help": "task, if the model directory does not say"})
    words: Literal["split", "tokenizer"] = field(default="split", metadata={
        "help": "ner/pos: words are whitespace-separated (split), or come from the tokenizer, for raw text in "
                "scripts without spaces such as zh, ja, th (tokenizer)"})
    max_batch: int = field(default=32, metadata={"help": "texts per model call"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "how long a batch waits for more requests"})
    max_texts: int = field(default=64, metadata={"help": "texts per request (more: 413)"})
    max_chars: int = field(default=2000, metadata={"help": "characters per text (more: 413)"})
    max_queue: int = field(default=1024, metadata={"help": "requests waiting (more: 429)"})
    max_body: int = field(default=1 << 20, metadata={"help": "request body bytes (more: 413)"})
    timeout: float = field(default=10.0, metadata={"help": "seconds a request may wait for its result (then 504)"})
    read_timeout: float = field(default=10.0, metadata={
        "help": "seconds a client has to send a request's headers (then the connection is closed), and again its "
                "body (then 408)"})
    keep_alive: float = field(default=5.0, metadata={"help": "seconds an idle keep-alive connection stays open"})
    max_connections: int = field(default=256, metadata={"help": "open connections (more: 503)"})
    embeddings: bool = field(default=False, metadata={
        "help": "also serve POST /v1/embeddings from the model's encoder (always on for a model without "
                "per-text predictions)"})

    def __post_init__(self):
        def flag(name):
            return "--" + name.replace("_", "-")

        for name in ("max_batch", "max_texts", "max_chars", "max_queue", "max_body", "max_connections"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise XlmrError(f"{flag(name)} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise XlmrError(f"--port must be an integer from 0 to 65535, got {self.port!r}")
        for name in ("timeout", "read_timeout", "keep_alive", "max_wait_ms"):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and math.isfinite(value) and (value >= 0 if name == "max_wait_ms"
                                                                               else value > 0)
            if not ok:
                raise XlmrError(f"{flag(name)} must be a finite number {'>= 0' if name == 'max_wait_ms' else '> 0'}"
                                f" of {'milliseconds' if name == 'max_wait_ms' else 'seconds'}, got {value!r}")


class Metrics:
    """Prometheus metrics in a registry of their own (one per app, so tests can build many)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("xlmr_requests", "predict requests by HTTP status", ["code"], registry=r)
        self.errors = Counter("xlmr_errors", "predict requests answered with an error, by status", ["code"],
                              registry=r)
        self.texts = Counter("xlmr_texts", "texts predicted", registry=r)
        self.latency = Histogram("xlmr_request_latency_seconds", "predict request latency", registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.batch = Histogram("xlmr_batch_size", "texts per model call", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.queue = Gauge("xlmr_queue_depth", "requests waiting for the model", registry=r)
        self.inflight = Gauge("xlmr_inflight_requests", "predict requests being handled", registry=r)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


@dataclass
class Job:
    texts: list[str]
    future: asyncio.Future
    arrived: float
    dropped: bool = False  # timed out before the worker took it


class Batcher:
    """The request queue and the worker that runs `predict(texts) -> results` on micro-batches."""

    def __init__(self, predict, max_batch: int, max_wait: float, max_queue: int, metrics: Metrics):
        self.predict, self.max_batch, self.max_wait, self.max_queue = predict, max_batch, max_wait, max_queue
        self.metrics = metrics
        self.queue: collections.deque[Job] = collections.deque()
        self.wake = asyncio.Event()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="xlmr-model")
        self.busy = False

    def idle(self) -> bool:
        return not self.queue and not self.busy

    async def submit(self, texts: list[str], timeout: float) -> list[dict]:
        if len(self.queue) >= self.max_queue:
            raise ApiError(429, f"queue full ({self.max_queue} requests waiting); retry later")
        job = Job(texts, asyncio.get_running_loop().create_future(), time.monotonic())
        self.queue.append(job)
        self.metrics.queue.set(len(self.queue))
        self.wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except asyncio.TimeoutError:
            job.dropped = True
            raise ApiError(504, f"no result within {timeout:g} s") from None

    def _take(self) -> list[Job]:
        """Pop jobs while they fit in max_batch texts (the first job always goes, however large)."""
        jobs, n = [], 0
        while self.queue:
            job = self.queue[0]
            if job.dropped:
                self.queue.popleft()
                continue
            if jobs and n + len(job.texts) > self.max_batch:
                break
            jobs.append(self.queue.popleft())
            n += len(job.texts)
        self.metrics.queue.set(len(self.queue))
        return jobs

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            live = [j for j in self.queue if not j.dropped]
            if not live:
                self.queue.clear()
                self.wake.clear()
                await self.wake.wait()
                continue
            # wait for company until the batch is full or the oldest request has waited max_wait
            deadline = live[0].arrived + self.max_wait
            while sum(len(j.texts) for j in self.queue) < self.max_batch and loop.time() < deadline:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            jobs = self._take()
            if not jobs:
                continue
            self.busy = True
            try:
                await self._serve(jobs)
            finally:
                self.busy = False

    async def _call(self, texts: list[str]) -> list[dict]:
        results = await asyncio.get_running_loop().run_in_executor(self.executor, self.predict, texts)
        if len(results) != len(texts):
            raise RuntimeError(f"the model returned {len(results)} results for {len(texts)} texts")
        self.metrics.batch.observe(len(texts))
        self.metrics.texts.inc(len(texts))
        return results

    async def _serve(self, jobs: list[Job]) -> None:
        """Run `jobs` as one model call. If that fails, run each job alone, so that a request the model
        cannot handle fails only itself (500), not the others batched with it."""
        try:
            results = await self._call([t for j in jobs for t in j.texts])
        except Exception as e:
            if len(jobs) == 1:
                settle(jobs[0], error=e)
                return
            for j in (j for j in jobs if not j.future.done()):
                try:
                    settle(j, await self._call(j.texts))
                except Exception as err:  # this job's own failure
                    settle(j, error=err)
            return
        k = 0
        for j in jobs:
            settle(j, results[k:k + len(j.texts)])
            k += len(j.texts)


def settle(job: Job, results: list[dict] | None = None, error: Exception | None = None) -> None:
    """Hand a job its results or its error (unless its request already gave up waiting)."""
    if job.future.done():
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(results)


class ReadTimeout:
    """ASGI middleware: a request whose body has not fully arrived `seconds` after the request began
    fails with 408 (and the connection is closed), so a client that declares a body and stalls does
    not hold a connection and a request slot for ever."""

    def __init__(self, app, seconds: float):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline, body_done = loop.time() + self.seconds, False

        async def timed_receive():
            nonlocal body_done
            if body_done:  # later receives wait for a disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                raise ApiError(408, f"request body not received within {self.seconds:g} s") from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)


def guarded_h11(read_timeout: float):
    """uvicorn's h11 protocol, plus a deadline for request headers: a connection that has not sent a
    complete request line and headers `read_timeout` seconds after it opened (or after it started
    sending its next request) is closed. uvicorn has no such deadline, so a client that connects and
    sends nothing, or trickles its headers, would otherwise hold the connection for ever."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        header_timer = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def data_received(self, data):
            between = self.cycle is None or self.cycle.response_complete
            if self.header_timer is None and between:  # bytes of a new request: its headers are due
                self._arm()
            super().data_received(data)

        def connection_lost(self, exc):
            if self.header_timer is not None:
                self.header_timer.cancel()
            super().connection_lost(exc)

        def _arm(self):
            self.header_timer = self.loop.call_later(read_timeout, self._headers_due, self.cycle)

        def _headers_due(self, cycle):
            self.header_timer = None
            no_new_request = self.cycle is cycle and (cycle is None or cycle.response_complete)
            if no_new_request and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def create_app(cfg: ServeConfig, predictor=None):
    """The FastAPI app. `predictor` (a Predictor) is built from `cfg` when not given.

    long: the routes are closures over one app's state (queue, metrics, drain flag), so the function
    reads as the server's route table; split up, each route would take that state as arguments.
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    if predictor is None and predicts_text(cfg):
        from .predict import Predictor

        predictor = Predictor(cfg.model, task=cfg.task, quantize=cfg.quantize, device="cpu", backend=cfg.backend,
                              words=cfg.words)
    embedder = embedding_function(cfg) if cfg.embeddings or predictor is None else None
    metrics = Metrics()
    task = predictor.task if predictor is not None else None
    pairs = bool(task and task.pair_required)

    def predict_items(items: list) -> list[dict]:
        """Texts, or (text, pair) tuples -> one JSON answer each; blank texts are answered without the model."""
        if not any(isinstance(i, tuple) for i in items):
            return predictor(items)
        return predictor([i[0] if isinstance(i, tuple) else i for i in items],
                         [i[1] if isinstance(i, tuple) else None for i in items])

    predict = predict_items if predictor is not None else None
    # Warm up with full batches of growing length, so that the allocator reaches its working set
    # before traffic (RSS then stays flat under load) and the first requests are not slow.
    for words in (1, 8, 32, 128):
        warm = " ".join(["Warm"] * words)
        if predict is not None:
            predict([("Warm?", warm) if pairs else warm] * cfg.max_batch)
        if embedder is not None:
            embedder([warm] * cfg.max_batch)
    info = {"model": str(cfg.model), "task": task.name if task else None, "labels": list(task.labels) if task else [],
            "backend": cfg.backend, "quantize": cfg.quantize, "pairs": pairs, "embeddings": embedder is not None}
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app):
        app.state.batcher = Batcher(predict, cfg.max_batch, cfg.max_wait_ms / 1000, cfg.max_queue, metrics)
        app.state.embed_batcher = Batcher(embedder, cfg.max_batch, cfg.max_wait_ms / 1000, cfg.max_queue, metrics)
        workers = [asyncio.create_task(b.run()) for b in (app.state.batcher, app.state.embed_batcher)]
        watcher = asyncio.create_task(watch_drain(app, cfg))
        yield
        for w in workers + [watcher]:
            w.cancel()
        app.state.batcher.executor.shutdown(wait=True)
        app.state.embed_batcher.executor.shutdown(wait=True)

    app = FastAPI(title="xlmr", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.draining, app.state.inflight, app.state.server = False, 0, None
    app.state.last_request = time.monotonic()
    app.state.metrics, app.state.info = metrics, info

    def error(status: int, message: str, close: bool = False) -> JSONResponse:
        headers = {"Connection": "close", "Retry-After": "1"} if close else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    app.add_middleware(ReadTimeout, seconds=cfg.read_timeout)

    @app.exception_handler(ApiError)
    async def api_error(request, e: ApiError):  # an ApiError outside the predict route (a read timeout)
        return error(e.status, str(e), close=True)

    async def answer(request, parse, batcher, respond, missing: str | None):
        t0 = time.perf_counter()
        app.state.last_request = time.monotonic()
        if app.state.draining:
            response = error(503, "server is shutting down; retry on another instance", close=True)
        elif missing:
            response = error(404, missing)
        else:
            app.state.inflight += 1
            metrics.inflight.inc()
            try:
                texts = parse(await read_body(request, cfg.max_body), cfg)
                results = await batcher.submit(texts, cfg.timeout) if texts else []
                response = JSONResponse(respond(results))
            except ApiError as e:
                response = error(e.status, str(e), close=e.status in (408, 413))  # the body is unread
            except Exception as e:  # a model failure: answer, log, keep serving
                response = error(500, f"prediction failed ({type(e).__name__})")
            finally:
                app.state.inflight -= 1
                metrics.inflight.dec()
        code = str(response.status_code)
        metrics.requests.labels(code).inc()
        if response.status_code >= 400:
            metrics.errors.labels(code).inc()
        metrics.latency.observe(time.perf_counter() - t0)
        return response

    @app.post("/v1/predict")
    async def predict_route(request: Request):
        missing = None if predict else "this model has no per-text predictions; it serves POST /v1/embeddings"
        parse = lambda body, cfg: parse_texts(body, cfg, pairs)  # noqa: E731
        return await answer(request, parse, app.state.batcher, lambda r: {"predictions": r}, missing)

    def embeddings_answer(results):
        data = [{"object": "embedding", "index": i, "embedding": vec} for i, (vec, _) in enumerate(results)]
        tokens = sum(n for _, n in results)
        return {"object": "list", "data": data, "model": str(cfg.model),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.post("/v1/embeddings")
    async def embeddings_route(request: Request):
        missing = None if embedder else "embeddings are off for this model; start the server with --embeddings"
        return await answer(request, parse_embedding_input, app.state.embed_batcher, embeddings_answer, missing)

    @app.get("/healthz")
    async def healthz():
        if app.state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return {"status": "ok", **info}

    @app.get("/metrics")
    async def metrics_route():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page)

    return app


def predicts_text(cfg: ServeConfig) -> bool:
    """Whether the model has a task with per-text predictions (a retrieval model or a bare encoder has not)."""
    from .checkpoint import TASK_FILE, resolve
    from .tasks import task_class

    directory = resolve(cfg.model)
    if cfg.task is None and not (directory / TASK_FILE).is_file():
        return False
    from .checkpoint import load_task_info

    return getattr(task_class(load_task_info(directory, cfg.task)["task"]), "text_predictions", True)


def embedding_function(cfg: ServeConfig):
    """texts -> [(L2-normalised embedding as a list, token count)], from the model's encoder."""
    from .embeddings import Embedder

    embedder = Embedder(cfg.model, backend=cfg.backend, quantize=cfg.quantize, device="cpu")

    def run(texts: list[str]) -> list[tuple[list[float], int]]:
        vecs = embedder(texts, True)
        counts = [sum(m) for m in embedder.tokenizer.encode([embedder.prefix + t for t in texts],
                                                            max_length=embedder.max_length).attention_mask]
        return [(v.tolist(), n) for v, n in zip(vecs, counts)]

    return run


QUIET_SECONDS = 1.0  # during drain: stop once no request has arrived for this long


async def watch_drain(app, cfg: ServeConfig) -> None:
    """Once draining, tell uvicorn to stop when accepted requests are done (or after the timeout)."""
    while not app.state.draining:
        await asyncio.sleep(0.05)
    deadline = time.monotonic() + cfg.timeout + 2
    while time.monotonic() < deadline and (app.state.inflight or not app.state.batcher.idle()):
        await asyncio.sleep(0.02)
    # Keep answering 503 until clients have gone quiet: closing the listening socket while requests
    # still arrive would reset connections the kernel already accepted (lost, not refused).
    while time.monotonic() < deadline and time.monotonic() - app.state.last_request < QUIET_SECONDS:
        await asyncio.sleep(0.05)
    if app.state.server is not None:
        app.state.server.should_exit = True


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), or one line saying why it cannot be (port in use, bad host)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise XlmrError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app, cfg: ServeConfig):
    """uvicorn's Config with the connection limits of `cfg`."""
    import uvicorn

    # uvicorn answers 503 once len(connections) >= limit_concurrency, counting the new one: +1 lets
    # exactly max_connections in
    return uvicorn.Config(app, log_level="warning", access_log=False, http=guarded_h11(cfg.read_timeout),
                          limit_concurrency=cfg.max_connections + 1, timeout_keep_alive=cfg.keep_alive,
                          timeout_graceful_shutdown=int(cfg.timeout) + 5)


def serve(cfg: ServeConfig) -> None:
    """Run the server until SIGTERM/SIGINT (graceful) or a second signal (at once)."""
    import uvicorn

    if not cfg.model:
        raise XlmrError("serve needs --model DIR")
    sock = listen_socket(cfg.host, cfg.port)  # before the model loads: a taken port fails at once
    app = create_app(cfg)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if app.state.draining:  # second signal: stop now
                return super().handle_exit(sig, frame)
            app.state.draining = True

    server = Server(uvicorn_config(app, cfg))
    app.state.server = server
    print(f"xlmr: serving {app.state.info['task']} model {cfg.model} ({cfg.backend}, {cfg.quantize}) on "
          f"http://{cfg.host}:{sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])
