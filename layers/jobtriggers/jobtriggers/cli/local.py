"""`jobtriggers local`: the whole service on this machine (what `make run` starts)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from jobtriggers.board.cli import DEFAULT_PORT as DEFAULT_BOARD_PORT
from jobtriggers.cli.common import err_console, fail, fail_from
from jobtriggers.errors import JobTriggersError

if TYPE_CHECKING:
    from jobtriggers.board.server import BoardServer
    from jobtriggers.local.runtime import LocalRuntime


def local(
    host: str = typer.Option("127.0.0.1", "--host", help="Address the HTTP API binds to"),
    port: int = typer.Option(3000, "--port", min=0, max=65535, help="Port of the HTTP API"),
    dynamodb_port: int = typer.Option(
        8000, "--dynamodb-port", min=0, max=65535, help="Port of the embedded DynamoDB (on 127.0.0.1)"
    ),
    seed_dir: Path | None = typer.Option(
        None, "--seed-dir", help="Registry to load (default: seed/ beside template.yaml)"
    ),
    poll_interval: float = typer.Option(
        0.25, "--poll-interval", min=0.01, help="Seconds between stream polls (Lambda: 0.25)"
    ),
    log_level: str = typer.Option("INFO", "--log-level", help="Level of the functions' logs"),
    max_workers: int = typer.Option(
        8, "--max-workers", min=1, max=64, help="Worker processes per function at most (each ~70 MB)"
    ),
    parameters: list[str] = typer.Option(
        [],
        "--parameter",
        help="A template parameter as KEY=VALUE, as `sam deploy --parameter-overrides` "
        "(e.g. EnableScheduledReconcile=true); repeatable",
    ),
    board_port: int = typer.Option(
        DEFAULT_BOARD_PORT,
        "--board-port",
        min=0,
        max=65535,
        help="Port of the job board on 127.0.0.1 (0 picks a free one)",
    ),
    no_board: bool = typer.Option(False, "--no-board", help="Do not serve the job board beside the runtime"),
) -> None:
    """Start the local runtime: embedded DynamoDB, the seeded registry, each function in worker
    processes of its own, the stream poller, the scheduler and the API on http://HOST:PORT; and the
    job board on http://127.0.0.1:BOARD_PORT (this machine only). Ctrl-C stops it."""
    from jobtriggers.local.runtime import LocalConfig, LocalRuntime, PortInUseError

    overrides: dict[str, str] = {}
    for pair in parameters:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--parameter {pair!r}: expected KEY=VALUE, e.g. EnableScheduledReconcile=true", code=2)
        overrides[key] = value

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    config = LocalConfig(
        host=host,
        port=port,
        dynamodb_port=dynamodb_port,
        seed_dir=seed_dir,
        poll_interval=poll_interval,
        log_level=log_level,
        max_workers=max_workers,
        parameter_overrides=overrides,
    )
    try:
        runtime = LocalRuntime(config).start()
    except PortInUseError as exc:
        fail(f"{exc} (options: --port, --dynamodb-port)", code=2)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc), code=2)
    except JobTriggersError as exc:
        fail_from(exc)
    board = None if no_board else _start_board(runtime, board_port)
    if board is not None:
        lines = [f"  Board     {board.url}   (the job board: this machine only)"]
    else:
        why = "--no-board" if no_board else "not started (see above)"
        lines = [
            f"  Board     {why}; to serve it: jobtriggers board --endpoint-url {runtime.dynamodb_endpoint}"
        ]
    typer.echo(runtime.banner(also=lines))
    try:
        runtime.serve_forever()
    finally:
        if board is not None:
            board.stop()
    typer.echo("stopped")


def _start_board(runtime: LocalRuntime, port: int) -> BoardServer | None:
    """The job board beside the runtime, in this process, on the runtime's tables (the environment
    names them while it runs), on loopback only whatever --host says. Started here rather than left
    to a second command: `make run` then shows the service and its board at once, and the board reads
    the same embedded store; `jobtriggers board --endpoint-url` serves it from another process."""
    try:
        from jobtriggers.board.cli import source_label
        from jobtriggers.board.server import BoardConfig, BoardServer, create_app
        from jobtriggers.board.tables import open_tables
    except ImportError as exc:
        err_console.print(f"job board not started: it needs pip install 'jobtriggers[board]' ({exc})")
        return None
    source, actions = open_tables()
    app = create_app(source, actions, BoardConfig(source_label(runtime.dynamodb_endpoint, None)))
    try:
        return BoardServer(app, port=port).start()
    except OSError as exc:
        err_console.print(
            f"job board not started: cannot listen on 127.0.0.1:{port} ({exc.strerror}); "
            "use --board-port (0: any free one)"
        )
        source.close()
        return None
