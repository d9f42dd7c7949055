"""End-to-end fixtures: the whole local runtime, started by this process, driven over HTTP.

    def test_something(local_runtime, api, new_site):
        site = new_site()                       # a fresh site, its credentials and a token
        r = api.post("/objects", json=..., headers=site.headers)
        local_runtime.wait_for_stream()         # every tag so far went through TriggerEngine
        assert local_runtime.dlq == []          # what GET /local/dlq shows

`local_runtime` is a `jobtriggers.local.runtime.LocalRuntime`: `.base_url`, `.dynamodb_endpoint`,
`.dlq`, `.stats()`, `.poller.recent_deliveries()`, `.create_site(site_id, capability_ids)`,
`.signing_key` (to forge tokens in security tests), `.wait_for_stream(timeout)`, `.tables` (env var
-> table name); and, since its functions run in worker processes of their own: `.logs` (every line
they printed: `.logs.text()`), `.proxy` (their way to DynamoDB: `FaultInjector(...).attached(
local_runtime.proxy)` fails their calls), `.run_schedule(function)` (fire a Schedule event now) and
`.invoke(function, event)`. It is shared by the session (starting it costs seconds): give every test
its own site and object ids. While it runs, os.environ names its tables (in-process code reaches
them directly, not through the proxy).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from jobtriggers.local.runtime import LocalConfig, LocalRuntime


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def local_runtime(dynamo_endpoint: str) -> Iterator[LocalRuntime]:
    """The runtime on a free port, its tables on the session's moto server under their own prefix."""
    runtime = LocalRuntime(
        LocalConfig(
            host="127.0.0.1",
            port=0,
            dynamodb_endpoint=dynamo_endpoint,
            table_prefix=f"e2e{uuid.uuid4().hex[:8]}",
        )
    )
    runtime.start(restore_environment=True)  # later tests see the environment they would have
    yield runtime
    runtime.stop()


@pytest.fixture
def api(local_runtime: LocalRuntime) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_runtime.base_url, timeout=10) as client:
        yield client


@dataclass
class SiteSession:
    site_id: str
    client_id: str
    client_secret: str
    token: str
    headers: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def new_site(local_runtime: LocalRuntime, api: httpx.Client) -> Callable[..., SiteSession]:
    """Make a site (as `jobtriggers sites create` does) and get its token over HTTP."""

    def make(site_id: str | None = None, capability_ids: list[str] | None = None) -> SiteSession:
        creds = local_runtime.create_site(site_id or f"site-{uuid.uuid4().hex[:8]}", capability_ids)
        r = api.post(
            "/token",
            data={
                "grant_type": "client_credentials",
                "client_id": creds["client_id"],
                "client_secret": creds["client_secret"],
            },
        )
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        return SiteSession(
            site_id=creds["site_id"],
            client_id=creds["client_id"],
            client_secret=creds["client_secret"],
            token=token,
            headers={"Authorization": f"Bearer {token}"},
        )

    return make
