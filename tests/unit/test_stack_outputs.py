"""`--stack NAME` finds every table the operator commands read (the board's job events and counts
tables among them) in the stack's Outputs: cli/common.STACK_OUTPUT_ENV against template.yaml."""

from __future__ import annotations

from typing import Any

from jobtriggers.cli.common import STACK_OUTPUT_ENV
from jobtriggers.local.template import load_template
from jobtriggers.settings import JobEventsSettings, TableNames

TEMPLATE = load_template()


def _aliases(model: Any) -> set[str]:
    return {field.alias for field in model.model_fields.values()}


def test_every_table_the_operator_commands_read_is_an_output_they_map() -> None:
    outputs = TEMPLATE["Outputs"]
    mapped = {var: output for output, var in STACK_OUTPUT_ENV.items()}
    # the service's tables and the board's (job events, counts): each from an Output of the template
    for var in sorted(_aliases(TableNames) | _aliases(JobEventsSettings)):
        assert var in mapped, f"--stack leaves {var} unset: add its Output to STACK_OUTPUT_ENV"
        output = outputs.get(mapped[var])
        assert output is not None, f"STACK_OUTPUT_ENV names {mapped[var]}; template.yaml has no such Output"
        assert "Ref" in output["Value"], f"{mapped[var]} should be the table's name (!Ref)"
