"""Nothing secret reaches X-Ray (issue 8, item 11).

Each handler runs in a fresh interpreter set up as a Lambda with active tracing: LAMBDA_TASK_ROOT,
a sampled `_X_AMZN_TRACE_ID`, the template's Globals environment. The X-Ray SDK (a dev dependency,
aws-lambda-powertools[tracer]; the layer does not ship it) gets
an emitter that keeps every entity it would send to the daemon, so whatever a handler (or
Powertools' Tracer, if one came back) records as metadata or annotation is searched for the bearer
token /token issued, the client secret, and a marker sent in a request body.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.dal.sites import SiteRepository
from jobtriggers.local.template import global_environment, load_template
from jobtriggers.logic.sites import create_site
from tests.api_events import authorizer_event, drs_object_body, form_event, rest_event
from tests.conftest import ROOT

SIGNING_KEY = "trace-test-signing-key-" + "k" * 40
TRACE_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"

# Runs in the fresh interpreter: capture what the recorder would send, check the capture works with
# a subsegment of its own, then load the handler from its file (as Lambda does) and invoke it.
_PROBE = r"""
import importlib.util, json, sys, uuid
from aws_xray_sdk.core import xray_recorder

sent = []

class KeepingEmitter:
    def send_entity(self, entity):
        sent.append(entity.serialize())

    def set_daemon_address(self, address):
        pass

xray_recorder.configure(emitter=KeepingEmitter())
xray_recorder.begin_subsegment("probe").put_metadata("canary", "canary-value-7f3a")
xray_recorder.end_subsegment()

class Context:
    function_name = "jobtriggers-trace-test"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:jobtriggers-trace-test"
    aws_request_id = str(uuid.uuid4())
    def get_remaining_time_in_millis(self):
        return 10000

spec = importlib.util.spec_from_file_location("app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
results = []
for event in json.loads(sys.argv[2]):
    try:
        results.append(module.lambda_handler(event, Context()))
    except Exception as exc:
        results.append({"raised": repr(exc)})
print("PROBE " + json.dumps({"results": results, "sent": sent}))
"""


def _run_traced(handler: str, events: list[dict[str, Any]], tmp_path: Any) -> tuple[list[Any], str]:
    """(handler results, everything the recorder sent, as one string)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWERTOOLS_")}
    env.update(global_environment(load_template()))
    env.update(
        {
            "LAMBDA_TASK_ROOT": str(tmp_path),
            "AWS_LAMBDA_FUNCTION_NAME": "jobtriggers-trace-test",
            "_X_AMZN_TRACE_ID": TRACE_HEADER,
            "SIGNING_KEY": SIGNING_KEY,
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
    )
    env.pop("SIGNING_KEY_SECRET_ARN", None)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(ROOT / "functions" / handler / "app.py"), json.dumps(events)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")), None)
    assert line is not None, proc.stderr[-2000:]
    out = json.loads(line[len("PROBE ") :])
    sent = "\n".join(out["sent"])
    # The capture itself works: the probe's own subsegment, with its metadata, was kept.
    assert "canary-value-7f3a" in sent, sent[:2000]
    return out["results"], sent


@pytest.fixture
def site(tables: dict[str, str]) -> Any:
    return create_site(SiteRepository(), RegistryRepository(), f"trace-{uuid.uuid4().hex[:8]}", [])


def test_no_token_or_secret_in_traces_of_token_and_authorizer(site: Any, tmp_path: Any) -> None:
    # Given a site's credentials, and the token function traced as on Lambda
    request = form_event(
        {
            "grant_type": "client_credentials",
            "client_id": site.client_id,
            "client_secret": site.client_secret,
        }
    )
    # When the site gets a token
    results, sent = _run_traced("token", [request], tmp_path)
    assert results[0]["statusCode"] == 200, results
    token = json.loads(results[0]["body"])["access_token"]
    # Then neither the token nor the secret is in anything sent to X-Ray
    assert token not in sent
    assert site.client_secret not in sent
    # And when the authorizer checks that token
    results, sent = _run_traced("authorizer", [authorizer_event(f"Bearer {token}")], tmp_path)
    assert results[0]["policyDocument"]["Statement"][0]["Effect"] == "Allow", results
    assert token not in sent


def test_no_request_body_in_traces_of_the_api(seeded_tables: dict[str, str], tmp_path: Any) -> None:
    # Given an object whose record carries a marker, posted through the traced API function
    marker = f"marker-{uuid.uuid4().hex}"
    body = drs_object_body(id=f"trace-{uuid.uuid4().hex[:8]}", checksum=uuid.uuid4().hex, description=marker)
    # When it is created (and its record is answered back)
    results, sent = _run_traced("api", [rest_event("POST", "/objects", body=body)], tmp_path)
    assert results[0]["statusCode"] == 201, results
    assert marker in results[0]["body"]
    # Then the body is nowhere in what was sent to X-Ray
    assert marker not in sent
