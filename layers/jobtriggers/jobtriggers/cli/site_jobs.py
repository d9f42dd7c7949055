"""`jobtriggers site ...`: what people and scripts at a compute site run.

The API URL and credentials come from JOBTRIGGERS_URL, JOBTRIGGERS_CLIENT_ID and
JOBTRIGGERS_CLIENT_SECRET, or from a TOML file (JOBTRIGGERS_CONFIG, else
~/.config/jobtriggers/site.toml) with `url`, `client_id` and `client_secret`; never from argv,
where other users of the machine could read the secret.

`site work`, the worker loop, is in cli/worker.py.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import typer

from jobtriggers.cli.common import JsonOption, err_console, fail, print_json, print_table
from jobtriggers.client import SiteApiError, SiteClient
from jobtriggers.logic.claims import is_error_result
from jobtriggers.models import Job, Operation

app = typer.Typer(no_args_is_help=True, help="For sites: list, claim and run jobs over the API.")

CONFIG_ENV = "JOBTRIGGERS_CONFIG"
DEFAULT_CONFIG = Path("~/.config/jobtriggers/site.toml")
SECRET_ENV = "JOBTRIGGERS_CLIENT_SECRET"


@dataclass(frozen=True)
class SiteConfig:
    url: str
    client_id: str
    client_secret: str

    def __repr__(self) -> str:  # never the secret
        return f"SiteConfig(url={self.url!r}, client_id={self.client_id!r})"


def load_config(environ: dict[str, str] | None = None) -> SiteConfig:
    """Environment first, then the config file; a readable message naming what is missing."""
    env = os.environ if environ is None else environ
    path = Path(env.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser()
    from_file: dict[str, Any] = {}
    if path.is_file():
        try:
            from_file = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            fail(f"cannot read {path}: {exc}")
        if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH) and "client_secret" in from_file:
            err_console.print(f"[yellow]warning:[/yellow] {path} holds a secret; chmod 600 it")
    elif env.get(CONFIG_ENV):
        fail(f"{CONFIG_ENV} names {path}, which does not exist")
    values = {
        "url": env.get("JOBTRIGGERS_URL") or from_file.get("url"),
        "client_id": env.get("JOBTRIGGERS_CLIENT_ID") or from_file.get("client_id"),
        "client_secret": env.get(SECRET_ENV) or from_file.get("client_secret"),
    }
    missing = [k for k, v in values.items() if not v]
    if missing:
        fail(
            f"missing {', '.join(missing)}: set JOBTRIGGERS_URL, JOBTRIGGERS_CLIENT_ID and "
            f"{SECRET_ENV}, or write them as url, client_id, client_secret to {path}"
        )
    return SiteConfig(**{k: str(v) for k, v in values.items()})


def site_client() -> SiteClient:
    config = load_config()
    return SiteClient(config.url, config.client_id, config.client_secret)


def api_fail(exc: SiteApiError) -> None:
    fail(f"{exc.status_code or 'unreachable'}: {exc.detail}")


@contextmanager
def api_errors() -> Iterator[None]:
    """An API refusal or fault ends the command with its status and detail, not a traceback."""
    try:
        yield
    except SiteApiError as exc:
        api_fail(exc)


# --------------------------------------------------------------------------- people


@app.command("jobs")
def list_jobs(
    workflow: str | None = typer.Option(None, "--workflow", help="only jobs of this workflow"),
    status: str | None = typer.Option(None, "--status", help="pending, claimed, done or failed"),
    claimable: bool = typer.Option(False, "--claimable", help="only jobs that can be claimed now"),
    mine: bool = typer.Option(False, "--mine", help="only jobs this site holds or held"),
    workflow_missing: bool = typer.Option(
        False,
        "--workflow-missing",
        help="only jobs whose workflow is gone from the registry (nobody can claim them)",
    ),
    limit: int = typer.Option(200, "--limit", min=1, help="stop after this many"),
    as_json: bool = JsonOption,
) -> None:
    """List jobs (oldest first)."""
    with site_client() as api, api_errors():
        site_id = api.site_id() if mine else None
        listing = api.list_jobs(
            workflow_id=workflow,
            status=status,
            claimable=claimable,
            site_id=site_id,
            workflow_missing=True if workflow_missing else None,
        )
        jobs = list(islice(listing, limit))
    if as_json:
        print_json([j.model_dump(mode="json") for j in jobs])
        return
    rows = [
        {
            "id": j.id,
            "workflow": j.workflow.id,
            "object": j.config.object_id,
            "status": j.status.value,
            "site": j.site_id,
            "attempts": j.attempts,
            "lease ends": j.lease_expires_at,
            "note": _job_note(j),
        }
        for j in jobs
    ]
    columns = ["id", "workflow", "object", "status", "site", "attempts", "lease ends", "note"]
    print_table(rows, columns, title="jobs")


def _job_note(job: Job) -> str:
    if job.workflow_missing:
        return "workflow missing from the registry: nobody can claim it"
    error = job.last_error
    if isinstance(error, dict) and error.get("code"):
        return f"last error {error['code']}"
    return ""


@app.command("claim")
def claim(job_id: str = typer.Argument(..., help="the job's id"), as_json: bool = JsonOption) -> None:
    """Claim one job; prints its operation (report on it with PATCH /operations/{id})."""
    with site_client() as api, api_errors():
        op = api.claim(job_id)
    if as_json:
        print_json(op.model_dump(mode="json"))
    else:
        err_console.print(
            f"claimed job {job_id}: operation {op.id}, lease until {op.metadata['lease_expires_at']}"
        )


@app.command("release")
def release(job_id: str = typer.Argument(..., help="the job's id"), as_json: bool = JsonOption) -> None:
    """Give a job this site holds back: it is pending again for any site."""
    with site_client() as api, api_errors():
        op = api.release(job_id)
    if as_json:
        print_json(op.model_dump(mode="json"))
    else:
        err_console.print(f"released job {job_id} (operation {op.id} cancelled)")


@app.command("ops")
def list_operations(
    done: bool | None = typer.Option(None, "--done/--live", help="only finished or only live operations"),
    limit: int = typer.Option(200, "--limit", min=1),
    as_json: bool = JsonOption,
) -> None:
    """This site's operations (one per claim), oldest first."""
    with site_client() as api, api_errors():
        ops = list(islice(api.list_operations(done=done), limit))
    if as_json:
        print_json([o.model_dump(mode="json") for o in ops])
        return
    rows = [
        {
            "id": o.id,
            "job": o.metadata.get("job", {}).get("id"),
            "attempt": o.metadata.get("attempt"),
            "done": o.done,
            "outcome": _outcome(o),
            "lease ends": None if o.done else o.metadata.get("lease_expires_at"),
        }
        for o in ops
    ]
    print_table(rows, ["id", "job", "attempt", "done", "outcome", "lease ends"], title="operations")


def _outcome(op: Operation) -> str:
    if not op.done:
        return "running"
    if op.metadata.get("cancelled"):
        return "released"
    if is_error_result(op.result):
        return f"error {op.result['code']}"
    return "done"
