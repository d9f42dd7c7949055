"""The scenarios of tests/e2e/scenarios.py over HTTPS against a deployed stack (`make e2e STACK=name`)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import SiteSession
from tests.e2e.scenarios import SCENARIOS, Deployment


def test_health_and_documents_are_public(deployed_api: httpx.Client) -> None:
    assert deployed_api.get("/health").json() == {"status": "ok"}
    doc = deployed_api.get("/openapi.json").json()
    assert "/jobs" in doc["paths"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name: str, deployed_api: httpx.Client, deployed_site: Callable[..., SiteSession]) -> None:
    # The stream, Lambda and API Gateway take longer than the local runtime: allow 30 s for a job.
    SCENARIOS[name](Deployment(api=deployed_api, make_site=deployed_site, job_timeout=30.0))
