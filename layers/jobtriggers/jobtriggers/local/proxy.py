"""The functions' network path to the embedded DynamoDB: a loopback HTTP proxy.

The runtime's function processes reach DynamoDB (AWS_ENDPOINT_URL_DYNAMODB / _STREAMS) through
this proxy, which forwards each request to the store unchanged. It is where the local runtime can
see and disturb that path the way a network and a busy service would, without any code in the
functions knowing:

- `stats()`: requests by operation and error answers by code (the claims benchmark reads the
  conditional failures, the store-level conflicts of concurrent claims, from here);
- hooks (`hooked(hook)`): each request's operation and body are shown to the hooks in turn; a hook
  may answer in the store's place (`Answer`: a throttle, a 500, a cancelled transaction) or drop the
  connection without an answer, before the request reaches the store (`Drop(apply=False)`: a
  timeout) or after it was applied (`Drop(apply=True)`: a lost response). botocore sees a dropped
  connection as ConnectionClosedError, an HTTPClientError like a read timeout, and retries it the
  same way. tests/faults.py's FaultInjector is such a hook.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("local_runtime.proxy")

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection"}


@dataclass(frozen=True)
class Answer:
    """Answer the request in the store's place (it never reaches the store)."""

    status: int
    body: bytes
    content_type: str = "application/x-amz-json-1.0"


@dataclass(frozen=True)
class Drop:
    """Close the connection without an answer; `apply`: forward the request first (it is applied)."""

    apply: bool = False


Outcome = Answer | Drop
# A hook sees (operation, request body) and returns None (no opinion) or an Outcome.
Hook = Callable[[str, bytes], Outcome | None]


def error_body(code: str, message: str, **extra: Any) -> bytes:
    """A DynamoDB JSON error answer, as botocore parses it."""
    return json.dumps(
        {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message, **extra}
    ).encode()


def operation_of(target: str | None) -> str:
    """`DynamoDB_20120810.PutItem` -> `PutItem`."""
    return (target or "").rpartition(".")[2] or "unknown"


class ProxyStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.dropped = 0

    def count(self, operation: str, error_code: str | None) -> None:
        with self._lock:
            self.requests[operation] += 1
            if error_code:
                self.errors[error_code] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "errors": dict(self.errors),
                "dropped": self.dropped,
                "total": sum(self.requests.values()),
            }


class DynamoDBProxy:
    """`start()` binds a free loopback port; `endpoint` is the URL the functions are given."""

    def __init__(self, upstream: str) -> None:
        split = urlsplit(upstream)
        if not split.hostname or not split.port:
            raise ValueError(f"the store endpoint must be http://host:port, not {upstream!r}")
        self.upstream_host = split.hostname
        self.upstream_port = split.port
        self._hooks: list[tuple[str, Hook]] = []
        self._hooks_lock = threading.Lock()
        self._stats = ProxyStats()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if not self._server:
            raise RuntimeError("the proxy is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, host: str = "127.0.0.1") -> str:
        handler = type("BoundProxyHandler", (_ProxyHandler,), {"proxy": self})
        self._server = _Server((host, 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="dynamodb-proxy", daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread:
            self._thread.join(5)
            self._thread = None

    def stats(self) -> dict[str, Any]:
        return self._stats.snapshot()

    @contextmanager
    def hooked(self, hook: Hook) -> Iterator[None]:
        """Show every request to `hook` while the block runs (hooks are asked in the order added)."""
        key = uuid.uuid4().hex
        with self._hooks_lock:
            self._hooks.append((key, hook))
        try:
            yield
        finally:
            with self._hooks_lock:
                self._hooks = [(k, h) for k, h in self._hooks if k != key]

    def decide(self, operation: str, body: bytes) -> Outcome | None:
        with self._hooks_lock:
            hooks = [h for _, h in self._hooks]
        for hook in hooks:
            outcome = hook(operation, body)
            if outcome is not None:
                return outcome
        return None

    def count(self, operation: str, status: int, body: bytes) -> None:
        code = None
        if status >= 400:
            try:
                code = str(json.loads(body).get("__type", "")).rpartition("#")[2] or f"HTTP{status}"
            except ValueError:
                code = f"HTTP{status}"
        self._stats.count(operation, code)

    def note_drop(self) -> None:
        with self._stats._lock:
            self._stats.dropped += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _ProxyHandler(BaseHTTPRequestHandler):
    proxy: DynamoDBProxy
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    _local = threading.local()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _upstream(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or (conn.host, conn.port) != (self.proxy.upstream_host, self.proxy.upstream_port):
            conn = http.client.HTTPConnection(self.proxy.upstream_host, self.proxy.upstream_port, timeout=60)
            self._local.conn = conn
        return conn

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):
            conn = self._upstream()
            reused = conn.sock is not None
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                return response.status, response.getheaders(), data
            except (http.client.HTTPException, OSError) as exc:
                conn.close()
                self._local.conn = None
                # Only a kept-alive connection the store had closed is tried again: the request
                # never reached it. Anything else may have been applied, and is not repeated.
                closed_idle = reused and isinstance(
                    exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError
                )
                if attempt == 2 or not closed_idle:
                    raise
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        self.proxy.note_drop()
        self.close_connection = True
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        operation = operation_of(self.headers.get("X-Amz-Target"))
        try:
            outcome = self.proxy.decide(operation, body)
        except Exception:
            log.exception("a proxy hook failed; forwarding the request as it is")
            outcome = None
        if isinstance(outcome, Answer):
            self.proxy.count(operation, outcome.status, outcome.body)
            self._send(outcome.status, [("Content-Type", outcome.content_type)], outcome.body)
            return
        if isinstance(outcome, Drop) and not outcome.apply:
            self._drop()
            return
        try:
            status, headers, data = self._forward(body)
        except (http.client.HTTPException, OSError) as exc:
            log.warning("the store did not answer %s: %s", operation, exc)
            self._drop()
            return
        self.proxy.count(operation, status, data)
        if isinstance(outcome, Drop):
            self._drop()  # applied; the answer is lost
            return
        self._send(status, headers, data)

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status)
        for k, v in headers:
            if k.lower() not in _HOP_BY_HOP and k.lower() not in ("server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET = _handle
