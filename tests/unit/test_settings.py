"""Settings that cannot be missing have no defaults (issue 8, item 12).

A Lambda whose environment lacks a table name (or the signing key's source) must fail at cold
start with a message naming every missing variable, not talk to a table that does not exist. The
handlers are loaded in fresh interpreters, from their files, as Lambda loads them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from jobtriggers.settings import reset_settings_cache, table_names
from tests.conftest import ROOT, SEED_DIR

TABLE_VARIABLES = (
    "REGISTRY_TABLE",
    "SITES_TABLE",
    "OBJECTS_TABLE",
    "OBJECT_TYPES_TABLE",
    "JOBS_TABLE",
    "OPERATIONS_TABLE",
)
TOKEN_KEY_VARIABLES = ("SIGNING_KEY_SECRET_ARN", "SIGNING_KEY")
# Handler -> the variables it cannot start without (besides the table names).
HANDLERS = {
    "api": ("IDEMPOTENCY_TABLE",),
    "authorizer": TOKEN_KEY_VARIABLES,
    "token": TOKEN_KEY_VARIABLES,
    "trigger_resolver": (),
    "reconciler": (),
}

_LOAD = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print("LOADED", callable(module.lambda_handler))
"""


def _environment_without(*variables: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in variables}
    env.update({"POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true", **extra})
    return env


def _load_handler(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _LOAD, str(ROOT / "functions" / name / "app.py")],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


@pytest.fixture
def empty_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in (*TABLE_VARIABLES, *TOKEN_KEY_VARIABLES):
        monkeypatch.delenv(var, raising=False)
    reset_settings_cache()
    yield
    monkeypatch.undo()
    reset_settings_cache()


def test_table_names_in_an_empty_environment_name_every_missing_variable(empty_environment: None) -> None:
    # Given no table names in the environment
    # When the table names are read
    with pytest.raises(Exception) as raised:  # any type: dbed692 has no SettingsError to name
        table_names()
    # Then it fails, naming each one (not `jobtriggers-jobs` and friends)
    for var in TABLE_VARIABLES:
        assert var in str(raised.value)


def test_an_empty_variable_counts_as_missing(
    empty_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in TABLE_VARIABLES:
        monkeypatch.setenv(var, f"t-{var.lower()}")
    monkeypatch.setenv("JOBS_TABLE", "")
    with pytest.raises(Exception) as raised:
        table_names()
    assert "JOBS_TABLE" in str(raised.value)
    assert "REGISTRY_TABLE" not in str(raised.value)


@pytest.mark.parametrize("handler", sorted(HANDLERS))
def test_a_handler_without_its_variables_fails_at_import_naming_every_one(handler: str) -> None:
    # Given an environment without any table name (nor the token key's source)
    missing = (*TABLE_VARIABLES, *HANDLERS[handler])
    env = _environment_without(*TABLE_VARIABLES, *TOKEN_KEY_VARIABLES, *HANDLERS[handler])
    # When the handler is loaded as Lambda loads it
    proc = _load_handler(handler, env)
    # Then the cold start fails, and its message names every missing variable
    assert proc.returncode != 0, f"{handler} started without {missing}: {proc.stdout}"
    for var in missing:
        assert var in proc.stderr, f"{handler}'s failure does not name {var}: {proc.stderr[-1500:]}"


@pytest.mark.parametrize("handler", sorted(HANDLERS))
def test_a_handler_with_its_variables_loads(handler: str) -> None:
    env = _environment_without(
        *TOKEN_KEY_VARIABLES,
        **{var: f"t-{var.lower()}" for var in TABLE_VARIABLES},
        IDEMPOTENCY_TABLE="t-idempotency",
        SIGNING_KEY_SECRET_ARN="arn:aws:secretsmanager:us-east-1:123456789012:secret:k",
    )
    proc = _load_handler(handler, env)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "LOADED True" in proc.stdout


class _CloudFormation(BaseHTTPRequestHandler):
    """The pre-signed ResponseURL a custom resource answers to."""

    answers: list[dict[str, Any]] = []

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.answers.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_seeder_reports_missing_table_names_to_cloudformation(
    dynamo_endpoint: str, empty_environment: None
) -> None:
    # Given the seeder (a custom resource: it must answer CloudFormation even when it cannot work,
    # or the deploy waits an hour) in an environment without table names
    from tests.api_events import LambdaContextStub, load_function

    server = HTTPServer(("127.0.0.1", 0), _CloudFormation)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _CloudFormation.answers = []
    os.environ["SEED_DIR"] = str(SEED_DIR)
    try:
        handler = load_function("seeder")
        event = {
            "RequestType": "Create",
            "ResponseURL": f"http://127.0.0.1:{server.server_port}/answer",
            "StackId": "stack",
            "RequestId": "req-1",
            "LogicalResourceId": "RegistrySeed",
            "ResourceProperties": {},
        }
        # When CloudFormation creates the resource
        handler(event, LambdaContextStub())
    finally:
        os.environ.pop("SEED_DIR", None)
        server.shutdown()
        server.server_close()
    # Then it answers FAILED, and the reason names each missing variable
    assert [a["Status"] for a in _CloudFormation.answers] == ["FAILED"]
    for var in ("REGISTRY_TABLE", "JOBS_TABLE"):
        assert var in _CloudFormation.answers[0]["Reason"]
