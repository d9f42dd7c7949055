"""schemathesis against the running local runtime's own /openapi.json, with a real site token.

Every operation the document describes is called with generated valid and invalid input: no
response may be a 5xx (bad input is always a 4xx here), and every response must match what the
document declares for its status (body schema and content type).

`make test` runs a bounded, derandomized pass (FUZZ_EXAMPLES, default 6 per operation and mode);
`make fuzz` runs long (FUZZ_EXAMPLES=300) with a random FUZZ_SEED, which it prints to repeat a run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err, Ok
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from jobtriggers.local.runtime import LocalRuntime
from tests.e2e.conftest import SiteSession

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
SEED = os.environ.get("FUZZ_SEED")
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def fuzz_site(local_runtime: LocalRuntime) -> dict[str, str]:
    """One site (all seed capabilities, so claims get past 403; allowed to create jobs, so POST /jobs
    gets past 403) and its bearer header."""
    from jobtriggers.dal.registry import RegistryRepository

    capabilities = [
        c.id for c in RegistryRepository(local_runtime.tables["REGISTRY_TABLE"]).list_all("capability")
    ]
    creds = local_runtime.create_site(f"fuzz-{os.getpid()}", capabilities, can_create_jobs=True)
    r = httpx.post(
        f"{local_runtime.base_url}/token",
        data={
            "grant_type": "client_credentials",
            "client_id": creds["client_id"],
            "client_secret": creds["client_secret"],
        },
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _fuzz_operation(operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str]) -> int:
    """Run one operation's generated cases; the number sent. Raises the first failing check."""
    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=SEED is None,
        suppress_health_check=list(HealthCheck),
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report the case as generated
    )
    def run(case: Any) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)

    if SEED is not None:
        run = seed(int(SEED))(run)
    run()
    return sent


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_5xx_and_every_response_matches_the_document(
    mode: GenerationMode, local_runtime: LocalRuntime, fuzz_site: dict[str, str]
) -> None:
    # Given every operation of the runtime's own OpenAPI document
    schema = schemathesis.openapi.from_url(f"{local_runtime.base_url}/openapi.json")
    results = list(schema.get_all_operations())
    invalid = [str(r.err()) for r in results if isinstance(r, Err)]
    assert invalid == [], "the OpenAPI document has operations schemathesis cannot read"
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert len(operations) >= 15
    failures: dict[str, str] = {}
    sent: dict[str, int] = {}
    unfuzzable: list[str] = []
    started = time.monotonic()
    # When each is called with generated (valid, then invalid) input and a valid site token
    for operation in operations:
        name = f"{operation.method.upper()} {operation.path}"
        try:
            sent[name] = _fuzz_operation(operation, mode, local_runtime.base_url, fuzz_site)
        except Unsatisfiable:
            unfuzzable.append(name)  # nothing to make invalid: no parameters and no body
        except (Exception, BaseExceptionGroup) as exc:  # failed checks: collect them, fuzz the rest
            failures[name] = str(exc)[:2000]
    print(
        f"\nfuzz {mode} (FUZZ_SEED={SEED or 'derandomized'}): {sum(sent.values())} requests",
        f"over {len(operations)} operations",
        f"in {time.monotonic() - started:.1f}s ({EXAMPLES} examples each at most);",
        f"no {mode} input possible for {unfuzzable}",
    )
    # Then no response was a 5xx and every one matched the document, and most operations were reached
    assert len(sent) >= len(operations) // 2
    for name, failure in failures.items():
        print(f"--- {name}\n{failure}")
    assert sorted(failures) == []


def test_the_document_covers_the_routes_the_template_declares(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    # Given the runtime's document and the template's API routes
    from jobtriggers.local.template import api_routes

    doc = api.get("/openapi.json").json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    # Then every non-meta route is documented, so the fuzzer reaches it
    meta = {"/openapi.json", "/docs", "/token"}
    for route in api_routes(local_runtime.template):
        if route.path in meta or (route.path == "/jobs/{job_id}" and route.method == "POST"):
            continue  # /token is form-encoded outside the resolver; :claim/:release are matched below
        assert (route.method, route.path) in documented, (
            f"{route.method} {route.path} is not in /openapi.json"
        )
    assert any(p.endswith(":claim") for _, p in documented)
