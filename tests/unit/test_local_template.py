"""template.yaml read as the local runtime reads it: each function's environment, resolved as
CloudFormation would resolve it, and its Schedule events with their conditions."""

from __future__ import annotations

from typing import Any

import pytest

from jobtriggers.local.template import (
    Unresolvable,
    function_environment,
    functions,
    load_template,
    parameter_values,
    rate_seconds,
    resolve,
    schedule_events,
    table_names_for,
)

TEMPLATE = load_template()

SMALL: dict[str, Any] = {
    "Parameters": {
        "Flag": {"Type": "String", "Default": "false"},
        "Every": {"Type": "String", "Default": "rate(5 minutes)"},
        "Name": {"Type": "String", "Default": "n"},
    },
    "Conditions": {
        "FlagOn": {"Fn::Equals": [{"Ref": "Flag"}, "true"]},
        "FlagOff": {"Fn::Not": [{"Condition": "FlagOn"}]},
    },
    "Globals": {
        "Function": {"Timeout": 7, "Environment": {"Variables": {"SHARED": "g", "TABLE": {"Ref": "T"}}}}
    },
    "Resources": {
        "T": {"Type": "AWS::DynamoDB::Table", "Properties": {}},
        "Secret": {"Type": "AWS::SecretsManager::Secret", "Properties": {}},
        "F": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "CodeUri": "functions/f/",
                "Handler": "app.handler",
                "MemorySize": 256,
                "Environment": {
                    "Variables": {
                        "SHARED": "mine",
                        "NAME": {"Ref": "Name"},
                        "MODE": {"Fn::If": ["FlagOn", "on", "off"]},
                        "SECRET_ARN": {"Ref": "Secret"},
                    }
                },
                "Events": {
                    "Tick": {"Type": "Schedule", "Properties": {"Schedule": {"Ref": "Every"}}},
                    "Off": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 hour)", "Enabled": False}},
                    "When": {
                        "Type": "Schedule",
                        "Properties": {
                            "Schedule": "cron(0 12 * * ? *)",
                            "State": {"Fn::If": ["FlagOn", "ENABLED", "DISABLED"]},
                            "Input": '{"kind": "noon"}',
                        },
                    },
                },
            },
        },
    },
}


def test_a_functions_environment_is_globals_then_its_own_resolved_at_the_parameters() -> None:
    names = table_names_for(SMALL, "local")
    env, left_out = function_environment(SMALL, "F", parameter_values(SMALL), names)
    # The function's own value wins over Globals'; references to parameters and tables resolve
    assert env == {"SHARED": "mine", "TABLE": "local-T", "NAME": "n", "MODE": "off"}
    # And what has no local value (a secret's ARN) is named, not invented
    assert left_out == ["SECRET_ARN"]
    # Parameter overrides count, as `sam deploy --parameter-overrides` would
    env, _ = function_environment(SMALL, "F", parameter_values(SMALL, {"Flag": "true"}), names)
    assert env["MODE"] == "on"


def test_an_override_of_a_parameter_the_template_lacks_is_refused_naming_what_it_has() -> None:
    with pytest.raises(ValueError, match="no parameter Nope; it has Every, Flag, Name"):
        parameter_values(SMALL, {"Nope": "1"})


def test_conditions_and_intrinsics_resolve_or_say_why_not() -> None:
    params = parameter_values(SMALL)
    assert resolve(SMALL, {"Condition": "FlagOff"}, params) is True
    assert resolve(SMALL, {"Fn::And": [{"Condition": "FlagOff"}, {"Fn::Equals": ["a", "a"]}]}, params) is True
    assert resolve(SMALL, {"Fn::Or": [{"Condition": "FlagOn"}, {"Fn::Equals": ["a", "b"]}]}, params) is False
    with pytest.raises(Unresolvable, match="Fn::GetAtt"):
        resolve(SMALL, {"Fn::GetAtt": ["T", "Arn"]}, params)
    with pytest.raises(Unresolvable, match="Ref Nope"):
        resolve(SMALL, {"Ref": "Nope"}, params)


def test_timeouts_and_memory_come_from_the_function_or_globals() -> None:
    spec = functions(SMALL)["F"]
    assert (spec.timeout, spec.memory_size) == (7.0, 256)
    real = functions(TEMPLATE)
    assert real["ApiFunction"].timeout == float(TEMPLATE["Globals"]["Function"]["Timeout"])
    assert real["TriggerResolverFunction"].timeout == 60.0


def test_schedule_events_honour_enabled_state_and_conditions() -> None:
    by_name = {s.name: s for s in schedule_events(SMALL)}
    assert (by_name["Tick"].enabled, by_name["Tick"].interval_seconds) == (True, 300.0)
    assert by_name["Off"].enabled is False
    assert (by_name["When"].enabled, by_name["When"].interval_seconds) == (False, None)
    assert by_name["When"].event_input == '{"kind": "noon"}'
    flag_on = {s.name: s for s in schedule_events(SMALL, parameter_values(SMALL, {"Flag": "true"}))}
    assert flag_on["When"].enabled is True


def test_the_templates_reconcile_schedule_is_off_unless_its_parameter_turns_it_on() -> None:
    (reconcile,) = [s for s in schedule_events(TEMPLATE) if s.function == "ReconcilerFunction"]
    assert (reconcile.enabled, reconcile.expression, reconcile.interval_seconds) == (
        False,
        "rate(6 hours)",
        21600.0,
    )
    params = parameter_values(
        TEMPLATE, {"EnableScheduledReconcile": "true", "ReconcileSchedule": "rate(1 hour)"}
    )
    (on,) = [s for s in schedule_events(TEMPLATE, params) if s.function == "ReconcilerFunction"]
    assert (on.enabled, on.interval_seconds) == (True, 3600.0)


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(1 minute)", 60.0),
        ("rate(5 minutes)", 300.0),
        ("rate(1 hour)", 3600.0),
        ("rate(2 days)", 172800.0),
    ],
)
def test_rate_expressions(expression: str, seconds: float) -> None:
    assert rate_seconds(expression) == seconds


@pytest.mark.parametrize(
    "expression", ["rate(0 minutes)", "rate(1 minutes)", "rate(5 minute)", "rate(5 weeks)", "every 5m"]
)
def test_bad_rate_expressions_are_refused_as_eventbridge_refuses_them(expression: str) -> None:
    with pytest.raises(ValueError, match=r"rate|schedule"):
        rate_seconds(expression)
