"""`jobtriggers sites show|delete|rotate-secret` with a site id no site can have: a readable refusal
naming the limit, before the store is asked (DynamoDB refuses keys over 2048 bytes)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from jobtriggers.cli.site_admin import app
from jobtriggers.models import SITE_ID_MAX_LENGTH
from tests.api_events import module_tables, use_tables

runner = CliRunner()


@pytest.fixture(scope="module")
def cli_tables(dynamo_endpoint: str) -> dict[str, str]:
    return module_tables(seed=False)


@pytest.mark.parametrize("command", [["show"], ["delete", "--yes"], ["rotate-secret"]])
@pytest.mark.parametrize("site_id", ["s" * 3000, "bad/id", "_leading-underscore"])
def test_a_site_id_no_site_can_have_is_refused_naming_the_rule(
    cli_tables: dict[str, str], command: list[str], site_id: str
) -> None:
    use_tables(cli_tables)
    result = runner.invoke(app, [command[0], site_id, *command[1:]])
    assert result.exit_code == 1, result.output
    assert f"1-{SITE_ID_MAX_LENGTH} letters" in result.output
    assert "s" * 100 not in result.output  # a long id is not echoed whole
