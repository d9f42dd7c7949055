"""`make e2e STACK=name`: the end-to-end scenarios over HTTPS against a stack deployed with `sam deploy`.

The API URL and table names come from the stack's Outputs; sites are made (and deleted after) with
the operator's AWS credentials, as `jobtriggers sites create --stack NAME` makes them. Without a
stack name or without AWS credentials every test is skipped, saying which is missing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SiteSession

STACK = os.environ.get("JOBTRIGGERS_E2E_STACK", "")


def _why_not() -> str | None:
    if not STACK:
        return "no stack: run `make e2e STACK=<name of a stack deployed with sam deploy>`"
    import boto3

    if boto3.Session().get_credentials() is None:
        return (
            f"no AWS credentials for stack {STACK}: configure them (aws configure, AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) to run the deployed-stack suite"
        )
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _why_not()
    if reason:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def stack_outputs() -> dict[str, str]:
    import boto3

    stacks = boto3.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    assert "ApiUrl" in outputs, f"stack {STACK} has no ApiUrl output: is it a jobtriggers stack?"
    return outputs


@pytest.fixture(scope="session")
def deployed_api(stack_outputs: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack_outputs["ApiUrl"], timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def deployed_site(
    stack_outputs: dict[str, str], deployed_api: httpx.Client
) -> Iterator[Callable[..., SiteSession]]:
    """Make sites in the stack's tables (deleted at the end) and get their tokens over HTTPS."""
    from jobtriggers.cli.common import configure_store
    from jobtriggers.dal.registry import RegistryRepository
    from jobtriggers.dal.sites import SiteRepository
    from jobtriggers.logic.sites import create_site

    configure_store(None, STACK)
    made: list[str] = []

    def make(capability_ids: list[str] | None = None) -> SiteSession:
        site_id = f"e2e-{uuid.uuid4().hex[:8]}"
        creds: Any = create_site(SiteRepository(), RegistryRepository(), site_id, list(capability_ids or []))
        made.append(site_id)
        r = deployed_api.post(
            "/token",
            data={
                "grant_type": "client_credentials",
                "client_id": creds.client_id,
                "client_secret": creds.client_secret,
            },
        )
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        return SiteSession(
            site_id=site_id,
            client_id=creds.client_id,
            client_secret=creds.client_secret,
            token=token,
            headers={"Authorization": f"Bearer {token}"},
        )

    yield make
    for site_id in made:
        SiteRepository().delete(site_id)
