"""`jobtriggers jobs list|show|cancel|rerun|release` against moto: what operators find and steer.

Jobs are made as the service makes them (Job.new + create) and moved by the claim service and
JobSteering, so every listing reads items the service wrote. Tables are the module's (creating them
per test costs seconds); each test keeps to a workflow of its own.
"""

from __future__ import annotations

import getpass
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from jobtriggers.cli import jobs as jobs_cli
from jobtriggers.cli.common import caller_name, operator_name
from jobtriggers.cli.jobs import Action, read_job_ids, steer_all
from jobtriggers.dal.jobs import JobRepository
from jobtriggers.dal.operations import OperationRepository
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.logic.claims import ClaimService, SiteRef
from jobtriggers.logic.lifecycle import JobSteering
from jobtriggers.models import Workflow, iso, utcnow
from tests.api_events import module_tables, use_tables
from tests.jobs import put_new_job, report, stored_job

runner = CliRunner()
T0 = datetime(2025, 1, 1, tzinfo=UTC)
A, B = SiteRef.of("site-a"), SiteRef.of("site-b")
ERROR = {
    "code": "exit_3",
    "message": "the command exited with status 3",
    "details": {"stderr_tail": "loading\nreference genome missing\n"},
}
ME = f"operator:{getpass.getuser()}"
WIDE = {"COLUMNS": "400"}  # rich tables in full, one row a line


@pytest.fixture(scope="module")
def cli_tables(dynamo_endpoint: str) -> dict[str, str]:
    return module_tables(seed=False)


@pytest.fixture(autouse=True)
def _tables(cli_tables: dict[str, str]) -> None:
    use_tables(cli_tables)


def invoke(args: list[str], input: str | None = None) -> Result:
    return runner.invoke(jobs_cli.app, args, input=input, env=WIDE)


def as_json(args: list[str], input: str | None = None, exit_code: int = 0) -> Any:
    result = invoke([*args, "--json"], input)
    assert result.exit_code == exit_code, result.output
    return json.loads(result.stdout)


def text(result: Result) -> str:
    return " ".join(result.output.split())


@dataclass
class Jobs:
    """One job in each state an operator meets, of a workflow of its own (lease 600 s, 1 attempt)."""

    workflow_id: str
    pending: str
    claimed: str  # by site-a, lease live
    lease_ended: str  # by site-b, lease ended an hour ago
    failed: str
    done: str
    claimed_op: str


def claims_at(when: Callable[[], datetime]) -> ClaimService:
    return ClaimService(JobRepository(), OperationRepository(), RegistryRepository(), clock=when)


@pytest.fixture
def world() -> Jobs:
    wf = f"cli-wf-{uuid.uuid4().hex[:8]}"
    RegistryRepository().put(
        "workflow", Workflow(id=wf, name=wf, created_at=T0, lease_seconds=600, max_attempts=1)
    )
    names = ("pending", "claimed", "lease_ended", "failed", "done")
    ids = {name: put_new_job(wf, f"{name}-obj", iso(utcnow())).id for name in names}
    now = claims_at(utcnow)
    claimed_op = now.claim(ids["claimed"], A).operation.id
    claims_at(lambda: utcnow() - timedelta(hours=1)).claim(ids["lease_ended"], B)
    op = now.claim(ids["failed"], A).operation.id
    now.update_operation(op, A, report(done=True, result=ERROR))
    op = now.claim(ids["done"], B).operation.id
    now.update_operation(op, B, report(done=True, result={"outputs": ["x.out"]}))
    return Jobs(
        workflow_id=wf,
        pending=ids["pending"],
        claimed=ids["claimed"],
        lease_ended=ids["lease_ended"],
        failed=ids["failed"],
        done=ids["done"],
        claimed_op=claimed_op,
    )


# --------------------------------------------------------------------------- list


def test_list_failed_shows_each_with_its_last_error_and_attempts(world: Jobs) -> None:
    # When an operator lists the workflow's failed jobs
    result = invoke(["list", "--workflow", world.workflow_id, "--status", "failed"])
    # Then the table holds that one job, its attempts against the limit and its last error
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if world.failed in line]
    assert "failed" in row and "1/1" in row and "site-a" in row
    assert "exit_3: the command exited with status 3" in row
    assert world.pending not in result.output and world.done not in result.output
    # And --json gives the jobs whole, for scripts
    listed = as_json(["list", "--workflow", world.workflow_id, "--status", "failed"])
    assert [(j["id"], j["status"], j["last_error"]["code"]) for j in listed] == [
        (world.failed, "failed", "exit_3")
    ]


def test_list_claimed_shows_lease_ends_and_lease_ended_finds_the_stuck_ones(world: Jobs) -> None:
    # When an operator lists the claimed jobs
    result = invoke(["list", "--workflow", world.workflow_id, "--status", "claimed"])
    assert result.exit_code == 0, result.output
    rows = {line for line in result.output.splitlines() if world.workflow_id in line}
    [live] = [r for r in rows if world.claimed in r]
    [stuck] = [r for r in rows if world.lease_ended in r]
    # Then each shows its holder and when its lease ends (or ended)
    assert "site-a" in live and "ends in 9m" in live
    assert "site-b" in stuck and "ended 50m" in stuck and " ago" in stuck
    # And --lease-ended lists only the one whose holder went silent
    stuck_ids = [j["id"] for j in as_json(["list", "--workflow", world.workflow_id, "--lease-ended"])]
    assert stuck_ids == [world.lease_ended]
    # (narrowed by site, which the queue of ended leases filters)
    assert as_json(["list", "--lease-ended", "--workflow", world.workflow_id, "--site", "site-a"]) == []


def test_list_filters_by_site_object_error_and_cancel_requested(world: Jobs) -> None:
    wf = world.workflow_id

    def ids(*args: str) -> set[str]:
        return {j["id"] for j in as_json(["list", *args]) if j["workflow"]["id"] == wf}

    # By the site holding (or last holding) the job, by object, by the last error's code
    assert ids("--site", "site-a") == {world.claimed, world.failed}
    assert ids("--object", "done-obj", "--workflow", wf) == {world.done}
    assert ids("--workflow", wf, "--error", "exit_3") == {world.failed}
    # By a cancel asked and not yet reached
    assert ids("--workflow", wf, "--cancel-requested") == set()
    JobSteering(JobRepository()).cancel(world.claimed, ME)
    assert ids("--workflow", wf, "--cancel-requested") == {world.claimed}
    listing = invoke(["list", "--workflow", wf]).output
    row = next(line for line in listing.splitlines() if world.claimed in line)
    assert "claimed, cancel requested" in row


def test_list_stops_at_its_limit_and_says_more_match(world: Jobs) -> None:
    result = invoke(["list", "--workflow", world.workflow_id, "--limit", "2"])
    assert result.exit_code == 0
    assert "jobs (2+)" in result.output and "more jobs match" in text(result)
    listed = as_json(["list", "--workflow", world.workflow_id, "--limit", "2"])
    assert len(listed) == 2
    assert len(as_json(["list", "--workflow", world.workflow_id])) == 5


def test_list_refuses_contradictory_or_unknown_filters() -> None:
    result = invoke(["list", "--lease-ended", "--status", "done"])
    assert result.exit_code == 2 and "--lease-ended lists claimed jobs" in text(result)
    result = invoke(["list", "--status", "stuck"])
    assert result.exit_code == 2 and "stuck" in result.output


# --------------------------------------------------------------------------- show


def test_show_gives_the_job_its_operations_across_runs_and_its_last_error(world: Jobs) -> None:
    # Given the failed job rerun and claimed again
    failed_op = stored_job(world.failed)["operation_id"]
    JobSteering(JobRepository()).rerun(world.failed, ME)
    second_op = claims_at(utcnow).claim(world.failed, B).operation.id
    # When an operator shows it
    shown = as_json(["show", world.failed])
    # Then both operations are there, the earlier run's first, with their outcomes
    assert [(o["id"], o["run"], o["site_id"], o["done"]) for o in shown["operations"]] == [
        (failed_op, "earlier", "site-a", True),
        (second_op, "current", "site-b", False),
    ]
    assert shown["operations"][0]["result"] == ERROR
    assert shown["job"]["status"] == "claimed" and shown["job"]["run"] == 2
    # And the table says the same for people
    result = invoke(["show", world.failed])
    assert result.exit_code == 0, result.output
    [earlier] = [line for line in result.output.splitlines() if failed_op in line]
    [current] = [line for line in result.output.splitlines() if second_op in line and "site-b" in line]
    assert "earlier" in earlier and "error exit_3" in earlier
    assert "current" in current and "running" in current
    assert "operations (2)" in result.output


def test_show_of_a_failed_job_prints_its_error_and_stderr_tail(world: Jobs) -> None:
    result = invoke(["show", world.failed])
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if "last error " in line]
    assert "exit_3: the command exited with status 3" in row
    out = text(result)
    assert "last error's stderr" in out and "reference genome missing" in out
    assert as_json(["show", world.failed])["last_error"] == ERROR


def test_show_of_an_unknown_job_says_so() -> None:
    result = invoke(["show", "bm8tc3VjaCNqb2I"])
    assert result.exit_code == 1 and "job 'bm8tc3VjaCNqb2I' does not exist" in text(result)
    result = invoke(["show", "not a job id!"])
    assert result.exit_code == 1 and "does not exist" in text(result)


# --------------------------------------------------------------------------- cancel, rerun, release


def test_cancel_acts_on_each_id_and_says_why_it_refused_some(world: Jobs) -> None:
    unknown = "bm8tc3VjaCNqb2I"
    ids = [world.pending, world.claimed, world.done, unknown]
    # When an operator cancels four jobs at once
    outcomes = as_json(["cancel", *ids], exit_code=1)
    # Then each has its outcome, in the order given; refusals say why, and the exit status is 1
    by_id = {o["job_id"]: o for o in outcomes}
    assert [o["job_id"] for o in outcomes] == ids
    assert (by_id[world.pending]["outcome"], by_id[world.pending]["status"]) == ("done", "cancelled")
    assert by_id[world.claimed]["outcome"] == "done"
    assert by_id[world.claimed]["status"] == "claimed, cancel requested"
    assert "site 'site-a' stops at its next heartbeat" in by_id[world.claimed]["message"]
    assert by_id[world.done]["outcome"] == "refused"
    assert "only pending, claimed or failed jobs can be cancelled" in by_id[world.done]["message"]
    assert (by_id[unknown]["outcome"], by_id[unknown]["status"]) == ("refused", None)
    assert "does not exist" in by_id[unknown]["message"]
    # And the store says the same, each change made by this operator
    assert stored_job(world.pending)["status"] == "cancelled"
    assert stored_job(world.pending)["transition"]["by"] == ME
    claimed = stored_job(world.claimed)
    assert (claimed["status"], claimed["cancel_requested"], claimed["transition"]["by"]) == (
        "claimed",
        True,
        ME,
    )
    assert stored_job(world.done)["status"] == "done"


def test_a_refusal_in_the_table_says_why_and_the_summary_counts(world: Jobs) -> None:
    result = invoke(["cancel", world.pending, world.done])
    assert result.exit_code == 1
    [row] = [line for line in result.output.splitlines() if world.done in line]
    assert "refused" in row and "only pending, claimed or failed jobs can be cancelled" in row
    [row] = [line for line in result.output.splitlines() if world.pending in line]
    assert "done" in row and "cancelled" in row
    assert "cancel: 1 done, 1 refused" in text(result)


def test_rerun_reads_ids_from_a_file_and_from_stdin(world: Jobs, tmp_path: Path) -> None:
    # Given a file of ids with a comment and a blank line, and a job id repeated
    ids_file = tmp_path / "failed.txt"
    ids_file.write_text(f"# last night's failures\n{world.failed}\n\n{world.done}  # and this one\n")
    # When an operator reruns what the file lists, and the same ids again on stdin
    outcomes = as_json(["rerun", "--from", str(ids_file)])
    # Then both are pending again, in a second run, with a fresh budget
    assert [(o["job_id"], o["outcome"], o["status"]) for o in outcomes] == [
        (world.failed, "done", "pending"),
        (world.done, "done", "pending"),
    ]
    for job_id in (world.failed, world.done):
        item = stored_job(job_id)
        assert (item["status"], item["run"], item["attempts"], item["transition"]["by"]) == (
            "pending",
            2,
            0,
            ME,
        )
    # And ids piped in (`-`), with the file's ids given twice, are each acted on once
    piped = as_json(
        ["rerun", "-", "--from", "-"], input=f"{world.failed}\n{world.failed} {world.pending}\n", exit_code=1
    )
    assert [(o["job_id"], o["outcome"]) for o in piped] == [
        (world.failed, "refused"),
        (world.pending, "refused"),
    ]
    assert "only done, failed or cancelled jobs can be rerun" in piped[0]["message"]


def test_rerun_of_all_done_exits_zero(world: Jobs) -> None:
    result = invoke(["rerun", world.done, world.failed])
    assert result.exit_code == 0, result.output
    assert "rerun: 2 done" in text(result)


def test_release_hands_claimed_jobs_back_and_refuses_the_others(world: Jobs) -> None:
    outcomes = as_json(["release", world.claimed, world.lease_ended, world.pending], exit_code=1)
    assert [(o["outcome"], o["status"]) for o in outcomes] == [
        ("done", "pending"),
        ("done", "pending"),
        ("refused", None),
    ]
    assert "not claimed; there is nothing to release" in outcomes[2]["message"]
    item = stored_job(world.claimed)
    assert (item["status"], item["attempts"], item["transition"]["by"]) == ("pending", 0, ME)
    assert item["transition"]["events"] == ["job.released"]
    op = OperationRepository().get(world.claimed_op)
    assert op is not None and op.done and op.metadata["cancelled"] is True


def test_release_of_a_cancel_requested_job_cancels_it(world: Jobs) -> None:
    JobSteering(JobRepository()).cancel(world.claimed, ME)
    [outcome] = as_json(["release", world.claimed])
    assert (outcome["outcome"], outcome["status"]) == ("done", "cancelled")
    assert "a cancel had been asked" in outcome["message"]


@pytest.mark.parametrize("action", ["cancel", "rerun", "release"])
def test_no_ids_is_a_usage_error(action: str) -> None:
    result = invoke([action])
    assert result.exit_code == 2 and "no job ids" in text(result)
    result = invoke([action, "-"], input="# nothing here\n\n")
    assert result.exit_code == 2 and "no job ids" in text(result)


def test_an_unreadable_ids_file_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke(["cancel", "--from", str(tmp_path / "missing.txt")])
    assert result.exit_code == 2 and "cannot read" in text(result)


def test_read_job_ids_keeps_order_drops_repeats_and_comments() -> None:
    stdin = io.StringIO("c a # two\n#all comment\n d\n")
    assert read_job_ids(["a", "b", "-"], None, stdin) == ["a", "b", "c", "d"]


def test_a_long_bulk_action_shows_a_progress_bar_on_a_terminal(
    world: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a terminal, and a dozen jobs to rerun (the done one repeated under other names does not
    # exist: each is refused, which is work all the same)
    screen = io.StringIO()
    monkeypatch.setattr(jobs_cli, "err_console", Console(file=screen, force_terminal=True, width=100))
    ids = [world.done] + [f"bm8tc3VjaCNqb2{i}" for i in range(11)]
    # When they are steered with the bar on
    outcomes = steer_all(JobSteering(JobRepository()), Action.rerun, ids, ME, show_progress=True)
    # Then the bar was drawn, and every id has its outcome in order
    assert "rerun 12 jobs" in screen.getvalue()
    assert [o.job_id for o in outcomes] == ids
    assert [o.outcome for o in outcomes] == ["done"] + ["refused"] * 11


# --------------------------------------------------------------------------- who


def test_the_operator_is_the_os_user_locally_and_the_aws_caller_with_a_stack(
    dynamo_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert operator_name(None) == ME
    # With --stack: the caller STS names (moto's STS here, as a deployed stack's would be AWS's)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", dynamo_endpoint)
    assert operator_name("any-stack").startswith("operator:")
    assert operator_name("any-stack") != "operator:"
    assert caller_name("arn:aws:iam::123456789012:user/alice") == "alice"
    assert caller_name("arn:aws:sts::123456789012:assumed-role/Admin/alice@example.org") == (
        "Admin/alice@example.org"
    )
    assert caller_name("arn:aws:iam::123456789012:root") == "root"
