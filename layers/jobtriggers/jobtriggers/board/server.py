"""The board's web server: Starlette routes, Jinja2 templates, htmx from the package's own static files.

Why Starlette + uvicorn: routing, form parsing, static files and Jinja2 glue in a small, well-kept
library; its plain `def` endpoints run in a thread pool, which suits the blocking boto3 calls behind
the port. The standard library's http.server would have meant writing all of that by hand.

It serves 127.0.0.1 only and has no login, so it defends against the browser's other tabs:
- the Host header must be the loopback address (a DNS-rebinding page cannot read the board);
- every action carries a random per-process token that only the board's own pages hold (a foreign
  page cannot post a cancel to 127.0.0.1), and a cross-origin `Origin` is refused;
- a strict Content-Security-Policy: scripts and styles from the board itself only.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobtriggers.board.port import (
    CANCELLABLE,
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    RERUNNABLE,
    STATUSES,
    BoardActions,
    BoardSource,
    Filters,
    StatusCounts,
    WorkflowSummary,
)
from jobtriggers.errors import ConflictError, JobTriggersError, NotFoundError

log = logging.getLogger("jobtriggers.board")

HERE = Path(__file__).parent
HTMX_FILE = "htmx-2.0.11.min.js"
FILTER_NAMES = ("workflow", "status", "site", "object_id")
LOOPBACK_HOSTS = ["127.0.0.1", "localhost"]

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class NotLoopbackError(ValueError):
    """The board has no login: it must not be reachable from other machines."""


class _SecurityHeaders:
    """Adds the same headers to every response, static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ----------------------------------------------------------------------------- formatting


def format_duration(seconds: float | None) -> str:
    """12 s, 4 m 10 s, 3 h 5 m, 2 d 4 h: two units at most, for a person skimming."""
    if seconds is None:
        return "—"
    s = int(abs(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} m {s} s" if s and m < 10 else f"{m} m"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h} h {m} m" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def format_clock(dt: datetime) -> str:
    """The time of day on the operator's own clock (the board runs on the operator's machine)."""
    return _aware(dt).astimezone().strftime("%H:%M:%S")


def format_when(dt: datetime) -> str:
    """Local date and time, minutes precision."""
    return _aware(dt).astimezone().strftime("%Y-%m-%d %H:%M")


def iso(dt: datetime) -> str:
    return _aware(dt).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def ago(dt: datetime, now: datetime) -> str:
    delta = (_aware(now) - _aware(dt)).total_seconds()
    return f"{format_duration(delta)} ago" if delta >= 0 else f"in {format_duration(delta)}"


def lease_is_soon(seconds_left: float, lease_seconds: int) -> bool:
    """Close to expiry: under a tenth of the lease, and never less than a minute's warning."""
    return seconds_left < max(60.0, 0.1 * lease_seconds)


@dataclass(frozen=True)
class BarSegment:
    status: str
    count: int
    x: str
    width: str


def bar_segments(
    counts: StatusCounts, *, length: float = 1000.0, min_width: float = 8.0, gap: float = 3.0
) -> list[BarSegment]:
    """A workflow's stacked bar: a segment per non-zero status, in STATUSES order, proportional to
    its count; one failed job among thousands still gets `min_width`, so that it can be seen."""
    present = [(s, counts.of(s)) for s in STATUSES if counts.of(s) > 0]
    if not present:
        return []
    usable = length - gap * (len(present) - 1)
    raw = [max(n / counts.total * usable, min_width) for _, n in present]
    scale = usable / sum(raw)
    segments, x = [], 0.0
    for (status, n), w in zip(present, raw, strict=True):
        width = w * scale
        segments.append(BarSegment(status, n, f"{x:.1f}", f"{width:.1f}"))
        x += width + gap
    return segments


def totals_of(workflows: list[WorkflowSummary]) -> StatusCounts:
    return StatusCounts(**{s: sum(w.counts.of(s) for w in workflows) for s in STATUSES})


def _template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        duration=format_duration,
        clock=format_clock,
        when=format_when,
        iso=iso,
        tojson_pretty=lambda v: json.dumps(v, indent=2, default=str, sort_keys=True),
        segment=lambda v: quote(str(v), safe=""),
    )
    env.globals.update(
        STATUSES=STATUSES,
        MAX_LIST_LIMIT=MAX_LIST_LIMIT,
        RERUNNABLE=RERUNNABLE,
        CANCELLABLE=CANCELLABLE,
        ago=ago,
        lease_is_soon=lease_is_soon,
        bar_segments=bar_segments,
        totals_of=totals_of,
        htmx_file=HTMX_FILE,
    )
    return env


# ----------------------------------------------------------------------------- filters


class BadFilters(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_filters(params: dict[str, str]) -> Filters:
    """Query parameters -> Filters; a person-readable problem for each bad value."""
    values: dict[str, Any] = {name: params[name].strip() for name in FILTER_NAMES if params.get(name)}
    if params.get("limit"):
        values["limit"] = params["limit"]
    try:
        return Filters(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            if field == "status":
                problems.append(f"status must be one of {', '.join(STATUSES)}, not {values['status']!r}")
            else:
                problems.append(f"{field}: {err['msg']}")
        raise BadFilters(problems) from exc


def filters_query(filters: Filters, **changes: str | int | None) -> str:
    """The query string of a view, with some filters changed (None removes one). A list length
    other than the default is kept too, so a live refresh shows as many rows as the page asked for."""
    values: dict[str, Any] = {n: getattr(filters, n) for n in FILTER_NAMES}
    if filters.limit != DEFAULT_LIST_LIMIT:
        values["limit"] = filters.limit
    values.update(changes)
    pairs = [(n, v) for n, v in values.items() if v and not (n == "limit" and v == DEFAULT_LIST_LIMIT)]
    return ("?" + urlencode(pairs)) if pairs else ""


# ----------------------------------------------------------------------------- the app


@dataclass(frozen=True)
class BoardConfig:
    source_label: str
    refresh_seconds: float = 5.0


def create_app(
    source: BoardSource,
    actions: BoardActions,
    config: BoardConfig,
    *,
    action_token: str | None = None,
) -> ASGIApp:
    """The board as an ASGI app. `action_token` guards the actions; a random one by default."""
    token = action_token or secrets.token_urlsafe(32)
    templates = Jinja2Templates(env=_template_environment())

    def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        base = {
            "config": config,
            "action_token": token,
            "filters_query": filters_query,
            "htmx": request.headers.get("hx-request") == "true",
        }
        return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)

    def bad_filters(request: Request, exc: BadFilters) -> Response:
        return render(
            request, "problem.html", {"title": "Those filters do not work", "problems": exc.problems}, 400
        )

    def cleaned_redirect(request: Request) -> Response | None:
        """A submitted filter form sends empty fields; the shareable URL has only the set ones."""
        params = request.query_params
        if any(not params.get(k) for k in params):
            kept = [(k, v) for k, v in params.multi_items() if v]
            return RedirectResponse(request.url.path + ("?" + urlencode(kept) if kept else ""), 303)
        return None

    def board_page(request: Request) -> Response:
        redirect = cleaned_redirect(request)
        if redirect:
            return redirect
        try:
            filters = parse_filters(dict(request.query_params))
        except BadFilters as exc:
            return bad_filters(request, exc)
        overview = source.overview(filters)
        return render(request, "board.html", {"overview": overview, "filters": filters})

    def overview_fragment(request: Request) -> Response:
        try:
            filters = parse_filters(dict(request.query_params))
        except BadFilters as exc:
            return bad_filters(request, exc)
        return render(request, "_overview.html", {"overview": source.overview(filters), "filters": filters})

    def job_page(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        page = source.job(job_id)
        if page is None:
            return render(
                request, "problem.html", {"title": "No such job", "problems": [_no_job(job_id)]}, 404
            )
        return render(request, "job.html", {"page": page})

    def job_fragment(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        page = source.job(job_id)
        if page is None:
            return render(request, "_notice.html", {"ok": False, "message": _no_job(job_id)}, 404)
        return render(request, "_job.html", {"page": page})

    def make_action(name: str, act: Callable[[str], str]) -> Callable[[Request], Any]:
        async def action(request: Request) -> Response:
            job_id = request.path_params["job_id"]
            sent = await _form_token(request)
            if sent is None or not hmac.compare_digest(sent, token):
                return render(request, "_notice.html", {"ok": False, "message": _STALE_PAGE}, 403)
            origin = request.headers.get("origin")
            if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
                return render(request, "_notice.html", {"ok": False, "message": _STALE_PAGE}, 403)
            try:
                message = await run_in_threadpool(act, job_id)
            except (ConflictError, NotFoundError) as exc:
                log.info("board %s refused: %s", name, exc.detail)
                status = 409 if isinstance(exc, ConflictError) else 404
                return render(request, "_notice.html", {"ok": False, "message": str(exc.detail)}, status)
            log.info("board %s: %s", name, message)
            response = render(request, "_notice.html", {"ok": True, "message": message})
            response.headers["HX-Trigger"] = "board-changed"
            return response

        return action

    def store_error(request: Request, exc: Exception) -> Response:
        """The tables failed (throttled, unreachable), or refused: say so, with the service's own
        status; after a 5xx a live region keeps what it showed (see base.html's htmx-config)."""
        assert isinstance(exc, JobTriggersError)
        log.warning("board: %s %s failed: %s", request.method, request.url.path, exc.detail)
        status = exc.status_code
        if request.headers.get("hx-request") == "true":
            return render(request, "_notice.html", {"ok": False, "message": str(exc.detail)}, status)
        return render(
            request,
            "problem.html",
            {"title": "The board could not read the jobs", "problems": [str(exc.detail)]},
            status,
        )

    routes = [
        Route("/", board_page, methods=["GET"]),
        Route("/fragments/overview", overview_fragment, methods=["GET"]),
        Route("/jobs/{job_id}", job_page, methods=["GET"]),
        Route("/fragments/jobs/{job_id}", job_fragment, methods=["GET"]),
        Route("/jobs/{job_id}/rerun", make_action("rerun", actions.rerun), methods=["POST"]),
        Route("/jobs/{job_id}/cancel", make_action("cancel", actions.cancel), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS)],
        exception_handlers={JobTriggersError: store_error},
    )
    return _SecurityHeaders(app)


_STALE_PAGE = "This page is out of date or not the board's own: reload it and try again."


def _no_job(job_id: str) -> str:
    return f"There is no job {job_id!r}. It may have been deleted, or the link is wrong."


async def _form_token(request: Request) -> str | None:
    """The action's token from its urlencoded form (the only field an action has; Starlette's own form
    parser would need python-multipart for nothing more)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return None
    body = await request.body()
    if len(body) > 4096:
        return None
    values = parse_qs(body.decode("latin-1"), max_num_fields=8).get("token")
    return values[0] if values else None


# ----------------------------------------------------------------------------- serving


def bind_loopback(host: str, port: int) -> socket.socket:
    """A listening socket on a loopback address only; port 0 picks a free one."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise NotLoopbackError(
            f"the board binds to an IP address of this machine's loopback, not {host!r}"
        ) from exc
    if not address.is_loopback:
        raise NotLoopbackError(
            f"the board has no login, so it serves on loopback only (127.0.0.1), not on {host}"
        )
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    return sock


class BoardServer:
    """uvicorn on a socket this class bound itself (loopback only), in the foreground or a thread."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.socket = bind_loopback(host, port)
        bound_host, bound_port = self.socket.getsockname()[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        self.port: int = bound_port
        self._server = uvicorn.Server(
            uvicorn.Config(
                app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
            )
        )
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self._server.run(sockets=[self.socket])

    def start(self) -> BoardServer:
        self._thread = threading.Thread(target=self.serve_forever, name="board-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the board's server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread:
            self._thread.join(timeout=10)
        self.socket.close()

    def __enter__(self) -> BoardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
