"""What `xlmr serve` accepts: request bodies read within their size limit and checked field by field,
each fault an ApiError whose status and one-line message the client gets. `cfg` is the server's
ServeConfig (its max_texts, max_chars limits)."""

from __future__ import annotations

import json
import re
DRAIN_CAP = 64 << 20  # bytes of an oversized body read and dropped so the client sees the 413


class ApiError(Exception):
    """An HTTP error with a one-line message, sent as {"error": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


SURROGATE = re.compile("[\ud800-\udfff]")  # valid in a JSON escape, not in Unicode text


def parse_texts(body: bytes, cfg, pair_required: bool = False) -> list:
    """The request's texts, validated: 400 bad JSON or text that is not Unicode, 422 wrong shape or
    types, 413 over the limits. With "text_pairs" (required when `pair_required`), one (text, pair)
    tuple per text."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON ({str(e).splitlines()[0][:120]})") from None
    except RecursionError:
        raise ApiError(400, "request body is not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict) or "texts" not in data:
        raise ApiError(422, 'expected a JSON object {"texts": [string, ...]}')
    texts = check_texts(data["texts"], cfg, "texts")
    if "text_pairs" not in data:
        if pair_required:
            raise ApiError(422, 'this model needs a pair for every text: {"texts": [question, ...], '
                                '"text_pairs": [context, ...]}')
        return texts
    pairs = data["text_pairs"]
    if not isinstance(pairs, list) or len(pairs) != len(texts):
        raise ApiError(422, f'"text_pairs" must be a list of {len(texts)} strings, one per text')
    check_strings(pairs, "text_pairs", cfg)
    return list(zip(texts, pairs))


def check_texts(texts, cfg, name: str) -> list[str]:
    """`texts` (the request's field `name`) as a list of strings within the limits: 422, 413, 400."""
    if not isinstance(texts, list):
        raise ApiError(422, f'"{name}" must be a list of strings, got {type(texts).__name__}')
    if len(texts) > cfg.max_texts:
        raise ApiError(413, f"too many texts: {len(texts)} > {cfg.max_texts} per request")
    check_strings(texts, name, cfg)
    return texts


def check_strings(items: list, name: str, cfg) -> None:
    """Each item a string within max_chars and valid Unicode (422, 413, 400 naming `name[i]`)."""
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise ApiError(422, f"{name}[{i}] must be a string, got {type(t).__name__}")
        if len(t) > cfg.max_chars:
            raise ApiError(413, f"{name}[{i}] is too long: {len(t)} > {cfg.max_chars} characters")
        bad = SURROGATE.search(t)
        if bad:
            raise ApiError(400, f"{name}[{i}] is not valid Unicode: lone surrogate U+{ord(bad.group()):04X} at "
                                f"character {bad.start()}")


def parse_embedding_input(body: bytes, cfg) -> list[str]:
    """The texts of an OpenAI-style embeddings request {"input": str or [str], "model": ...}, checked
    against the same limits as predict requests (400, 422, 413)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(data, dict) or "input" not in data:
        raise ApiError(422, 'expected a JSON object {"input": string or [string, ...], "model": ...}')
    if data.get("encoding_format", "float") != "float":
        raise ApiError(422, 'only "encoding_format": "float" is supported')
    return check_texts([data["input"]] if isinstance(data["input"], str) else data["input"], cfg, "input")


async def read_body(request, limit: int) -> bytes:
    """The body, or 413 past `limit` bytes (after reading and dropping the rest, up to DRAIN_CAP)."""
    size = request.headers.get("content-length", "")
    declared = int(size) if size.isdigit() else None
    from starlette.requests import ClientDisconnect

    chunks, n = [], 0
    try:
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit or (declared is not None and declared > limit):
                if n > DRAIN_CAP:
                    break
                continue
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "the client closed the connection before sending the whole body") from None
    if n > limit or (declared is not None and declared > limit):
        raise ApiError(413, f"request body too large: {max(n, declared or 0)} > {limit} bytes")
    return b"".join(chunks)
