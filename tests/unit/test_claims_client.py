"""The site client (httpx MockTransport, no network) and the worker's helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from jobtriggers.cli.site_jobs import load_config
from jobtriggers.cli.worker import error_result, last_json_object
from jobtriggers.client import Conflict, Forbidden, Invalid, NotFound, SiteClient, Unavailable

OP = {"id": "op1", "done": False, "expire_time": "2025-01-01T01:00:00.000Z", "result": None, "metadata": {}}


class Api:
    """A scripted API: answers from `handler`, records every request, hands out numbered tokens."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response], expires_in: int = 3600) -> None:
        self.handler = handler
        self.expires_in = expires_in
        self.requests: list[httpx.Request] = []
        self.tokens = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/token":
            self.tokens += 1
            return httpx.Response(
                200,
                json={
                    "access_token": f"t{self.tokens}",
                    "token_type": "bearer",
                    "expires_in": self.expires_in,
                },
            )
        return self.handler(request)

    def calls(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == path]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(api: Api, clock: Clock | None = None, sleeps: list[float] | None = None) -> SiteClient:
    return SiteClient(
        "https://api.example.org",
        "cid",
        "secret",
        transport=httpx.MockTransport(api),
        sleep=(sleeps.append if sleeps is not None else lambda s: None),
        clock=clock or Clock(),
    )


def test_token_is_fetched_once_sent_as_bearer_and_refreshed_before_expiry() -> None:
    # Given an API whose tokens live 600 s
    api = Api(lambda r: httpx.Response(200, json=OP), expires_in=600)
    clock = Clock()
    site = client(api, clock)
    # When the client makes two calls, then one 560 s later (inside the last tenth of the token's life)
    site.get_operation("op1")
    site.get_operation("op1")
    clock.now += 560
    site.get_operation("op1")
    # Then it fetched a token (form, client credentials) once, and again before the first expired
    token_calls = api.calls("/token")
    assert len(token_calls) == 2
    assert (
        b"grant_type=client_credentials" in token_calls[0].content
        and b"client_secret=secret" in token_calls[0].content
    )
    auth = [r.headers["Authorization"] for r in api.calls("/operations/op1")]
    assert auth == ["Bearer t1", "Bearer t1", "Bearer t2"]


def test_a_401_fetches_a_new_token_once() -> None:
    # Given an API that refuses the first token
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer t1":
            return httpx.Response(401, json={"detail": "token of site predates its latest secret rotation"})
        return httpx.Response(200, json=OP)

    api = Api(handler)
    # When the client calls, Then it retried with a fresh token and succeeded
    assert client(api).get_operation("op1").id == "op1"
    assert api.tokens == 2


@pytest.mark.parametrize("status", [429, 502, 503])
def test_transient_answers_are_retried_with_backoff(status: int) -> None:
    # Given an API that is busy twice
    answers = iter([httpx.Response(status, json={"detail": "busy"})] * 2 + [httpx.Response(200, json=OP)])
    api = Api(lambda r: next(answers))
    sleeps: list[float] = []
    # When the client claims, Then it waited twice (bounded, growing ceilings) and got the operation
    assert client(api, sleeps=sleeps).claim("job1").id == "op1"
    assert len(sleeps) == 2 and all(0 <= s <= 20 for s in sleeps)


def test_retry_after_is_honoured_and_retries_are_bounded() -> None:
    # Given an API that stays unavailable and says when to come back
    api = Api(lambda r: httpx.Response(503, headers={"Retry-After": "2"}, json={"detail": "store busy"}))
    sleeps: list[float] = []
    # When the client calls, Then it waited as told, gave up after max_retries, and raised Unavailable
    with pytest.raises(Unavailable, match="store busy"):
        client(api, sleeps=sleeps).get_operation("op1")
    assert sleeps == [2.0] * 5
    assert len(api.calls("/operations/op1")) == 6


def test_connection_errors_are_retried_then_reported() -> None:
    # Given an API that cannot be reached
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    api = Api(handler)
    # When the client calls, Then it tried 1 + 5 times and raised Unavailable naming the URL
    with pytest.raises(Unavailable, match=r"api\.example\.org"):
        client(api).get_job("j")
    assert len(api.calls("/jobs/j")) == 6


@pytest.mark.parametrize(
    ("status", "error"), [(403, Forbidden), (404, NotFound), (409, Conflict), (422, Invalid)]
)
def test_errors_are_typed_and_carry_the_detail(status: int, error: type[Exception]) -> None:
    # Given an API that answers with an error, When called, Then the matching type carries `detail`
    api = Api(lambda r: httpx.Response(status, json={"detail": "job 'j' is claimed by site 'b'"}))
    with pytest.raises(error) as raised:
        client(api).claim("j")
    assert raised.value.detail == "job 'j' is claimed by site 'b'"  # type: ignore[attr-defined]
    assert len(api.calls("/jobs/j:claim")) == 1  # never retried


def test_claim_next_none_on_204_and_pages_are_followed() -> None:
    # Given an API with no claimable job and two pages of operations
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/jobs:claim":
            assert json.loads(request.content) == {"workflow_id": "wf"}
            return httpx.Response(204)
        if request.url.params.get("page_token") == "p2":
            return httpx.Response(200, json={"resources": [{**OP, "id": "op2"}], "next_page_token": None})
        return httpx.Response(200, json={"resources": [OP], "next_page_token": "p2"})

    site = client(Api(handler))
    # When it claims the next job and lists operations, Then None, and both pages' operations
    assert site.claim_next("wf") is None
    assert [o.id for o in site.list_operations(done=False)] == ["op1", "op2"]


def test_complete_retried_after_it_went_through_is_success() -> None:
    # Given a completion whose first answer was lost: the retry finds the operation done (409)
    result = {"outputs": ["o"]}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            return httpx.Response(409, json={"detail": "operation 'op1' is finished (done)"})
        return httpx.Response(200, json={**OP, "done": True, "result": result})

    site = client(Api(handler))
    # When complete() sees the 409, Then it checks the operation and reports success
    assert site.complete("op1", result).done is True
    # But a 409 for an operation finished otherwise (fenced off) is raised
    with pytest.raises(Conflict):
        site.complete("op1", {"outputs": ["other"]})


def test_error_report_shape() -> None:
    # Given a patch recorder, When fail() is called, Then the body is the NMDC OperationError shape
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={**OP, "done": True})

    client(Api(handler)).fail("op1", "exit_2", "failed", {"stderr_tail": "x"})
    assert bodies == [
        {"done": True, "result": {"code": "exit_2", "message": "failed", "details": {"stderr_tail": "x"}}}
    ]


def test_the_secret_never_shows_in_repr() -> None:
    # Given a client, When printed, Then the secret is not in it
    assert "secret" not in repr(client(Api(lambda r: httpx.Response(200))))


# --------------------------------------------------------------------------- worker helpers


def test_result_is_the_last_json_object_line() -> None:
    # Given a command's stdout with logs, two JSON objects and a trailing non-JSON line
    out = 'starting\n{"outputs": ["a"]}\nlog {not json}\n[1, 2]\n{"outputs": ["b"]}\ndone\n'
    # When parsed, Then the last line that is a JSON object wins; none at all is None
    assert last_json_object(out) == {"outputs": ["b"]}
    assert last_json_object("no json here\n42\n") is None


def test_error_result_names_exit_status_or_signal_and_keeps_a_stderr_tail() -> None:
    # Given a long stderr, When a command exits 3 or is killed by signal 9
    stderr = "x" * 10_000 + "the end"
    exited, killed = error_result(3, stderr), error_result(-9, "")
    # Then the codes say which, and only the tail of stderr is kept
    assert exited["code"] == "exit_3" and exited["details"]["stderr_tail"].endswith("the end")
    assert len(exited["details"]["stderr_tail"]) == 4000
    assert killed["code"] == "signal_9"


def test_config_from_environment_then_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a config file with everything, and an environment overriding the URL
    path = tmp_path / "site.toml"
    path.write_text('url = "https://file"\nclient_id = "cid"\nclient_secret = "s3cret"\n')
    path.chmod(0o600)
    env = {"JOBTRIGGERS_CONFIG": str(path), "JOBTRIGGERS_URL": "https://env"}
    # When loaded, Then the environment wins and the file fills the rest; repr hides the secret
    config = load_config(env)
    assert (config.url, config.client_id, config.client_secret) == ("https://env", "cid", "s3cret")
    assert "s3cret" not in repr(config)
    # And with nothing configured, the command stops with a message naming what is missing
    with pytest.raises(typer.Exit):
        load_config({"JOBTRIGGERS_CONFIG": str(tmp_path / "missing.toml")})
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/jobtriggers/site.toml
    with pytest.raises(typer.Exit):
        load_config({"JOBTRIGGERS_URL": "https://env"})


# --------------------------------------------------------------------------- claims that may be retried


def test_claim_next_sends_one_idempotency_key_through_its_retries() -> None:
    # Given an API whose first claim answer is lost (502), then answered; then a second claim
    answers = iter(
        [
            httpx.Response(502, json={"detail": "bad gateway"}),
            httpx.Response(200, json=OP),
            httpx.Response(204),
        ]
    )
    api = Api(lambda r: next(answers))
    site = client(api)
    # When the site claims twice
    assert site.claim_next("wf") is not None
    assert site.claim_next("wf") is None
    # Then the first claim's two requests carried the same key, and the second claim a new one
    keys = [r.headers.get("Idempotency-Key") for r in api.calls("/jobs:claim")]
    assert len(keys) == 3 and keys[0] and keys[0] == keys[1] != keys[2]


def test_claim_next_waits_out_a_retry_that_overtook_the_first_request() -> None:
    # Given an API still answering the first request with this key (409), then answering
    answers = iter(
        [httpx.Response(409, json={"detail": "still being answered"}), httpx.Response(200, json=OP)]
    )
    api = Api(lambda r: next(answers))
    sleeps: list[float] = []
    # When the site claims with its own key, Then it waited once and got the operation, with that key
    assert client(api, sleeps=sleeps).claim_next(idempotency_key="k-1") is not None
    assert len(sleeps) == 1
    assert [r.headers["Idempotency-Key"] for r in api.calls("/jobs:claim")] == ["k-1", "k-1"]


def test_site_work_outlives_server_faults_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from typer.testing import CliRunner

    from jobtriggers.cli import site_jobs, worker

    # Given an API that fails the first claims (a 500, then 503s through all the client's retries,
    # then unreachable), then hands out one job and then has none
    lease_end = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    job_op = {**OP, "metadata": {"job": {"id": "job-1"}, "attempt": 1, "lease_expires_at": lease_end}}
    claim_answers = iter(
        [httpx.Response(500, json={"detail": "internal error; it has been logged"})]
        + [httpx.Response(503, json={"detail": "the store is busy"})] * 6
        + ["unreachable"] * 6
        + [httpx.Response(200, json=job_op), httpx.Response(204)]
    )
    reports: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/jobs:claim":
            answer = next(claim_answers)
            if answer == "unreachable":
                raise httpx.ConnectError("connection refused", request=request)
            return answer  # type: ignore[return-value]
        reports.append(json.loads(request.content))
        return httpx.Response(200, json={**job_op, "done": True})

    api = Api(handler)
    monkeypatch.setattr(worker, "site_client", lambda: client(api))
    pauses: list[float] = []
    monkeypatch.setattr(worker.time, "sleep", pauses.append)
    # When the worker runs until no job is left
    result = CliRunner().invoke(
        site_jobs.app,
        ["work", "--workflow", "wf", "--", sys.executable, "-c", 'print(\'{"outputs": ["o"]}\')'],
    )
    # Then it did not die: it waited three times (growing pauses), saying why, then ran the job
    assert result.exit_code == 0, result.output
    assert len(pauses) == 3 and pauses[0] <= pauses[2]
    assert "500" in result.output and "the store is busy" in result.output and "unreachable" in result.output
    assert reports == [{"done": True, "result": {"outputs": ["o"]}}]
    # And every try of the claim that failed carried one key; the next claim a new one
    keys = [r.headers["Idempotency-Key"] for r in api.calls("/jobs:claim")]
    assert len(set(keys[:-1])) == 1 and keys[-1] != keys[0]


@pytest.mark.parametrize("status", [401, 403, 422])
def test_site_work_stops_on_answers_retrying_cannot_change(
    monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    import sys

    from typer.testing import CliRunner

    from jobtriggers.cli import site_jobs, worker

    # Given an API that refuses the claim for a reason of the site's own
    api = Api(lambda r: httpx.Response(status, json={"detail": "workflow 'wf' does not exist"}))
    monkeypatch.setattr(worker, "site_client", lambda: client(api))
    monkeypatch.setattr(worker.time, "sleep", lambda s: None)
    # When the worker runs, Then it stops with the API's explanation
    result = CliRunner().invoke(
        site_jobs.app, ["work", "--workflow", "wf", "--", sys.executable, "-c", "pass"]
    )
    assert result.exit_code == 1 and "does not exist" in result.output
