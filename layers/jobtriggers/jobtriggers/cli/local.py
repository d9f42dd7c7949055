"""`jobtriggers local`: the whole service on this machine (what `make run` starts)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from jobtriggers.cli.common import fail, fail_from
from jobtriggers.errors import JobTriggersError


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
) -> None:
    """Start the local runtime: embedded DynamoDB, the seeded registry, each function in worker
    processes of its own, the stream poller, the scheduler and the API on http://HOST:PORT.
    Ctrl-C stops it."""
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
    typer.echo(runtime.banner())
    runtime.serve_forever()
    typer.echo("stopped")
