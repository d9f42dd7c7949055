"""The local API Gateway: HTTP requests -> REST API proxy events (payload 1.0) for the handlers that
template.yaml routes them to, with its TOKEN authorizer in front.

Behaviour copied from API Gateway REST APIs, so that what works here works when deployed:
- routes match segment by segment on the raw, still percent-encoded path (`%2F` stays inside one
  segment); a literal segment beats a `{param}` segment; `path` stays encoded, `pathParameters`
  and query parameters are decoded;
- an unknown route or method is MISSING_AUTHENTICATION_TOKEN, a missing Authorization header or an
  authorizer raising `Exception("Unauthorized")` is UNAUTHORIZED, a Deny policy is ACCESS_DENIED,
  any other authorizer error is AUTHORIZER_FAILURE (500), with the template's GatewayResponses;
- the authorizer's `context` (values as strings) and `principalId` go to requestContext.authorizer;
- a handler exception or a malformed response is a 502 `{"message": "Internal server error"}`;
- bodies over 10 MB are refused with 413.
Local extras: `GET /local/dlq`, `GET /local/stats` and `GET /local/events[?job_id=]`.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import logging
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

from jobtriggers.local.invoke import FunctionError
from jobtriggers.local.store import PortInUseError
from jobtriggers.local.template import LOCAL_ACCOUNT, ApiRoute, parameter_values, resources_of_type

log = logging.getLogger("local_runtime.gateway")

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
LOCAL_API_ID = "local"

Invoke = Callable[[str, dict[str, Any]], Any]

# API Gateway's defaults, for responses the template does not override.
DEFAULT_GATEWAY_RESPONSES: dict[str, tuple[int, str]] = {
    "UNAUTHORIZED": (401, '{"message": "Unauthorized"}'),
    "ACCESS_DENIED": (403, '{"message": "User is not authorized to access this resource"}'),
    "MISSING_AUTHENTICATION_TOKEN": (403, '{"message": "Missing Authentication Token"}'),
    "AUTHORIZER_FAILURE": (500, '{"message": null}'),
    "AUTHORIZER_CONFIGURATION_ERROR": (500, '{"message": null}'),
    "REQUEST_TOO_LARGE": (413, '{"message": "Request Too Long"}'),
    "INTEGRATION_FAILURE": (502, '{"message": "Internal server error"}'),
}


@dataclass
class ApiSettings:
    """What the gateway needs from the template's AWS::Serverless::Api besides routes."""

    stage: str = "v1"
    identity_header: str = "Authorization"
    responses: dict[str, tuple[int, str]] = field(default_factory=lambda: dict(DEFAULT_GATEWAY_RESPONSES))


def api_settings(template: Mapping[str, Any], parameters: Mapping[str, str] | None = None) -> ApiSettings:
    """The API's stage, identity header and gateway responses (parameters: their values, else the
    template's defaults)."""
    settings = ApiSettings()
    params = dict(parameters) if parameters is not None else parameter_values(dict(template))
    for res in resources_of_type(dict(template), "AWS::Serverless::Api").values():
        props = res.get("Properties", {})
        stage = props.get("StageName")
        if isinstance(stage, dict) and "Ref" in stage:
            stage = params.get(stage["Ref"])
        if stage:
            settings.stage = str(stage)
        auth = props.get("Auth", {})
        default = auth.get("DefaultAuthorizer")
        if default:
            identity = auth.get("Authorizers", {}).get(default, {}).get("Identity", {})
            settings.identity_header = identity.get("Header", settings.identity_header)
        for kind, spec in props.get("GatewayResponses", {}).items():
            status = int(spec.get("StatusCode", settings.responses.get(kind, (500, ""))[0]))
            body = spec.get("ResponseTemplates", {}).get("application/json")
            settings.responses[kind] = (status, body or settings.responses.get(kind, (status, "{}"))[1])
    return settings


# --------------------------------------------------------------------------- routing


@dataclass
class RouteMatch:
    route: ApiRoute | None
    path_parameters: dict[str, str]
    resource: str | None
    allowed: list[str]


def _segments(path: str) -> list[str]:
    return path[1:].split("/") if path.startswith("/") else path.split("/")


class RouteTable:
    """API Gateway's resource tree, flattened: the most specific path template wins, then the method."""

    def __init__(self, routes: list[ApiRoute]) -> None:
        self.by_path: dict[str, dict[str, ApiRoute]] = {}
        for r in routes:
            self.by_path.setdefault(r.path, {})[r.method.upper()] = r

    @staticmethod
    def _match(template: str, raw_segments: list[str]) -> tuple[tuple[int, ...], dict[str, str]] | None:
        tsegs = _segments(template)
        rank: list[int] = []
        params: dict[str, str] = {}
        for i, t in enumerate(tsegs):
            if t.startswith("{") and t.endswith("+}"):
                rest = raw_segments[i:]
                if not rest or rest == [""]:
                    return None
                params[t[1:-2]] = unquote("/".join(rest))
                return (*rank, 2), params
            if i >= len(raw_segments):
                return None
            seg = raw_segments[i]
            if t.startswith("{") and t.endswith("}"):
                if not seg:
                    return None
                params[t[1:-1]] = unquote(seg)
                rank.append(1)
            elif seg == t or unquote(seg) == t:
                rank.append(0)
            else:
                return None
        if len(tsegs) != len(raw_segments):
            return None
        return tuple(rank), params

    def match(self, method: str, raw_path: str) -> RouteMatch:
        raw_segments = _segments(raw_path)
        best: tuple[tuple[int, ...], str, dict[str, str]] | None = None
        for template in self.by_path:
            m = self._match(template, raw_segments)
            if m and (best is None or m[0] < best[0]):
                best = (m[0], template, m[1])
        if best is None:
            return RouteMatch(None, {}, None, [])
        _, template, params = best
        methods = self.by_path[template]
        route = methods.get(method.upper()) or methods.get("ANY")
        return RouteMatch(route, params, template, sorted(methods))


# --------------------------------------------------------------------------- the gateway


@dataclass
class GatewayResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _json_response(status: int, data: Any, extra: list[tuple[str, str]] | None = None) -> GatewayResponse:
    body = json.dumps(data, default=str).encode()
    return GatewayResponse(status, [("Content-Type", "application/json"), *(extra or [])], body)


def _policy_allows(policy: Mapping[str, Any], method_arn: str) -> bool:
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    allowed = False
    for st in statements:
        actions = st.get("Action", [])
        resources = st.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if not any(a in ("execute-api:Invoke", "execute-api:*", "*") for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(method_arn, r) for r in resources):
            continue
        if str(st.get("Effect", "")).lower() == "deny":
            return False
        if str(st.get("Effect", "")).lower() == "allow":
            allowed = True
    return allowed


def _failure(exc: Exception) -> str:
    """A function's failure for the gateway's log: Lambda's error type and message (the traceback
    is in the function's own log), or this process's traceback for anything else."""
    if isinstance(exc, FunctionError):
        return f"{exc.error_type}: {exc.message}"
    return "\n" + traceback.format_exc()


def _context_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        raise ValueError("authorizer context values must be strings, numbers or booleans")
    return str(value)


class Gateway:
    def __init__(
        self,
        routes: list[ApiRoute],
        invoke: Invoke,
        *,
        authorizer: str | None = None,
        settings: ApiSettings | None = None,
        local_routes: Mapping[str, Callable[[], Any]] | None = None,
        local_query_routes: Mapping[str, Callable[[dict[str, list[str]]], Any]] | None = None,
        region: str = "us-east-1",
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.router = RouteTable(routes)
        self.invoke = invoke
        self.authorizer = authorizer
        self.settings = settings or ApiSettings()
        self.local_routes = dict(local_routes or {})
        self.local_query_routes = dict(local_query_routes or {})
        self.region = region
        self.max_body_bytes = max_body_bytes
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests_served = 0

    # ------------------------------------------------------------------ HTTP server

    def start(self, host: str = "127.0.0.1", port: int = 3000) -> str:
        handler = type("BoundHandler", (_RequestHandler,), {"gateway": self})
        try:
            self._server = _Server((host, port), handler)
        except OSError as exc:
            raise PortInUseError(
                f"{host}:{port} is already in use; stop whatever holds it or pick another port"
            ) from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="gateway", daemon=True)
        self._thread.start()
        return self.base_url

    @property
    def base_url(self) -> str:
        if not self._server:
            raise RuntimeError("the gateway is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread:
            self._thread.join(5)
            self._thread = None

    # ------------------------------------------------------------------ one request

    def gateway_response(self, kind: str, detail: str | None = None, **extra: Any) -> GatewayResponse:
        status, body = self.settings.responses.get(kind, DEFAULT_GATEWAY_RESPONSES["INTEGRATION_FAILURE"])
        if detail is not None:
            body = json.dumps({"detail": detail})
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", kind)]
        headers += [(k, str(v)) for k, v in extra.items()]
        return GatewayResponse(status, headers, body.encode())

    def handle(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str = "127.0.0.1",
    ) -> GatewayResponse:
        """A request in, a response out; the HTTP layer only moves bytes."""
        self.requests_served += 1
        split = urlsplit(target)
        raw_path = split.path or "/"
        if method == "GET" and raw_path in self.local_routes:
            return _json_response(200, self.local_routes[raw_path]())
        if method == "GET" and raw_path in self.local_query_routes:
            try:
                return _json_response(200, self.local_query_routes[raw_path](parse_qs(split.query)))
            except ValueError as exc:
                return _json_response(400, {"detail": str(exc)})
        if len(body) > self.max_body_bytes:
            return self.gateway_response(
                "REQUEST_TOO_LARGE", f"request body is over {self.max_body_bytes // (1024 * 1024)} MB"
            )
        match = self.router.match(method, raw_path)
        if match.route is None:
            if match.resource is None:
                return self.gateway_response("MISSING_AUTHENTICATION_TOKEN", f"no such route: {raw_path}")
            return self.gateway_response(
                "MISSING_AUTHENTICATION_TOKEN",
                f"no such route: {method} {raw_path} (this path takes {', '.join(match.allowed)})",
                Allow=", ".join(match.allowed),
            )
        request_id = str(uuid.uuid4())
        route = match.route
        event = self.proxy_event(method, split.query, raw_path, match, headers, body, source_ip, request_id)
        if route.authorized and self.authorizer:
            denied = self._authorize(event, headers, method, raw_path)
            if isinstance(denied, GatewayResponse):
                return denied
            event["requestContext"]["authorizer"] = denied
        return self._integrate(route, event, request_id)

    def proxy_event(
        self,
        method: str,
        query: str,
        raw_path: str,
        match: RouteMatch,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
        request_id: str,
    ) -> dict[str, Any]:
        single: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for k, v in headers:
            single[k] = v
            multi.setdefault(k, []).append(v)
        q_single: dict[str, str] = {}
        q_multi: dict[str, list[str]] = {}
        for k, v in parse_qsl(query, keep_blank_values=True):
            q_single[k] = v
            q_multi.setdefault(k, []).append(v)
        text: str | None = None
        is_b64 = False
        if body:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text, is_b64 = base64.b64encode(body).decode(), True
        lower = {k.lower(): v for k, v in single.items()}
        now = time.time()
        return {
            "resource": match.resource,
            "path": raw_path,
            "httpMethod": method,
            "headers": single or None,
            "multiValueHeaders": multi or None,
            "queryStringParameters": q_single or None,
            "multiValueQueryStringParameters": q_multi or None,
            "pathParameters": match.path_parameters or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": "local",
                "resourcePath": match.resource,
                "httpMethod": method,
                "path": f"/{self.settings.stage}{raw_path}",
                "stage": self.settings.stage,
                "requestId": request_id,
                "extendedRequestId": request_id,
                "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "requestTimeEpoch": int(now * 1000),
                "protocol": "HTTP/1.1",
                "accountId": LOCAL_ACCOUNT,
                "apiId": LOCAL_API_ID,
                "domainName": lower.get("host", "127.0.0.1"),
                "identity": {"sourceIp": source_ip, "userAgent": lower.get("user-agent")},
            },
            "body": text,
            "isBase64Encoded": is_b64,
        }

    def method_arn(self, method: str, raw_path: str) -> str:
        return (
            f"arn:aws:execute-api:{self.region}:{LOCAL_ACCOUNT}:{LOCAL_API_ID}/"
            f"{self.settings.stage}/{method}{raw_path}"
        )

    def _authorize(
        self, event: dict[str, Any], headers: list[tuple[str, str]], method: str, raw_path: str
    ) -> dict[str, Any] | GatewayResponse:
        """Run the TOKEN authorizer; its requestContext.authorizer, or the gateway's refusal."""
        wanted = self.settings.identity_header.lower()
        token = next((v for k, v in reversed(headers) if k.lower() == wanted), "")
        if not token.strip():
            return self.gateway_response("UNAUTHORIZED")
        assert self.authorizer is not None
        auth_event = {
            "type": "TOKEN",
            "authorizationToken": token,
            "methodArn": self.method_arn(method, raw_path),
        }
        try:
            result = self.invoke(self.authorizer, auth_event)
        except Exception as exc:
            if str(exc) == "Unauthorized":
                return self.gateway_response("UNAUTHORIZED")
            # On AWS, only Exception("Unauthorized") means 401; anything else is a failed authorizer.
            log.error("authorizer %s failed: %s", self.authorizer, _failure(exc))
            return self.gateway_response("AUTHORIZER_FAILURE")
        if not isinstance(result, dict) or "policyDocument" not in result or "principalId" not in result:
            log.error("authorizer %s returned no principalId/policyDocument", self.authorizer)
            return self.gateway_response("AUTHORIZER_CONFIGURATION_ERROR")
        if not _policy_allows(result["policyDocument"], auth_event["methodArn"]):
            return self.gateway_response("ACCESS_DENIED")
        try:
            context = {k: _context_value(v) for k, v in (result.get("context") or {}).items()}
        except ValueError as exc:
            log.error("authorizer %s: %s", self.authorizer, exc)
            return self.gateway_response("AUTHORIZER_CONFIGURATION_ERROR")
        return {**context, "principalId": str(result["principalId"])}

    def _integrate(self, route: ApiRoute, event: dict[str, Any], request_id: str) -> GatewayResponse:
        # What API Gateway answers when the Lambda fails, whatever the template says.
        failure = GatewayResponse(
            502, [("Content-Type", "application/json")], b'{"message": "Internal server error"}'
        )
        try:
            result = self.invoke(route.function, event)
        except Exception as exc:
            log.error(
                "%s failed on %s %s (request %s): %s",
                route.function,
                event["httpMethod"],
                event["path"],
                request_id,
                _failure(exc),
            )
            return failure
        if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
            log.error("%s returned a malformed proxy response: %r", route.function, type(result).__name__)
            return failure
        headers: list[tuple[str, str]] = []
        for k, v in (result.get("headers") or {}).items():
            headers.append((k, str(v)))
        for k, values in (result.get("multiValueHeaders") or {}).items():
            if (result.get("headers") or {}).get(k) is not None:
                continue
            headers += [(k, str(v)) for v in values]
        raw = result.get("body") or ""
        try:
            body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode("utf-8")
        except ValueError:
            log.error("%s returned isBase64Encoded with a body that is not base64", route.function)
            return failure
        headers.append(("x-amzn-RequestId", request_id))
        return GatewayResponse(int(result["statusCode"]), headers, body)


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up before its answer was written (a worker stopped while it waited)
        # is the client's doing, not a fault here: a DEBUG line, not a traceback on the terminal.
        if isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            log.debug("client %s went away before its answer was written", client_address)
            return
        super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    gateway: Gateway
    protocol_version = "HTTP/1.1"
    server_version = "jobtriggers-local"
    # Headers and body go out in separate writes; with Nagle's algorithm on, the client's delayed
    # ACK adds 40 ms to every response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the request log is DEBUG
        log.debug("%s " + format, self.address_string(), *args)

    def _read_body(self) -> bytes | None:
        """The body, or None when it is over the limit (then the connection is closed)."""
        limit = self.gateway.max_body_bytes
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                total += size
                if total > limit:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(_json_response(400, {"detail": "malformed request body framing"}), close=True)
            return
        if body is None:
            self._send(
                self.gateway.gateway_response(
                    "REQUEST_TOO_LARGE",
                    f"request body is over {self.gateway.max_body_bytes // (1024 * 1024)} MB",
                ),
                close=True,
            )
            return
        try:
            response = self.gateway.handle(
                self.command, self.path, list(self.headers.items()), body, self.client_address[0]
            )
        except Exception:
            log.error("gateway failure:\n%s", traceback.format_exc())
            response = _json_response(500, {"message": "Internal server error"})
        self._send(response)

    def _send(self, response: GatewayResponse, close: bool = False) -> None:
        self.send_response(response.status)
        for k, v in response.headers:
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle
