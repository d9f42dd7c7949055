"""`jobtriggers board`: serve the job board on http://127.0.0.1:PORT, for the operator's own browser.

Only typer is imported at module level: every `jobtriggers` command imports this module, and the
board's web stack (the `board` extra) is loaded when the board is asked for. jobtriggers.cli imports
this module, so it takes nothing from jobtriggers.cli at import time (that would be a cycle whenever
this module is imported first); its two store options repeat jobtriggers.cli.common's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from jobtriggers.board.port import BoardActions, BoardSource

DEFAULT_PORT = 8050

EndpointOption = typer.Option(
    None,
    "--endpoint-url",
    envvar="JOBTRIGGERS_DYNAMODB_ENDPOINT",
    help="DynamoDB endpoint of the local runtime, e.g. http://127.0.0.1:8000",
)
StackOption = typer.Option(
    None, "--stack", envvar="JOBTRIGGERS_STACK", help="Deployed stack whose tables to use"
)


def open_board(endpoint_url: str | None, stack: str | None) -> tuple[BoardSource, BoardActions]:
    """The board's source and actions over the tables that `configure_store` pointed at (the
    counts table and the indexes, never a scan of the jobs table: board/tables.py)."""
    from jobtriggers.board.tables import open_tables

    return open_tables()


def source_label(endpoint_url: str | None, stack: str | None) -> str:
    if endpoint_url:
        return f"local runtime · {endpoint_url}"
    if stack:
        return f"stack {stack}"
    return "tables from the environment"


def board(
    port: int = typer.Option(
        DEFAULT_PORT, "--port", "-p", min=0, max=65535, help="Port on 127.0.0.1 (0 picks a free one)"
    ),
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    refresh: float = typer.Option(5.0, "--refresh", min=1, max=300, help="Seconds between live updates"),
) -> None:
    """Serve the job board, a live page of every job, on http://127.0.0.1:PORT (this machine only)."""
    from jobtriggers.cli.common import configure_store, err_console, fail
    from jobtriggers.errors import JobTriggersError

    try:
        from jobtriggers.board.server import BoardConfig, BoardServer, create_app
    except ImportError as exc:
        fail(f"the board needs its extra dependencies: pip install 'jobtriggers[board]' ({exc})", 2)

    configure_store(endpoint_url, stack)
    try:
        source, actions = open_board(endpoint_url, stack)
    except JobTriggersError as exc:  # a table the environment does not name (an older stack)
        fail(str(exc.detail), 2)
    app = create_app(source, actions, BoardConfig(source_label(endpoint_url, stack), refresh))
    try:
        server = BoardServer(app, port=port)
    except OSError as exc:
        fail(
            f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); pick another with --port (0: any free one)",
            2,
        )
    err_console.print(f"job board: [bold]{server.url}[/bold]  (this machine only; Ctrl-C stops it)")
    server.serve_forever()
