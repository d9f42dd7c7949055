"""`jobtriggers site work`: the worker loop a site runs. Claim the next job, run a command on it with
a heartbeat, report the outcome, repeat until no job is left.

The command gets the job's JSON on stdin and in JOB_JSON (never the site's secret). Exit status 0
reports done with the last JSON object it printed on stdout as the result; any other status reports
an error (`exit_<status>`, with the tail of stderr). The lease is renewed every third of its length;
when the answer to a renewal says the job was cancelled (`metadata.cancel_requested`), the command
is stopped (SIGTERM to its process group, SIGKILL after `--grace` seconds) and the attempt reported
as the error `cancelled`, which ends the job `cancelled`; the loop goes on with the next job.
Claims carry one Idempotency-Key per logical claim, so a claim whose answer was lost is answered,
not made twice. Faults that are not the worker's own (unreachable, 409 of a claim still being
answered, 429, 5xx) are waited out with a jittered backoff that says why; an answer that retrying
cannot change (bad credentials, a workflow it may not run) stops it. Ctrl-C or SIGTERM stops the
command and releases the job.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import typer

from jobtriggers.cli.common import err_console, fail
from jobtriggers.cli.site_jobs import SECRET_ENV, api_fail, site_client
from jobtriggers.client import Conflict, Invalid, PayloadTooLarge, SiteApiError, SiteClient
from jobtriggers.models import Operation

STDERR_TAIL_CHARS = 4000
MIN_HEARTBEAT_SECONDS = 1.0
DEFAULT_GRACE_SECONDS = 10.0
CANCELLED = "cancelled"


def last_json_object(stdout: str) -> dict[str, Any] | None:
    """The JSON object COMMAND printed last: the last stdout line that parses as one."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def readable_detail(detail: Any) -> str:
    """An API error's detail for people: a 422's list of {loc, msg} as `field: message; ...`."""
    if isinstance(detail, list) and all(isinstance(d, dict) and "msg" in d for d in detail):
        return "; ".join(
            ".".join(str(p) for p in d.get("loc", [])[1:]) + f": {d['msg']}"
            if d.get("loc")
            else str(d["msg"])
            for d in detail
        )
    return str(detail)


def error_result(returncode: int, stderr: str) -> dict[str, Any]:
    """The error result for a failed command: its exit status and the tail of its stderr."""
    if returncode < 0:
        code, message = f"signal_{-returncode}", f"the command was killed by signal {-returncode}"
    else:
        code, message = f"exit_{returncode}", f"the command exited with status {returncode}"
    return {"code": code, "message": message, "details": {"stderr_tail": stderr[-STDERR_TAIL_CHARS:]}}


def lease_seconds_left(op: Operation) -> float:
    end = datetime.fromisoformat(str(op.metadata["lease_expires_at"]).replace("Z", "+00:00"))
    return max((end - datetime.now(UTC)).total_seconds(), 0.0)


class Heartbeat:
    """Renews the lease every third of it while the command runs; notices when the job is lost, and
    when it was cancelled (the renewal's answer carries `metadata.cancel_requested`).

    Beats are spaced from the start of one to the start of the next, so a slow answer does not push
    the following beats back: a cancel is read within one interval (plus one answer's time) of being
    asked. After a cancel it goes on renewing the lease while the command stops.
    """

    def __init__(
        self,
        api: SiteClient,
        op: Operation,
        on_lost: Callable[[], Any],
        on_cancel: Callable[[], Any] | None = None,
    ) -> None:
        self.api = api
        self.op_id = op.id
        self.interval = max(lease_seconds_left(op) / 3, MIN_HEARTBEAT_SECONDS)
        self.on_lost = on_lost
        self.on_cancel = on_cancel
        self.stop = threading.Event()
        self.lost = False
        self.cancel_requested = False
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{op.id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        next_beat = time.monotonic() + self.interval
        while not self.stop.wait(max(next_beat - time.monotonic(), 0.0)):
            next_beat = time.monotonic() + self.interval
            try:
                answer = self.api.heartbeat(self.op_id)
            except Conflict as exc:
                # The lease ended and another site took the job: stop, so it never runs twice.
                self.lost = True
                err_console.print(f"[red]lost the job:[/red] {exc.detail}")
                self.on_lost()
                return
            except SiteApiError as exc:  # transient (retries exhausted): try again next beat
                err_console.print(f"[yellow]heartbeat failed, will retry:[/yellow] {exc.detail}")
                continue
            if answer.metadata.get("cancel_requested") and not self.cancel_requested:
                self.cancel_requested = True
                if self.on_cancel is not None:
                    self.on_cancel()


def _child_env(job_json: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}  # the command never sees the secret
    env["JOB_JSON"] = job_json
    return env


def _signal_command(proc: subprocess.Popen[str], signum: int) -> None:
    """Signal the command and whatever it started: it runs in a process group of its own (a shell
    script's children stop with it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # gone already
        os.killpg(proc.pid, signum)


class Stopper:
    """Stops the command: SIGTERM, then SIGKILL once `grace` seconds passed; at most once.
    `stop_soon` does it on a thread of its own (the heartbeat that noticed a cancel goes on
    renewing the lease meanwhile). `stopped` says whether it found the command running."""

    def __init__(self, proc: subprocess.Popen[str], grace: float) -> None:
        self.proc = proc
        self.grace = grace
        self.stopped = False
        self.killed = False
        self._lock = threading.Lock()
        self._started = False

    def stop(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        if self.proc.poll() is not None:
            return
        self.stopped = True
        _signal_command(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.grace)
        except subprocess.TimeoutExpired:
            self.killed = True
            _signal_command(self.proc, signal.SIGKILL)

    def stop_soon(self) -> None:
        threading.Thread(target=self.stop, name="stop-command", daemon=True).start()


def _stop(proc: subprocess.Popen[str], grace: float = DEFAULT_GRACE_SECONDS) -> None:
    Stopper(proc, grace).stop()


def _tail_reader(stream: IO[str], keep: deque[str], echo: IO[str] | None) -> threading.Thread:
    def pump() -> None:
        for line in stream:
            keep.append(line)
            if echo is not None:
                echo.write(line)
                echo.flush()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


@dataclass
class RunOutcome:
    job_id: str
    operation_id: str
    status: str  # done, error, cancelled, lost
    seconds: float
    result: Any = None


def cancelled_result(stopper: Stopper, returncode: int, stderr: str) -> dict[str, Any]:
    """The error result for a command stopped because its job was cancelled."""
    how = f"SIGTERM, then SIGKILL after {stopper.grace:g}s" if stopper.killed else "SIGTERM"
    return {
        "code": CANCELLED,
        "message": f"the job was cancelled: the command was stopped ({how})",
        "details": {"returncode": returncode, "stderr_tail": stderr[-STDERR_TAIL_CHARS:]},
    }


class DeferredStop:
    """Holds Ctrl-C and SIGTERM from the moment a job's command has ended until its outcome is
    reported and printed. Stopping in between would lose the outcome's line, and would try to
    release a job the report had already finished. `hold()` installs handlers that note the signal;
    `release()` puts back what was there and, if a signal came meanwhile, stops now
    (KeyboardInterrupt). Python runs signal handlers in the main thread, where the loop runs."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.asked: list[int] = []
        self._previous: dict[int, Any] = {}

    def hold(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return  # signal handlers can be set only from the main thread
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, lambda n, _frame: self.asked.append(n))

    def release(self) -> None:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if self.asked:
            self.asked.clear()
            raise KeyboardInterrupt


def run_one(
    api: SiteClient,
    op: Operation,
    command: list[str],
    grace: float = DEFAULT_GRACE_SECONDS,
    stop: DeferredStop | None = None,
) -> RunOutcome:
    """Run COMMAND on the job of `op`, heartbeating, and report done, the error, or the cancel.
    With `stop`, a stop asked for after the command ended waits until the caller's `stop.release()`."""
    job = op.metadata["job"]
    job_id = str(job["id"])
    job_json = json.dumps(job)
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(job_json),
        start_new_session=True,  # a process group of its own, to stop whatever it starts
    )
    stopper = Stopper(proc, grace)

    def cancelled() -> None:
        err_console.print(
            f"[yellow]job {job_id} was cancelled:[/yellow] stopping the command "
            f"(SIGTERM; SIGKILL after {grace:g}s)"
        )
        stopper.stop_soon()

    try:
        # The command's stdout is kept whole (its last JSON line is the result), stderr as a tail
        # and echoed so people see progress.
        out_lines: deque[str] = deque()
        err_lines: deque[str] = deque(maxlen=200)
        readers = [
            _tail_reader(proc.stdout, out_lines, None),  # type: ignore[arg-type]
            _tail_reader(proc.stderr, err_lines, sys.stderr),  # type: ignore[arg-type]
        ]
        with Heartbeat(api, op, on_lost=stopper.stop, on_cancel=cancelled) as beat:
            try:
                assert proc.stdin is not None
                proc.stdin.write(job_json)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # the command does not read stdin
            returncode = proc.wait()
            for reader in readers:
                reader.join(timeout=10)
    except BaseException:
        _stop(proc, grace)  # Ctrl-C (the caller releases the job) or a fault: never leave it running
        raise
    if stop is not None:
        stop.hold()
    seconds = time.monotonic() - started
    if beat.lost:
        return RunOutcome(job_id, op.id, "lost", seconds)
    stderr = "".join(err_lines)
    if stopper.stopped and beat.cancel_requested:
        # Stopped on the cancel (whatever its exit status): the error `cancelled` ends the job so.
        error = cancelled_result(stopper, returncode, stderr)
        api.fail(op.id, error["code"], error["message"], error["details"])
        return RunOutcome(job_id, op.id, CANCELLED, seconds, error)
    if returncode == 0:
        result = last_json_object("".join(out_lines))
        try:
            api.complete(op.id, result)
        except (PayloadTooLarge, Invalid, Conflict) as exc:
            if isinstance(exc, Conflict) and api.get_operation(op.id).done:
                raise  # the job moved on without us (its lease ended): nothing left to report
            # The API refused the result (too large, outputs it cannot register): the attempt failed.
            code = "result_too_large" if isinstance(exc, PayloadTooLarge) else "result_rejected"
            result = {"code": code, "message": readable_detail(exc.detail)}
            err_console.print(f"[red]the API refused job {job_id}'s result:[/red] {result['message']}")
            api.fail(op.id, result["code"], result["message"])
            return RunOutcome(job_id, op.id, "error", seconds, result)
        return RunOutcome(job_id, op.id, "done", seconds, result)
    error = error_result(returncode, stderr)
    api.fail(op.id, error["code"], error["message"], error["details"])
    return RunOutcome(job_id, op.id, "error", seconds, error)


# Claim failures a worker waits out: unreachable (0), rate-limited (429), a retry of the same claim
# still being answered (409), and every server-side fault (5xx).
TRANSIENT_STATUSES = frozenset({0, 409, 429})
FIRST_PAUSE_SECONDS = 1.0
MAX_PAUSE_SECONDS = 60.0


def is_transient(exc: SiteApiError) -> bool:
    return exc.status_code in TRANSIENT_STATUSES or exc.status_code >= 500


class Backoff:
    """Pauses between failed claims: doubling from a second up to a minute, with jitter so a fleet
    that failed together does not come back together; `reset` after a success."""

    def __init__(self, first: float = FIRST_PAUSE_SECONDS, cap: float = MAX_PAUSE_SECONDS) -> None:
        self.first, self.cap, self.failures = first, cap, 0

    def next(self) -> float:
        ceiling = min(self.cap, self.first * 2**self.failures)
        self.failures += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


class Claimer:
    """Claims the next job for the loop, waiting out faults that are not the worker's own. One
    Idempotency-Key per logical claim, kept while that claim is retried after a failure (its first
    try may have claimed a job whose answer was lost), new once an answer arrived."""

    def __init__(self, api: SiteClient, workflow: str) -> None:
        self.api = api
        self.workflow = workflow
        self.backoff = Backoff()
        self.key = uuid.uuid4().hex

    def next(self) -> Operation | None:
        """The claimed job's operation, or None when none is claimable."""
        while True:
            try:
                op = self.api.claim_next(self.workflow, idempotency_key=self.key)
            except SiteApiError as exc:
                if not is_transient(exc):
                    api_fail(exc)
                pause = self.backoff.next()
                why = f"{exc.status_code or 'unreachable'}: {exc.detail}"
                err_console.print(f"[yellow]claiming failed[/yellow] ({why}); trying again in {pause:.1f}s")
                time.sleep(pause)
                continue
            self.backoff.reset()
            self.key = uuid.uuid4().hex
            return op


def work(
    ctx: typer.Context,
    workflow: str = typer.Option(..., "--workflow", help="claim jobs of this workflow"),
    once: bool = typer.Option(False, "--once", help="run one job, then stop"),
    max_jobs: int | None = typer.Option(None, "--max-jobs", min=1, help="stop after this many jobs"),
    wait: float = typer.Option(
        0.0, "--wait", min=0, help="when no job is claimable, poll again after this many seconds (0: stop)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON line per job on stdout"),
    grace: float = typer.Option(
        DEFAULT_GRACE_SECONDS,
        "--grace",
        min=0,
        help="seconds COMMAND has to stop after SIGTERM (a cancelled job, Ctrl-C) before SIGKILL",
    ),
) -> None:
    """Claim the next job, run COMMAND on it, report, repeat:  site work --workflow ID -- COMMAND ...

    COMMAND gets the job's JSON on stdin and in JOB_JSON. Exit status 0 reports done, with the
    last line of stdout that is a JSON object as the result; any other status reports an error
    (`exit_<status>`, with the tail of stderr), which the API retries up to the workflow's
    max_attempts. The lease is renewed every third of its length while COMMAND runs. A job
    cancelled meanwhile is seen at the next renewal: COMMAND gets SIGTERM (SIGKILL after --grace
    seconds), the job ends cancelled, and the next job is claimed. Ctrl-C stops COMMAND and
    releases the job.
    """
    command = list(ctx.args)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        fail("give the command to run after --, e.g. site work --workflow metag-1.0.0 -- ./run.sh")
    limit = 1 if once else max_jobs
    # SIGTERM (a batch system ending the worker) is treated like Ctrl-C: release, then stop.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    stop = DeferredStop()
    with site_client() as api:
        op: Operation | None = None
        try:
            claimer, done = Claimer(api, workflow), 0
            while limit is None or done < limit:
                op = claimer.next()
                if op is None:
                    if wait <= 0:
                        err_console.print(f"no claimable {workflow} job; {done} run")
                        break
                    time.sleep(wait)
                    continue
                try:
                    outcome = _run_and_report(api, op, command, grace, stop)
                    op = None  # reported (or its lease will end): nothing to give back
                    if outcome is not None:
                        done += 1
                        if as_json:
                            sys.stdout.write(json.dumps(outcome.__dict__, default=str) + "\n")
                            sys.stdout.flush()
                finally:
                    stop.release()  # a stop asked for while reporting happens here
        except KeyboardInterrupt:
            if op is not None:  # claimed and not reported yet: give the job back at once
                _release_quietly(api, op)
            err_console.print("stopped")
            raise typer.Exit(130) from None


def _run_and_report(
    api: SiteClient, op: Operation, command: list[str], grace: float, stop: DeferredStop | None = None
) -> RunOutcome | None:
    """Run the claimed job; its outcome, or None when reporting it failed (its lease then ends)."""
    job_id = op.metadata["job"]["id"]
    err_console.print(f"claimed job {job_id} (attempt {op.metadata.get('attempt')}), running")
    try:
        outcome = run_one(api, op, command, grace, stop)
    except SiteApiError as exc:
        err_console.print(f"[red]reporting job {job_id} failed:[/red] {exc.detail}")
        return None
    if outcome.status == CANCELLED:
        err_console.print(
            f"job {outcome.job_id}: cancelled (the command was stopped) in {outcome.seconds:.1f}s"
        )
    else:
        err_console.print(f"job {outcome.job_id}: {outcome.status} in {outcome.seconds:.1f}s")
    return outcome


def _release_quietly(api: SiteClient, op: Operation) -> None:
    job_id = op.metadata["job"]["id"]
    err_console.print(f"interrupted: releasing job {job_id}")
    try:
        api.release(job_id)
    except SiteApiError as exc:
        err_console.print(f"[red]could not release {job_id}:[/red] {exc.detail} (its lease will end)")
