"""Shared fixtures: one moto DynamoDB server on loopback for the session, fresh tables per test.

Data-access code is tested over HTTP against the server, as it runs in production.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "jobtriggers")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "JobTriggers")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
# Nothing in a test may reach a real AWS account, whatever the machine has configured - except
# `make e2e STACK=name` (tests/e2e_aws), which is run with the operator's credentials on purpose.
if not os.environ.get("JOBTRIGGERS_E2E_STACK"):
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(var, None)

# tests/e2e_aws runs only through `make e2e STACK=name` (it needs a deployed stack), never in `make test`.
collect_ignore = [] if os.environ.get("JOBTRIGGERS_E2E_STACK") else ["e2e_aws"]

ROOT = Path(__file__).resolve().parents[1]
SEED_DIR = ROOT / "seed"
# The NMDC Runtime's boot registry as extracted: ../shared/reference beside the checkout when it is
# there (CI, sessions), else the copy kept with the tests (any other clone).
_SHARED_REFERENCE = ROOT.parent / "shared" / "reference" / "nmdc-boot-registry.json"
REFERENCE_REGISTRY = (
    _SHARED_REFERENCE if _SHARED_REFERENCE.exists() else ROOT / "tests" / "data" / "nmdc-boot-registry.json"
)


@pytest.fixture(scope="session")
def dynamo_endpoint() -> Iterator[str]:
    from jobtriggers.local.store import point_boto3_at, start_embedded_dynamo

    dynamo = start_embedded_dynamo()
    point_boto3_at(dynamo.endpoint)
    yield dynamo.endpoint
    dynamo.stop()


@pytest.fixture
def tables(dynamo_endpoint: str) -> dict[str, str]:
    """Fresh tables for one test, created from template.yaml; the env names them."""
    from jobtriggers.local.store import create_tables, point_boto3_at

    point_boto3_at(dynamo_endpoint)
    return create_tables(f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
def seeded_tables(tables: dict[str, str]) -> dict[str, str]:
    from jobtriggers.dal.registry import RegistryRepository
    from jobtriggers.logic.seed import apply_registry, load_seed_dir

    apply_registry(load_seed_dir(SEED_DIR), RegistryRepository())
    return tables


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session (tests/board and the board's end-to-end tests): the
    sync Playwright API runs one instance per thread. Imported here, so that a run without browser
    tests never loads Playwright."""
    from tests.board.browser import chromium_context

    with chromium_context() as context:
        yield context
