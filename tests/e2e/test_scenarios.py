"""The end-to-end scenarios of tests/e2e/scenarios.py against the local runtime.

`make e2e STACK=name` runs the same functions against a deployed stack (tests/e2e_aws)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import SiteSession
from tests.e2e.scenarios import SCENARIOS, Deployment


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name: str, api: httpx.Client, new_site: Callable[..., SiteSession]) -> None:
    SCENARIOS[name](Deployment(api=api, make_site=new_site, job_timeout=5.0))
