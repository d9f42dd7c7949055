"""What every command shares: output for people (rich tables) and scripts (--json), and where the store is.

Where the tables are, in this order:
1. REGISTRY_TABLE, JOBS_TABLE, ... in the environment (as the Lambdas see them);
2. `--stack NAME`: the stack's Outputs (needs AWS credentials);
3. `--endpoint-url URL`: the local runtime's embedded DynamoDB, whose tables are
   `jobtriggers-local-<LogicalId>`.
"""

from __future__ import annotations

import json
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
def reported_errors() -> Iterator[None]:
    """Domain errors end the command with their readable detail and exit code 1, not a traceback."""
    try:
        yield
    except JobTriggersError as exc:
        fail_from(exc)
