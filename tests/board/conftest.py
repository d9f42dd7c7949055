"""Fixtures for the board: the realistic in-memory source, the board's server on a free loopback port,
and a page of Debian's headless Chromium that records what its console says."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Request

from jobtriggers.board.server import BoardConfig, BoardServer, create_app
from tests.board.dataset import nmdc_board
from tests.board.fake_board import InMemoryBoard

REFRESH_SECONDS = 1.0


@pytest.fixture
def board() -> InMemoryBoard:
    return nmdc_board(datetime.now(UTC))


@pytest.fixture
def server(board: InMemoryBoard) -> Iterator[BoardServer]:
    app = create_app(board, board, BoardConfig(source_label="test data", refresh_seconds=REFRESH_SECONDS))
    with BoardServer(app) as running:
        yield running


@dataclass
class Console:
    """Everything the page said that a person debugging it would call an error."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console.{message.type}: {message.text}")

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")

    def on_request_failed(self, request: Request) -> None:
        # a poll still in flight when the page navigates away is aborted, as in any browser
        if request.failure != "net::ERR_ABORTED":
            self.errors.append(f"request failed: {request.url} ({request.failure})")


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: BrowserContext, console: Console) -> Iterator[Page]:
    page = browser.new_page()
    page.set_default_timeout(10_000)
    page.on("console", console.on_console)
    page.on("pageerror", console.on_page_error)
    page.on("requestfailed", console.on_request_failed)
    page.on("request", lambda request: console.requests.append(request.url))
    yield page
    page.close()
