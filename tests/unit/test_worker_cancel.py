"""`site work` and a cancelled job: the heartbeat's answer says so, the command is stopped (SIGTERM to
its process group, SIGKILL after the grace), and the attempt is reported as the error `cancelled`.
The API is scripted (httpx MockTransport); the commands are real processes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from jobtriggers.cli.worker import Heartbeat, Stopper, run_one
from jobtriggers.client import SiteClient
from jobtriggers.models import Operation, iso

JOB = {"id": "am9i", "workflow": {"id": "wf"}, "config": {"object_id": "obj-1"}, "created_at": "2025-01-01"}


def operation(lease_seconds: float, cancel_requested: bool = False) -> dict[str, Any]:
    lease_end = iso(datetime.now(UTC) + timedelta(seconds=lease_seconds))
    metadata: dict[str, Any] = {"job": JOB, "attempt": 1, "lease_expires_at": lease_end}
    if cancel_requested:
        metadata["cancel_requested"] = True
    return {"id": "op1", "done": False, "expire_time": lease_end, "result": None, "metadata": metadata}


class Api:
    """PATCH /operations/op1: heartbeats answer the live operation (cancel requested from the
    `cancel_from`-th beat on); a report answers it done. Every PATCH body is kept, with its time."""

    def __init__(self, cancel_from: int | None = None, answer_delay: float = 0.0) -> None:
        self.cancel_from = cancel_from
        self.answer_delay = answer_delay
        self.patches: list[tuple[float, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "bearer", "expires_in": 3600})
        body = json.loads(request.content or b"{}")
        self.patches.append((time.monotonic(), body))
        time.sleep(self.answer_delay)
        if body.get("done"):
            return httpx.Response(200, json={**operation(0), "done": True, "result": body.get("result")})
        beats = sum(1 for _, b in self.patches if not b.get("done"))
        cancelled = self.cancel_from is not None and beats >= self.cancel_from
        return httpx.Response(200, json=operation(3, cancel_requested=cancelled))


def site_client(api: Api) -> SiteClient:
    return SiteClient("https://api.example.org", "cid", "secret", transport=httpx.MockTransport(api))


def start(script: str, tmp_path: Path) -> Any:
    import subprocess

    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        start_new_session=True,  # as run_one starts commands
        text=True,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


def test_the_stopper_stops_what_the_command_started_too(tmp_path: Path) -> None:
    # Given a command that starts a child of its own (as a shell script does) and waits for it
    proc = start(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "open('child.pid', 'w').write(str(child.pid))\n"
        "child.wait()\n",
        tmp_path,
    )
    while not (tmp_path / "child.pid").exists() or not (tmp_path / "child.pid").read_text():
        time.sleep(0.02)
    child = int((tmp_path / "child.pid").read_text())
    # When it is stopped
    stopper = Stopper(proc, grace=5)
    stopper.stop()
    # Then the command and its child are gone, on SIGTERM alone
    assert proc.returncode == -signal.SIGTERM
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)
    assert (stopper.stopped, stopper.killed) == (True, False)


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    proc = start(
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open('ready', 'w').close()\n"
        "time.sleep(60)\n",
        tmp_path,
    )
    while not (tmp_path / "ready").exists():
        time.sleep(0.02)
    stopper = Stopper(proc, grace=0.5)
    started = time.monotonic()
    stopper.stop()
    proc.wait(timeout=5)
    assert proc.returncode == -signal.SIGKILL
    assert (stopper.stopped, stopper.killed) == (True, True)
    assert time.monotonic() - started >= 0.5


def test_a_command_that_ended_is_not_stopped(tmp_path: Path) -> None:
    proc = start("pass", tmp_path)
    proc.wait(timeout=10)
    stopper = Stopper(proc, grace=1)
    stopper.stop()
    assert stopper.stopped is False


def test_a_cancel_read_on_a_heartbeat_stops_the_command_and_reports_cancelled(tmp_path: Path) -> None:
    # Given a 3 s lease (a heartbeat a second), and an API that says "cancel requested" from the
    # second heartbeat on
    api = Api(cancel_from=2)
    op = Operation.model_validate(operation(3))
    script = (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        "    sys.stderr.write('stopping on request\\n'); sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "time.sleep(60)\n"
    )
    # When the worker runs a command that would take a minute
    started = time.monotonic()
    with site_client(api) as client:
        outcome = run_one(client, op, [sys.executable, "-c", script], grace=5)
    took = time.monotonic() - started
    # Then it stopped at the second heartbeat, and reported the error `cancelled` with the command's words
    assert outcome.status == "cancelled"
    assert took < 10
    *beats, (_, report) = api.patches
    assert [b for _, b in beats][:2] == [{}, {}]
    assert report["done"] is True
    assert report["result"]["code"] == "cancelled"
    assert report["result"]["message"] == "the job was cancelled: the command was stopped (SIGTERM)"
    assert report["result"]["details"]["returncode"] == 143
    assert "stopping on request" in report["result"]["details"]["stderr_tail"]
    assert outcome.result == report["result"]


def test_a_command_that_finishes_before_the_cancel_reaches_it_reports_its_own_result() -> None:
    # Given an API that says "cancel requested" on every heartbeat, and a command that is quicker
    api = Api(cancel_from=1)
    op = Operation.model_validate(operation(3))
    with site_client(api) as client:
        outcome = run_one(client, op, [sys.executable, "-c", 'print(\'{"outputs": ["x"]}\')'])
    # Then its success is reported (the work happened), with no heartbeat in between
    assert outcome.status == "done"
    assert [b for _, b in api.patches] == [{"done": True, "result": {"outputs": ["x"]}}]


def test_heartbeats_keep_their_pace_when_answers_are_slow() -> None:
    # Given a 3 s lease (a beat every second) and answers that take 0.4 s
    api = Api(answer_delay=0.4)
    op = Operation.model_validate(operation(3))
    stopped = threading.Event()
    with site_client(api) as client, Heartbeat(client, op, on_lost=stopped.set) as beat:
        time.sleep(4.3)
    # Then beats start a second apart, not 1.4 s: a cancel is read within one interval of being asked
    starts = [t for t, _ in api.patches]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert beat.interval <= 1.01
    assert len(starts) >= 4, starts
    assert all(0.9 <= g <= 1.2 for g in gaps), gaps
    assert not stopped.is_set()


class StoppedWhileReporting(Api):
    """An API whose answer to the report comes with a SIGTERM to this process: the batch system (or a
    test) stopping the worker between the job's completion and the worker printing it."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = super().__call__(request)
        if request.method == "PATCH" and json.loads(request.content or b"{}").get("done"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs at the main thread's next instruction
        return response


def test_a_stop_asked_for_while_a_result_is_reported_waits_until_the_outcome_is_out() -> None:
    # Given a worker's SIGTERM handling (Ctrl-C's), and a stop that arrives as the report is answered
    from jobtriggers.cli.worker import DeferredStop

    before = signal.signal(signal.SIGTERM, signal.default_int_handler)
    stop = DeferredStop()
    api = StoppedWhileReporting()
    op = Operation.model_validate(operation(3))
    printed: list[str] = []
    try:
        with site_client(api) as client:
            try:
                outcome = run_one(client, op, [sys.executable, "-c", "print('{\"n\": 1}')"], stop=stop)
                printed.append(outcome.status)  # what the loop prints next
            finally:
                # Then the stop waits for the outcome, and happens once it is out
                try:
                    stop.release()
                    stopped = False
                except KeyboardInterrupt:
                    stopped = True
        assert printed == ["done"] and stopped
        # And the handler the worker had is back
        assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, before)
