"""What every command shares: output for people (rich tables) and scripts (--json), and where the store is.

Where the tables are, in this order:
1. REGISTRY_TABLE, JOBS_TABLE, ... in the environment (as the Lambdas see them);
2. `--stack NAME`: the stack's Outputs (needs AWS credentials);
3. `--endpoint-url URL`: the local runtime's embedded DynamoDB, whose tables are
   `jobtriggers-local-<LogicalId>`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from jobtriggers.errors import JobTriggersError
from jobtriggers.local.template import LOCAL_TABLE_PREFIX

# Stack Output -> environment variable the package reads.
STACK_OUTPUT_ENV = {
    "RegistryTableName": "REGISTRY_TABLE",
    "SitesTableName": "SITES_TABLE",
    "ObjectsTableName": "OBJECTS_TABLE",
    "ObjectTypesTableName": "OBJECT_TYPES_TABLE",
    "JobsTableName": "JOBS_TABLE",
    "OperationsTableName": "OPERATIONS_TABLE",
    # the job board's: each transition of a job, and the counts by workflow and site-hour
    "JobEventsTableName": "JOB_EVENTS_TABLE",
    "CountsTableName": "COUNTS_TABLE",
}

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

EndpointOption = typer.Option(
    None,
    "--endpoint-url",
    envvar="JOBTRIGGERS_DYNAMODB_ENDPOINT",
    help="DynamoDB endpoint of the local runtime, e.g. http://127.0.0.1:8000",
)
StackOption = typer.Option(
    None, "--stack", envvar="JOBTRIGGERS_STACK", help="Deployed stack whose tables to use"
)
JsonOption = typer.Option(False, "--json", help="Print JSON for scripts instead of a table")


def configure_store(endpoint_url: str | None, stack: str | None) -> None:
    """Point the data-access layer at the right tables before any command touches them."""
    from jobtriggers.dal.dynamo import reset_clients
    from jobtriggers.settings import reset_settings_cache

    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint_url
        os.environ["AWS_ENDPOINT_URL_DYNAMODB_STREAMS"] = endpoint_url
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        if not os.environ.get("JOBS_TABLE"):
            from jobtriggers.local.template import load_template, table_environment, table_names_for

            template = load_template()
            os.environ.update(table_environment(template, table_names_for(template, LOCAL_TABLE_PREFIX)))
    elif stack and not os.environ.get("JOBS_TABLE"):
        import boto3

        outputs = (
            boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
        )
        for out in outputs:
            var = STACK_OUTPUT_ENV.get(out["OutputKey"])
            if var:
                os.environ[var] = out["OutputValue"]
    reset_settings_cache()
    reset_clients()


def operator_name(stack: str | None) -> str:
    """Who an operator action is recorded as (`by` on the job's transition and its events):
    `operator:<AWS caller>` with `--stack` (the identity whose credentials make the change, e.g.
    `operator:alice` for an IAM user, `operator:Admin/alice` for an assumed role's session), else
    `operator:<OS user>` (the local runtime, or tables named in the environment)."""
    if stack:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            arn = boto3.client("sts").get_caller_identity()["Arn"]
        except (BotoCoreError, ClientError) as exc:
            fail(f"cannot tell who you are on AWS (sts get-caller-identity): {exc}")
        return f"operator:{caller_name(arn)}"
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = f"uid-{os.getuid()}"
    return f"operator:{user}"


def caller_name(arn: str) -> str:
    """The readable part of a caller's ARN: `arn:aws:iam::1:user/alice` -> `alice`,
    `arn:aws:sts::1:assumed-role/Admin/alice` -> `Admin/alice`, `arn:aws:iam::1:root` -> `root`."""
    resource = arn.split(":", 5)[-1]
    kind, _, name = resource.partition("/")
    return name or kind


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(rows: Iterable[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c)
    n = 0
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
        n += 1
    console.print(table)
    if n == 0:
        err_console.print("(nothing to show)")


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def fail_from(exc: JobTriggersError) -> NoReturn:
    detail = exc.detail
    if isinstance(detail, list):
        fail("\n  " + "\n  ".join(str(d) for d in detail))
    fail(str(detail))


@contextmanager
def service_logs_on_stderr(level: int = logging.WARNING) -> Iterator[None]:
    """Keep the service's own log lines (Powertools' JSON, on stdout as Lambda wants them) off a
    command's stdout, which is its output (`--json` for scripts): warnings and errors go to stderr,
    the routine lines (a job claimed, rerun, ...) nowhere; the command prints what it did itself."""
    from jobtriggers.observability import logger

    handler = logger.registered_handler
    level_before = logger.log_level
    stream_before = handler.setStream(sys.stderr) if isinstance(handler, logging.StreamHandler) else None
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(level_before)
        if stream_before is not None and isinstance(handler, logging.StreamHandler):
            handler.setStream(stream_before)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Domain errors end the command with their readable detail and exit code 1, not a traceback."""
    try:
        yield
    except JobTriggersError as exc:
        fail_from(exc)
