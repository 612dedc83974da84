"""HTTP guard of the online service: keys, rate limit, size and content type, request ids, access log.

A plain ASGI middleware (no web framework needed), added to the BentoML service with `add_asgi_middleware`
so it sees every route. Probes, metrics and (with serve.docs_public) the API documents stay open.

- API keys: from the env var named by serve.api_key_env (comma-separated); admin keys (deploy, rollback)
  from serve.admin_key_env, which are API keys too. None configured = no auth, and every caller is admin
  (a local service). A key is sent as `X-API-Key: <key>` or `Authorization: Bearer <key>`; a missing or
  wrong key -> 401. Keys are compared in constant time and never logged: a request is known by its key
  id, the first 16 hex digits of the key's sha256.
- Rate limit: a token bucket per key (per client address when auth is off) -> 429 with Retry-After.
- Size: Content-Length above serve.max_request_bytes -> 413 before the body is read; a body without a
  length (chunked) is read up to the limit and refused the same way.
- Content type: a POST whose Content-Type is not JSON -> 415 (every POST route takes JSON; the Open
  Inference Protocol's /v2/ routes also take none, as its standard client sends none).
- Uploads: paths given in `uploads` (the ingestion service's batch route) take a file body of any type,
  which their route checks, up to their own size limit instead of max_request_bytes.
- X-Request-ID: the client's (up to 128 characters of [A-Za-z0-9._:-]) or a generated one; echoed on the
  response and put in the ASGI scope's state for the routes (the prediction log carries it).
- Access log: one JSON line per request on the `sluice.access` logger (method, path, status, ms, key id,
  request id, client), never the key or the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from pipelines.serving.ids import new_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# a refused request: (status, JSON body, extra headers)
_Refusal = tuple[int, dict[str, Any], dict[bytes, bytes] | None]

OPEN_PATHS: tuple[str, ...] = ("/livez", "/readyz", "/healthz", "/metrics", "/health/", "/v2/health/")
DOC_PATHS: tuple[str, ...] = ("/", "/docs", "/docs.json", "/openapi.json", "/static_content/")
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_JSON_TYPE = re.compile(rb"^application/([a-z0-9.+\-]+\+)?json\s*(;.*)?$", re.IGNORECASE)
access_log = logging.getLogger("sluice.access")
_MAX_CLIENTS = 10_000


def api_keys_from_env(var: str) -> list[str]:
    """API keys from env var `var` (comma-separated; blanks ignored)."""
    return [k.strip() for k in os.environ.get(var, "").split(",") if k.strip()]


class TokenBucket:
    """`rate` tokens per second, at most `burst` banked. `take()` -> seconds to wait (0 = allowed)."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now

    def take(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class GuardMiddleware:
    """ASGI middleware: auth (401), rate limit (429), size (413), content type (415), request id,
    access log."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_keys: Iterable[str] = (),
        api_key_env: str | None = None,
        admin_keys: Iterable[str] = (),
        admin_key_env: str | None = None,
        rate_limit_per_s: float = 1000.0,
        rate_limit_burst: int = 2000,
        max_request_bytes: int = 1_048_576,
        open_paths: Iterable[str] = OPEN_PATHS,
        docs_public: bool = True,
        uploads: Mapping[str, int] | None = None,
        openapi: Callable[[], dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        # keys from the environment are read when the app is built, never from files or logs
        admin = [*admin_keys, *(api_keys_from_env(admin_key_env) if admin_key_env else [])]
        keys = [*api_keys, *(api_keys_from_env(api_key_env) if api_key_env else []), *admin]
        self.keys = [k.encode() for k in keys]
        self.admin_ids = {_key_id(k.encode()) for k in admin}
        self.rate = rate_limit_per_s
        self.burst = float(rate_limit_burst)
        self.max_bytes = max_request_bytes
        self.uploads = dict(uploads or {})  # path -> its body limit; the route checks the content type
        self.open_paths = tuple(open_paths) + (DOC_PATHS if docs_public else ())
        # the service's OpenAPI document, answered for BentoML's /docs.json (its Swagger UI at /)
        self.openapi = openapi
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _is_open(self, path: str) -> bool:
        return any(
            path == p or (p.endswith("/") and p != "/" and path.startswith(p)) for p in self.open_paths
        )

    def _key(self, scope: Scope) -> str | None:
        """The id of the presented key if valid, else None (constant-time compares against every key)."""
        presented = b""
        for name, value in scope.get("headers") or ():
            if name == b"x-api-key":
                presented = value.strip()
                break
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                presented = value[7:].strip()
        ok = False
        for k in self.keys:
            ok |= hmac.compare_digest(presented, k)
        return _key_id(presented) if ok and presented else None

    def _limited(self, who: str) -> float:
        now = self.clock()
        bucket = self._buckets.get(who)
        if bucket is None:
            bucket = self._buckets[who] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > _MAX_CLIENTS:
                self._buckets.popitem(last=False)
        return bucket.take(now)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid = _request_id(scope)
        state = scope.setdefault("state", {})
        state["sluice.request_id"] = rid
        status = [0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self._handle(scope, receive, send_with_id, state)
        finally:
            self._log(scope, status[0], t0, rid, state.get("sluice.key_id"))

    async def _handle(self, scope: Scope, receive: Receive, send: Send, state: dict[str, Any]) -> None:
        path = scope.get("path", "")
        if path == "/docs.json" and self.openapi is not None and self._is_open(path):
            await _json(send, 200, self.openapi())
            return
        if self._is_open(path):
            await self.app(scope, receive, send)
            return
        upload_limit = self.uploads.get(path)
        refusal = self._admit(scope, state)
        if refusal is None:
            refusal, receive = await self._limit_size(scope, receive, upload_limit or self.max_bytes)
        if refusal is None and upload_limit is None:
            refusal = _content_type(scope)
        if refusal is not None:
            status, body, headers = refusal
            body["request_id"] = state["sluice.request_id"]
            await _json(send, status, body, headers)
            return
        await self.app(scope, receive, send)

    def _admit(self, scope: Scope, state: dict[str, Any]) -> _Refusal | None:
        """Auth (401) then the caller's rate limit (429); None = let the request through."""
        if self.keys:
            who = self._key(scope)
            if who is None:
                return 401, {"error": "missing or invalid API key"}, {b"www-authenticate": b"ApiKey"}
            state["sluice.key_id"] = who
            state["sluice.admin"] = who in self.admin_ids
        else:
            client = scope.get("client")
            who = f"addr:{client[0]}" if client else "addr:?"
            state["sluice.admin"] = True  # no keys at all: a local, unauthenticated service
        wait = self._limited(who)
        if wait > 0:
            retry = str(max(1, math.ceil(wait))).encode()
            return 429, {"error": "rate limit exceeded"}, {b"retry-after": retry}
        return None

    async def _limit_size(
        self, scope: Scope, receive: Receive, limit: int
    ) -> tuple[_Refusal | None, Receive]:
        """Refuse a body over `limit` (413) or a bad Content-Length (400); else the `receive` to use.

        Without a declared length (chunked), the body is read up to the limit, then replayed to the app.
        """
        try:
            length = _content_length(scope)
        except ValueError:
            return (400, {"error": "invalid Content-Length"}, None), receive
        too_large = (413, {"error": f"request body larger than {limit} bytes"}, None)
        if length is not None and length > limit:
            return too_large, receive
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            body = await _read_body(receive, limit)
            if body is None:
                return too_large, receive
            return None, _replay(body, receive)
        return None, receive

    def _log(self, scope: Scope, status: int, t0: float, rid: str, key_id: str | None) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        client = scope.get("client")
        access_log.info(
            json.dumps(
                {
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "ms": round((time.perf_counter() - t0) * 1000.0, 2),
                    "key_id": key_id,
                    "request_id": rid,
                    "client": client[0] if client else None,
                },
                separators=(",", ":"),
            )
        )


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def _request_id(scope: Scope) -> str:
    """The client's X-Request-ID when well-formed, else a new one."""
    for name, value in scope.get("headers") or ():
        if name == b"x-request-id" and _REQUEST_ID.match(value):
            return value.decode()
    return new_id()


def _content_type(scope: Scope) -> _Refusal | None:
    """415 for a POST with a body that is not declared JSON (every POST route takes JSON; a POST without
    a body, like a cancel, needs no type; other methods are the router's to refuse with 405).

    The Open Inference Protocol's routes (/v2/) also take a body without a Content-Type: their body is
    JSON by the protocol, and its standard client (tritonclient) sends none."""
    if scope.get("method") != "POST" or _content_length(scope) == 0:
        return None
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            if _JSON_TYPE.match(value.strip()):
                return None
            shown = value.decode("latin-1")[:100]
            return 415, {"error": f"Content-Type {shown!r} is not supported: send application/json"}, None
    if scope.get("path", "").startswith("/v2/"):
        return None
    return 415, {"error": "Content-Type is missing: send application/json"}, None


def _content_length(scope: Scope) -> int | None:
    """The declared Content-Length (None when absent); ValueError when it is not a number."""
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            return int(value)
    return None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it exceeds `limit` bytes."""
    chunks, size = [], 0
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            break
        chunks.append(msg.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return None
        if not msg.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that answers `body` once, then defers to the original one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _json(
    send: Send, status: int, body: dict[str, Any], headers: dict[bytes, bytes] | None = None
) -> None:
    payload = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    hdrs += list((headers or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": payload})


def configure_service_logging() -> None:
    """A served process's loggers (access log, API, pipelines) to stderr, the server's log, at INFO,
    when nothing else handles them (BentoML configures only its own)."""
    for name in ("sluice.access", "sluice.api", "pipelines"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
