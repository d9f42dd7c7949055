"""The board's server over HTTP, without a browser: loopback only, the guards on its actions, bad
filters, what it serves (and from where), and the port's in-memory reference semantics."""

from __future__ import annotations

import ast
import hashlib
import html
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from jobtriggers.board import cli as board_cli
from jobtriggers.board.port import BoardActions, BoardSource, Filters, Overview, StatusCounts
from jobtriggers.board.server import (
    HERE,
    HTMX_FILE,
    BoardConfig,
    BoardServer,
    NotLoopbackError,
    bar_segments,
    bind_loopback,
    create_app,
    format_duration,
    lease_is_soon,
)
from jobtriggers.cli import app as cli_app
from jobtriggers.errors import RetryableStoreError
from tests.board.dataset import nmdc_board
from tests.board.fake_board import InMemoryBoard

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789"
# htmx.org 2.0.11 from the npm registry: dist/htmx.min.js (npm view htmx.org@2.0.11 dist.shasum =
# a85363c4c5af94cd634df04c4b83d06dd0e91aa7 for the tarball). Changing the file means changing this.
HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"


@pytest.fixture
def board() -> InMemoryBoard:
    return nmdc_board(datetime.now(UTC))


@pytest.fixture
def client(board: InMemoryBoard) -> Iterator[httpx.Client]:
    """The board's own server on a free loopback port, over HTTP."""
    app = create_app(board, board, BoardConfig(source_label="test"), action_token=TOKEN)
    with BoardServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def _text(response: httpx.Response) -> str:
    return html.unescape(response.text)


def _failed_id(board: InMemoryBoard) -> str:
    return next(j.id for j in board.jobs.values() if j.status == "failed")


# ----------------------------------------------------------------------------- loopback only


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.org", "localhost"])
def test_it_refuses_to_listen_anywhere_but_loopback(host: str) -> None:
    with pytest.raises(NotLoopbackError, match="loopback"):
        bind_loopback(host, 0)


def test_it_listens_on_127_0_0_1(board: InMemoryBoard) -> None:
    app = create_app(board, board, BoardConfig(source_label="test"))
    with BoardServer(app) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.socket.getsockname()[0] == "127.0.0.1"


def test_a_request_for_another_host_name_is_refused(client: httpx.Client) -> None:
    """A DNS-rebinding page (evil.example resolving to 127.0.0.1) cannot read the board."""
    assert client.get("/", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/", headers={"host": "localhost"}).status_code == 200


def test_the_command_says_when_its_port_is_taken(
    monkeypatch: pytest.MonkeyPatch, board: InMemoryBoard
) -> None:
    monkeypatch.setattr(board_cli, "open_board", lambda endpoint_url, stack: (board, board))
    monkeypatch.setattr("jobtriggers.cli.common.configure_store", lambda endpoint_url, stack: None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli_app, ["board", "--port", str(port), "--endpoint-url", "http://127.0.0.1:1"]
        )
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "--port" in result.output


# ----------------------------------------------------------------------------- the actions' guards


def test_an_action_without_the_pages_token_is_refused(client: httpx.Client, board: InMemoryBoard) -> None:
    """Another web page in the operator's browser cannot post a cancel to 127.0.0.1."""
    job = _failed_id(board)
    for data in ({}, {"token": "guessed"}):
        response = client.post(f"/jobs/{job}/cancel", data=data)
        assert response.status_code == 403
        assert "reload it" in response.text
    response = client.post(
        f"/jobs/{job}/cancel", data={"token": TOKEN}, headers={"origin": "http://evil.example"}
    )
    assert response.status_code == 403
    assert board.calls == []
    assert board.jobs[job].status == "failed"


def test_an_action_answers_with_its_message_and_tells_the_page_to_refresh(
    client: httpx.Client, board: InMemoryBoard
) -> None:
    job = _failed_id(board)
    response = client.post(
        f"/jobs/{job}/rerun",
        data={"token": TOKEN},
        headers={"origin": str(client.base_url).rstrip("/"), "hx-request": "true"},
    )
    assert response.status_code == 200
    assert "is pending again" in response.text
    assert response.headers["hx-trigger"] == "board-changed"
    assert board.calls == [("rerun", job)]


@pytest.mark.parametrize(
    ("action", "status", "code", "words"),
    [
        ("rerun", "pending", 409, "is pending; only done, failed or cancelled jobs can be rerun"),
        ("cancel", "done", 409, "is done; only pending, claimed or failed jobs can be cancelled"),
    ],
)
def test_a_refusal_is_a_4xx_with_its_reason(
    client: httpx.Client, board: InMemoryBoard, action: str, status: str, code: int, words: str
) -> None:
    job = next(j.id for j in board.jobs.values() if j.status == status)
    response = client.post(f"/jobs/{job}/{action}", data={"token": TOKEN})
    assert response.status_code == code
    assert words in response.text
    assert "Not done:" in response.text
    assert "hx-trigger" not in response.headers


def test_an_action_on_an_unknown_job_is_404(client: httpx.Client) -> None:
    response = client.post("/jobs/nope/rerun", data={"token": TOKEN})
    assert response.status_code == 404
    assert "job &#39;nope&#39; does not exist" in response.text


# ----------------------------------------------------------------------------- pages and filters


class _BusyStore(InMemoryBoard):
    def overview(self, filters: Filters) -> Overview:
        raise RetryableStoreError("the store is busy; try again in a few seconds")


def test_a_store_fault_is_a_readable_5xx(board: InMemoryBoard) -> None:
    busy = _BusyStore(board.workflows, board.sites)
    app = create_app(busy, busy, BoardConfig(source_label="test"), action_token=TOKEN)
    with BoardServer(app) as server, httpx.Client(base_url=server.url) as http:
        page = http.get("/")
        assert page.status_code == 503
        assert "The board could not read the jobs" in page.text
        assert "the store is busy; try again in a few seconds" in page.text
        fragment = http.get("/fragments/overview", headers={"hx-request": "true"})
        assert fragment.status_code == 503
        assert "the store is busy" in fragment.text


def test_bad_filters_are_a_400_that_says_what_would_work(client: httpx.Client) -> None:
    response = client.get("/?status=stuck")
    assert response.status_code == 400
    assert "status must be one of pending, claimed, done, failed, cancelled, not 'stuck'" in _text(response)
    assert client.get("/fragments/overview?limit=0").status_code == 400


def test_a_submitted_filter_form_redirects_to_the_shareable_address(client: httpx.Client) -> None:
    response = client.get("/?workflow=&status=failed&site=&object_id=", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/?status=failed"


def test_an_unknown_job_is_a_404_page(client: httpx.Client) -> None:
    response = client.get("/jobs/bm9wZSNub3Bl")
    assert response.status_code == 404
    assert "There is no job 'bm9wZSNub3Bl'" in _text(response)
    assert client.get("/fragments/jobs/bm9wZSNub3Bl").status_code == 404


def test_untrusted_text_is_escaped(board: InMemoryBoard, client: httpx.Client) -> None:
    job = board.jobs[_failed_id(board)]
    from jobtriggers.board.port import JobError

    job.last_error = JobError(code="command_failed", message="<script>alert(1)</script>")
    text = client.get("/").text
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_every_asset_is_served_by_the_board_itself(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp
    assert page.headers["cache-control"] == "no-store"
    referenced = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert referenced
    assert [u for u in referenced if re.match(r"(https?:)?//", u)] == []
    for asset in ("/static/board.css", "/static/board.js", "/static/favicon.svg", f"/static/{HTMX_FILE}"):
        assert asset in referenced
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert "content-security-policy" in response.headers


def test_htmx_is_the_pinned_release_with_its_licence() -> None:
    assert hashlib.sha256((HERE / "static" / HTMX_FILE).read_bytes()).hexdigest() == HTMX_SHA256
    assert 'version:"2.0.11"' in (HERE / "static" / HTMX_FILE).read_text()
    assert "Zero-Clause BSD" in (HERE / "static" / "htmx-LICENSE.txt").read_text()


def test_the_package_ships_the_templates_and_static_files() -> None:
    """A wheel has them too: setuptools' package-data names them."""
    text = (ROOT / "pyproject.toml").read_text()
    assert '"jobtriggers.board" = ["templates/*.html", "static/*"]' in text
    assert {p.name for p in (HERE / "templates").glob("*.html")} >= {"base.html", "board.html", "job.html"}


def test_the_service_never_imports_the_board() -> None:
    """The board is a tool (like cli/): no handler and no service module may depend on it."""
    package = ROOT / "layers" / "jobtriggers" / "jobtriggers"
    offenders = []
    for path in [*package.rglob("*.py"), *(ROOT / "functions").rglob("*.py")]:
        rel = path.relative_to(ROOT)
        if rel.parts[3:4] in (("board",), ("cli",)):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(n == "jobtriggers.board" or n.startswith("jobtriggers.board.") for n in names):
                offenders.append(str(rel))
    assert offenders == []
    requirements = (ROOT / "layers" / "jobtriggers" / "requirements.txt").read_text().lower()
    assert not {"starlette", "uvicorn", "jinja2", "playwright"} & set(
        re.findall(r"^[a-z0-9_.-]+", requirements, re.M)
    )


# ----------------------------------------------------------------------------- small pieces


def test_durations_read_like_a_person_would_say_them() -> None:
    assert [format_duration(s) for s in (0, 59, 60, 250, 600, 3600, 3660, 86400, 90000, -45)] == [
        "0 s",
        "59 s",
        "1 m",
        "4 m 10 s",
        "10 m",
        "1 h",
        "1 h 1 m",
        "1 d",
        "1 d 1 h",
        "45 s",
    ]
    assert format_duration(None) == "—"


def test_a_lease_is_close_to_its_end_under_a_tenth_and_never_under_a_minute() -> None:
    assert lease_is_soon(359, 3600) and not lease_is_soon(361, 3600)
    assert lease_is_soon(59, 120) and not lease_is_soon(61, 120)


def test_one_failed_job_among_thousands_is_still_visible_in_the_bar() -> None:
    segments = bar_segments(StatusCounts(done=5000, failed=1, pending=40))
    assert [s.status for s in segments] == ["pending", "done", "failed"]
    widths = {s.status: float(s.width) for s in segments}
    assert widths["failed"] >= 7.9
    assert widths["done"] > 900
    end = float(segments[-1].x) + float(segments[-1].width)
    assert end == pytest.approx(1000, abs=0.2)
    assert bar_segments(StatusCounts()) == []


def test_the_in_memory_board_is_a_board(board: InMemoryBoard) -> None:
    assert isinstance(board, BoardSource)
    assert isinstance(board, BoardActions)


def test_the_in_memory_boards_lists_follow_the_filters(board: InMemoryBoard) -> None:
    everything = board.overview(Filters())
    assert everything.jobs == []  # no status or object: nothing to list beyond failed and claimed
    assert all(j.status == "pending" for j in board.overview(Filters(status="pending")).jobs)
    only_failed = board.overview(Filters(status="failed"))
    assert only_failed.claimed == [] and only_failed.failed and only_failed.jobs == []
    nersc = board.overview(Filters(site="nersc"))
    assert nersc.claimed and {c.site_id for c in nersc.claimed} == {"nersc"}
    few = board.overview(Filters(status="done", limit=5))
    assert len(few.jobs) == 5 and few.jobs_truncated
    # the soonest lease end first
    ends = [c.lease_expires_at for c in everything.claimed]
    assert ends == sorted(ends)
    # age of the oldest pending job, at the moment of the refresh
    readqc = next(w for w in everything.workflows if w.id == "readqc-1.0.6")
    assert readqc.oldest_pending_at is not None
    assert readqc.oldest_pending_age_seconds == pytest.approx(
        (everything.generated_at - readqc.oldest_pending_at).total_seconds()
    )
    assert everything.generated_at - timedelta(seconds=5) < datetime.now(UTC)


def test_a_longer_list_is_offered_and_kept_through_live_refreshes(client: httpx.Client) -> None:
    # Given more done jobs than a list shows by default
    page = client.get("/?status=done")
    assert page.status_code == 200
    # Then the list offers more, keeping the filters
    more = re.search(r'id="more-jobs" href="([^"]+)"', page.text)
    assert more, "no link to a longer list"
    assert html.unescape(more.group(1)) == "/?status=done&limit=100"
    # And a page that asked for more keeps asking for that many in its live refresh
    longer = client.get("/?status=done&limit=100")
    assert 'hx-get="/fragments/overview?status=done&amp;limit=100"' in longer.text
    assert len(re.findall(r'<tr data-job="', longer.text)) > 25
    # The default is left out of the URLs (a view's address stays as short as its filters)
    assert 'hx-get="/fragments/overview?status=done"' in page.text
