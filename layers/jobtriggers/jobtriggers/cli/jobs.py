"""`jobtriggers jobs ...`: operators find, inspect and steer jobs, over the tables (AWS access, not HTTP).

- `list` finds jobs through the jobs indexes (workflow, status, site, object), and the stuck ones
  through the queue of ended leases; `show` is one job, its operations (every claim of every run)
  and its last error.
- `cancel`, `rerun` and `release` take job ids from the arguments, a file (`--from FILE`) or stdin
  (`-`), act on each through `logic/lifecycle.JobSteering` (the rules the job board uses too), and
  print what happened to each: done, or refused and why. Any refusal makes the exit status 1, so a
  script can tell.
The operator is recorded on each change as `operator:<name>`: the AWS caller with `--stack`, else
the OS user (cli/common.py, `operator_name`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from jobtriggers.cli.common import (
    EndpointOption,
    JsonOption,
    StackOption,
    configure_store,
    console,
    err_console,
    fail,
    operator_name,
    print_json,
    print_table,
    reported_errors,
    service_logs_on_stderr,
)
from jobtriggers.errors import ConflictError, JobTriggersError, NotFoundError, ValidationFailed
from jobtriggers.models import Job, JobStatus, OperationRecord, iso, utcnow

if TYPE_CHECKING:
    from jobtriggers.logic.claims import OperationStore
    from jobtriggers.logic.lifecycle import JobSteering

app = typer.Typer(
    no_args_is_help=True,
    help="Find, inspect and steer jobs (operators): list, show, cancel, rerun, release.",
)


@app.callback()
def _output_is_stdout(ctx: typer.Context) -> None:
    ctx.with_resource(service_logs_on_stderr())


# How many jobs one index page holds while listing (a listing stops at --limit).
LIST_PAGE = 100
# Bulk actions run this many jobs at a time (each is a read and one conditional transaction).
STEER_PARALLEL = 8
# A bulk action of more jobs than this shows a progress bar (on a terminal).
PROGRESS_FROM = 10
ERROR_TEXT_CHARS = 80
STDERR_TAIL_LINES = 20


# --------------------------------------------------------------------------- list


def _when(at: str | None, now: datetime) -> str:
    """`at` against now, for people: `in 4m 10s`, `2m 5s ago`."""
    if not at:
        return ""
    try:
        then = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return at
    seconds = int((then - now).total_seconds())
    span = _span(abs(seconds))
    return f"in {span}" if seconds >= 0 else f"{span} ago"


def _span(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    return f"{hours // 24}d {hours % 24}h"


def error_text(error: Any, limit: int = ERROR_TEXT_CHARS) -> str:
    """A job's last error in one line: `code: message`, cut to `limit` characters."""
    if not error:
        return ""
    if isinstance(error, dict) and error.get("code"):
        text = f"{error['code']}: {error.get('message') or ''}".rstrip(": ")
    else:
        text = json.dumps(error, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_text(job: Job) -> str:
    if job.status == JobStatus.claimed and job.cancel_requested:
        return "claimed, cancel requested"
    return job.status.value


def attempts_text(job: Job) -> str:
    return f"{job.attempts}/{job.max_attempts}" if job.max_attempts else str(job.attempts)


def lease_text(job: Job, now: datetime) -> str:
    if job.status != JobStatus.claimed or not job.lease_expires_at:
        return ""
    when = _when(job.lease_expires_at, now)
    return f"ended {when}" if when.endswith("ago") else f"ends {when}"


def job_row(job: Job, now: datetime) -> dict[str, Any]:
    return {
        "id": job.id,
        "workflow": job.workflow_id,
        "object": job.object_id,
        "status": status_text(job),
        "site": job.site_id,
        "attempts": attempts_text(job),
        "run": job.run,
        "lease": lease_text(job, now),
        "last error": error_text(job.last_error),
        "updated": job.updated_at or job.created_at,
    }


JOB_COLUMNS = [
    "id",
    "workflow",
    "object",
    "status",
    "site",
    "attempts",
    "run",
    "lease",
    "last error",
    "updated",
]


def _pages(fetch: Callable[[int, str | None], tuple[list[Job], str | None]], page: int) -> Iterator[Job]:
    token: str | None = None
    while True:
        jobs, token = fetch(page, token)
        yield from jobs
        if not token:
            return


@app.command("list")
def list_jobs(
    workflow: str | None = typer.Option(None, "--workflow", "-w", help="only jobs of this workflow"),
    status: JobStatus | None = typer.Option(None, "--status", "-s", help="only jobs in this status"),
    site: str | None = typer.Option(None, "--site", help="only jobs this site holds (or last held)"),
    object_id: str | None = typer.Option(None, "--object", help="only jobs on this object"),
    lease_ended: bool = typer.Option(
        False,
        "--lease-ended",
        help="only claimed jobs whose lease ended: their holder stopped renewing (stuck; the lease "
        "reaper takes them within a minute)",
    ),
    cancel_requested: bool = typer.Option(
        False, "--cancel-requested", help="only claimed jobs whose cancel was asked and not yet reached"
    ),
    error: str | None = typer.Option(
        None, "--error", help="only jobs whose last error has this code (e.g. lease_expired, exit_1)"
    ),
    limit: int = typer.Option(100, "--limit", "-n", min=1, help="show at most this many"),
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """List jobs, oldest first, with their status, attempts, lease and last error.

    Failed jobs: --status failed. Stuck ones: --lease-ended (claimed, holder silent).
    """
    if lease_ended and status not in (None, JobStatus.claimed):
        fail("--lease-ended lists claimed jobs; leave out --status (or say --status claimed)", 2)
    configure_store(endpoint_url, stack)
    from jobtriggers import wiring

    repo = wiring.jobs()
    now = utcnow()
    wanted: list[Callable[[Job], bool]] = []
    if cancel_requested:
        wanted.append(lambda j: j.status == JobStatus.claimed and j.cancel_requested)
    if error is not None:
        wanted.append(lambda j: isinstance(j.last_error, dict) and j.last_error.get("code") == error)
    if lease_ended:
        # The queue of ended leases (by_workflow_status / by_status, queue_at < now); site and object
        # filter its pages.
        if site is not None:
            wanted.append(lambda j: j.site_id == site)
        if object_id is not None:
            wanted.append(lambda j: j.object_id == object_id)
        listing = _pages(lambda n, t: repo.queue_page(workflow, "ended", iso(now), n, t), LIST_PAGE)
    else:
        listing = _pages(
            lambda n, t: repo.list_page(
                workflow_id=workflow,
                object_id=object_id,
                status=status.value if status else None,
                site_id=site,
                limit=n,
                page_token=t,
            ),
            LIST_PAGE,
        )
    with reported_errors():
        jobs, more = _take((j for j in listing if all(w(j) for w in wanted)), limit)
    if as_json:
        print_json([j.model_dump(mode="json") for j in jobs])
    else:
        print_table([job_row(j, now) for j in jobs], JOB_COLUMNS, title=_list_title(len(jobs), more))
    if more:
        err_console.print(f"[yellow]more jobs match[/yellow]: showing the first {limit} (raise --limit)")


def _take(jobs: Iterable[Job], limit: int) -> tuple[list[Job], bool]:
    """The first `limit` jobs, and whether there is at least one more."""
    taken: list[Job] = []
    for job in jobs:
        if len(taken) == limit:
            return taken, True
        taken.append(job)
    return taken, False


def _list_title(count: int, more: bool) -> str:
    return f"jobs ({count}{'+' if more else ''})"


# --------------------------------------------------------------------------- show


@dataclass(frozen=True)
class JobOperation:
    """One claim of a job, and its operation as the operations table holds it (None: not found)."""

    op_id: str
    site_id: str
    run: str  # "current" (this run's claims) or "earlier" (previous_claims, before a rerun)
    operation: OperationRecord | None


def job_operations(job: Job, operations: OperationStore) -> list[JobOperation]:
    """Every operation of the job, oldest first: its earlier runs' claims, then this run's."""
    claims = [(c, "earlier") for c in job.previous_claims] + [(c, "current") for c in job.claims]
    return [JobOperation(c.op_id, c.site_id, run, operations.get(c.op_id)) for c, run in claims]


def operation_outcome(op: OperationRecord | None) -> str:
    if op is None:
        return "missing from the operations table"
    if not op.done:
        return "running, cancel requested" if op.metadata.get("cancel_requested") else "running"
    if op.metadata.get("cancelled"):
        return "released"
    if isinstance(op.result, dict) and op.result.get("code"):
        return f"error {error_text(op.result, 60)}"
    return "done"


def _show_json(job: Job, ops: list[JobOperation]) -> dict[str, Any]:
    return {
        "job": job.model_dump(mode="json"),
        "operations": [
            {"run": o.run, **(o.operation.model_dump(mode="json") if o.operation else {"id": o.op_id})}
            for o in ops
        ],
        "last_error": job.last_error,
    }


@app.command("show")
def show(
    job_id: str = typer.Argument(..., help="the job's id"),
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """Show one job: its state, its operations (earlier runs' too) and its last error."""
    configure_store(endpoint_url, stack)
    from jobtriggers import wiring

    with reported_errors():
        job = wiring.jobs().get(job_id)
        ops = job_operations(job, wiring.operations())
    if as_json:
        print_json(_show_json(job, ops))
        return
    now = utcnow()
    fields = Table(title=f"job {job.id}", show_header=False)
    fields.add_column("field", style="bold")
    fields.add_column("value")
    for name, value in (
        ("workflow", job.workflow_id),
        ("object", job.object_id),
        ("status", status_text(job)),
        ("run", job.run),
        ("attempts", attempts_text(job)),
        ("site", job.site_id),
        ("operation", job.operation_id),
        ("lease", lease_text(job, now) and f"{job.lease_expires_at} ({lease_text(job, now)})"),
        ("created", job.created_at),
        ("updated", job.updated_at),
        ("finished", job.finished_at),
        ("trigger", job.trigger_id),
        ("result", None if job.result is None else json.dumps(job.result, default=str)[:400]),
        ("last error", error_text(job.last_error, 400)),
    ):
        if value not in (None, ""):
            fields.add_row(name, str(value))
    console.print(fields)
    print_table(
        [
            {
                "operation": o.op_id,
                "run": o.run,
                "site": o.site_id,
                "attempt": o.operation.attempt if o.operation else None,
                "started": o.operation.created_at if o.operation else None,
                "last word": o.operation.updated_at if o.operation else None,
                "outcome": operation_outcome(o.operation),
            }
            for o in ops
        ],
        ["operation", "run", "site", "attempt", "started", "last word", "outcome"],
        title=f"operations ({len(ops)})",
    )
    tail = _stderr_tail(job.last_error)
    if tail:
        console.print(f"[bold]last error's stderr[/bold] (last {STDERR_TAIL_LINES} lines):")
        console.print(tail, markup=False, highlight=False)


def _stderr_tail(error: Any) -> str:
    details = error.get("details") if isinstance(error, dict) else None
    tail = details.get("stderr_tail") if isinstance(details, dict) else None
    if not isinstance(tail, str) or not tail.strip():
        return ""
    return "\n".join(tail.rstrip().splitlines()[-STDERR_TAIL_LINES:])


# --------------------------------------------------------------------------- cancel, rerun, release


class Action(StrEnum):
    cancel = "cancel"
    rerun = "rerun"
    release = "release"


@dataclass(frozen=True)
class Outcome:
    """What one action did to one job: `done`, `refused` (the rules said no; `message` says why) or
    `error` (the store failed; trying again may work)."""

    job_id: str
    outcome: str
    status: str | None
    message: str


def read_job_ids(arguments: list[str], from_file: str | None, stdin: Any = None) -> list[str]:
    """Job ids from the arguments (`-`: read stdin), and from `--from FILE` (`-`: stdin), in order,
    each once. In a file or stdin: whitespace-separated, `#` to the end of a line is a comment."""
    stdin = sys.stdin if stdin is None else stdin
    texts: list[str] = []
    ids: list[str] = []
    read_stdin = False
    for arg in arguments:
        if arg == "-":
            read_stdin = True
        else:
            ids.append(arg)
    if from_file == "-":
        read_stdin = True
    elif from_file is not None:
        try:
            texts.append(Path(from_file).read_text())
        except OSError as exc:
            fail(f"cannot read {from_file}: {exc.strerror or exc}", 2)
    if read_stdin:
        texts.append(stdin.read())
    for text in texts:
        for line in text.splitlines():
            ids.extend(line.split("#", 1)[0].split())
    return list(dict.fromkeys(ids))


def steer_one(steering: JobSteering, action: Action, job_id: str, by: str) -> Outcome:
    try:
        job = getattr(steering, action.value)(job_id, by)
    except (ConflictError, NotFoundError, ValidationFailed) as exc:
        return Outcome(job_id, "refused", None, str(exc.detail))
    except JobTriggersError as exc:
        return Outcome(job_id, "error", None, f"{exc.detail} (try again)")
    return Outcome(job_id, "done", status_text(job), _done_message(action, job))


def _done_message(action: Action, job: Job) -> str:
    if action == Action.cancel and job.status == JobStatus.claimed:
        return (
            f"cancel requested: site '{job.site_id}' stops at its next heartbeat "
            f"(or its lease ends, at {job.lease_expires_at})"
        )
    if action == Action.cancel:
        return "cancelled; nobody claims it again (rerun brings it back)"
    if action == Action.rerun:
        return f"pending again: run {job.run}, a fresh attempt budget; earlier operations kept"
    if job.status == JobStatus.cancelled:
        return "released, and cancelled: a cancel had been asked"
    return "released: pending again, the attempt given back"


def steer_all(
    steering: JobSteering, action: Action, job_ids: list[str], by: str, show_progress: bool
) -> list[Outcome]:
    """Act on every job, a few at a time; outcomes in the order of `job_ids`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    outcomes: list[Outcome | None] = [None] * len(job_ids)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not show_progress,
    )
    with progress, ThreadPoolExecutor(max_workers=STEER_PARALLEL) as pool:
        task = progress.add_task(f"{action.value} {len(job_ids)} jobs", total=len(job_ids))
        futures = {pool.submit(steer_one, steering, action, j, by): i for i, j in enumerate(job_ids)}
        for future in as_completed(futures):
            outcomes[futures[future]] = future.result()
            progress.advance(task)
    return [o for o in outcomes if o is not None]


def _report(action: Action, outcomes: list[Outcome], as_json: bool) -> None:
    if as_json:
        print_json([asdict(o) for o in outcomes])
    else:
        print_table(
            [
                {"job": o.job_id, "outcome": o.outcome, "status": o.status, "what happened": o.message}
                for o in outcomes
            ],
            ["job", "outcome", "status", "what happened"],
            title=f"{action.value}: {len(outcomes)} jobs",
        )
    counts = {k: sum(1 for o in outcomes if o.outcome == k) for k in ("done", "refused", "error")}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "nothing to do"
    colour = "green" if counts["done"] == len(outcomes) else "red"
    err_console.print(f"[{colour}]{action.value}[/{colour}]: {summary}")


JobIdsArgument = typer.Argument(None, help="job ids; - reads more from stdin (one or more a line)")
FromOption = typer.Option(
    None, "--from", help="read job ids from this file (- for stdin); `#` starts a comment"
)


def _steer_command(
    action: Action,
    job_ids: list[str] | None,
    from_file: str | None,
    endpoint_url: str | None,
    stack: str | None,
    as_json: bool,
) -> None:
    ids = read_job_ids(list(job_ids or []), from_file)
    if not ids:
        fail(f"no job ids: give them as arguments, with --from FILE, or - to read stdin ({action.value})", 2)
    configure_store(endpoint_url, stack)
    by = operator_name(stack)
    from jobtriggers import wiring

    steering = wiring.job_steering()
    show_progress = len(ids) > PROGRESS_FROM and err_console.is_terminal
    outcomes = steer_all(steering, action, ids, by, show_progress)
    _report(action, outcomes, as_json)
    if any(o.outcome != "done" for o in outcomes):
        raise typer.Exit(1)


@app.command("cancel")
def cancel(
    job_ids: list[str] | None = JobIdsArgument,
    from_file: str | None = FromOption,
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """Cancel jobs; a claimed job's site stops its command at its next heartbeat.

    A pending (or failed) job is cancelled at once; a claimed one is marked cancel-requested, and
    ends cancelled when its site stops. Exit status 1 if any job was refused.
    """
    _steer_command(Action.cancel, job_ids, from_file, endpoint_url, stack, as_json)


@app.command("rerun")
def rerun(
    job_ids: list[str] | None = JobIdsArgument,
    from_file: str | None = FromOption,
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """Run done, failed or cancelled jobs again, keeping their earlier operations.

    Each becomes pending with a fresh attempt budget and its run number one more. Exit status 1 if
    any job was refused.
    """
    _steer_command(Action.rerun, job_ids, from_file, endpoint_url, stack, as_json)


@app.command("release")
def release(
    job_ids: list[str] | None = JobIdsArgument,
    from_file: str | None = FromOption,
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """Hand claimed jobs back, as their holders would.

    Each is pending again with the attempt given back (cancelled, if a cancel was asked); the
    holder's operation ends, and its next word is refused. Exit status 1 if any job was refused.
    """
    _steer_command(Action.release, job_ids, from_file, endpoint_url, stack, as_json)
