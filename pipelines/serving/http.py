"""HTTP guard of the online service: API keys, per-key rate limit, request size limit, 422 for bad input.

A plain ASGI middleware (no BentoML, no Starlette needed), added to the BentoML service with
`add_asgi_middleware`. Health and metrics routes stay open (probes and Prometheus carry no key).

- API keys: from the env var named by serve.api_key_env (comma-separated). None configured = no auth.
  A key is sent as `X-API-Key: <key>` or `Authorization: Bearer <key>`; a missing or wrong key -> 401.
  Keys are compared in constant time and never logged (the rate-limit table is keyed by a digest).
- Rate limit: a token bucket per key (per client address when auth is off) -> 429 with Retry-After.
- Size: Content-Length above serve.max_request_bytes -> 413 before the body is read; a body without a
  length (chunked) is read up to the limit and refused the same way.
- BentoML answers a request that fails validation with 400; this middleware turns that into 422 (the
  body, which names the field, is kept) on the API routes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# a refused request: (status, JSON body, extra headers)
_Refusal = tuple[int, dict[str, Any], dict[bytes, bytes] | None]

OPEN_PATHS: tuple[str, ...] = ("/livez", "/readyz", "/healthz", "/metrics", "/health/")
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
    """ASGI middleware: auth (401), rate limit (429), size limit (413), validation 400 -> 422."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_keys: Iterable[str] = (),
        api_key_env: str | None = None,
        rate_limit_per_s: float = 1000.0,
        rate_limit_burst: int = 2000,
        max_request_bytes: int = 1_048_576,
        api_paths: Iterable[str] = (),
        open_paths: Iterable[str] = OPEN_PATHS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        # keys from the environment are read when the app is built, never from files or logs
        keys = [*api_keys, *(api_keys_from_env(api_key_env) if api_key_env else [])]
        self.keys = [k.encode() for k in keys]
        self.rate = rate_limit_per_s
        self.burst = float(rate_limit_burst)
        self.max_bytes = max_request_bytes
        self.api_paths = tuple(api_paths)
        self.open_paths = tuple(open_paths)
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _is_open(self, path: str) -> bool:
        return any(path == p or (p.endswith("/") and path.startswith(p)) for p in self.open_paths)

    def _key(self, scope: Scope) -> str | None:
        """The presented key if it is valid, else None (constant-time compares against every key)."""
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
        return hashlib.sha256(presented).hexdigest()[:16] if ok and presented else None

    def _limited(self, who: str) -> float:
        now = self.clock()
        bucket = self._buckets.get(who)
        if bucket is None:
            bucket = self._buckets[who] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > _MAX_CLIENTS:
                self._buckets.popitem(last=False)
        return bucket.take(now)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_open(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        refusal = self._admit(scope)
        if refusal is None:
            refusal, receive = await self._limit_size(scope, receive)
        if refusal is not None:
            await _json(send, *refusal)
            return
        if scope.get("path", "") in self.api_paths:
            await self._api_call(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _admit(self, scope: Scope) -> _Refusal | None:
        """Auth (401) then the caller's rate limit (429); None = let the request through."""
        if self.keys:
            who = self._key(scope)
            if who is None:
                return 401, {"error": "missing or invalid API key"}, {b"www-authenticate": b"ApiKey"}
        else:
            client = scope.get("client")
            who = f"addr:{client[0]}" if client else "addr:?"
        wait = self._limited(who)
        if wait > 0:
            retry = str(max(1, math.ceil(wait))).encode()
            return 429, {"error": "rate limit exceeded"}, {b"retry-after": retry}
        return None

    async def _limit_size(self, scope: Scope, receive: Receive) -> tuple[_Refusal | None, Receive]:
        """Refuse a body over the limit (413) or a bad Content-Length (400); else the `receive` to use.

        Without a declared length (chunked), the body is read up to the limit, then replayed to the app.
        """
        try:
            length = _content_length(scope)
        except ValueError:
            return (400, {"error": "invalid Content-Length"}, None), receive
        too_large = (413, {"error": f"request body larger than {self.max_bytes} bytes"}, None)
        if length is not None and length > self.max_bytes:
            return too_large, receive
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            body = await _read_body(receive, self.max_bytes)
            if body is None:
                return too_large, receive
            return None, _replay(body, receive)
        return None, receive

    async def _api_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Malformed input -> 422: BentoML answers 400 for a body failing validation and 500 for one that
        is not JSON at all; the body seen is kept (references only) to tell a real 500 from bad JSON."""
        seen: list[bytes] = []
        swallow = False

        async def recording_receive() -> Message:
            msg = await receive()
            if msg["type"] == "http.request":
                seen.append(msg.get("body", b""))
            return msg

        async def send_422(message: Message) -> None:
            nonlocal swallow
            if swallow:
                return
            if message["type"] == "http.response.start":
                status = message.get("status")
                if status == 400:
                    message = {**message, "status": 422}
                elif status == 500 and not _is_json(b"".join(seen)):
                    swallow = True  # drop BentoML's generic 500 body, answer for it
                    await _json(
                        send, 422, {"error": "request body is not valid JSON", "detail": [{"loc": ["body"]}]}
                    )
                    return
            await send(message)

        await self.app(scope, recording_receive, send_422)


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


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


async def _json(
    send: Send, status: int, body: dict[str, Any], headers: dict[bytes, bytes] | None = None
) -> None:
    payload = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    hdrs += list((headers or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": payload})
