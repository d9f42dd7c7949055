"""The first `sam deploy` cannot fail on a log group that Lambda created first.

If a function runs before its AWS::Logs::LogGroup resource exists, Lambda creates the group itself,
CloudFormation's create of the same name then fails "already exists", and the stack rolls back. The
seeder runs during the deploy (the RegistrySeed custom resource invokes it), and before this rule the
seeder's group waited for the function, while the custom resource waited for the function only.

The rule checked here, for every function and every custom resource the template has or will have:
each function logs to a group of this template (LoggingConfig.LogGroup), which it depends on, so no
invocation of any kind can come before the group exists; and every custom resource depends on the
log group of the function it invokes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from jobtriggers.local.template import load_template, resources_of_type

TEMPLATE = load_template()
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]
FUNCTIONS = resources_of_type(TEMPLATE, "AWS::Serverless::Function")
LOG_GROUPS = resources_of_type(TEMPLATE, "AWS::Logs::LogGroup")
CUSTOM_RESOURCES = {
    name: r
    for name, r in RESOURCES.items()
    if r["Type"].startswith("Custom::") or r["Type"] == "AWS::CloudFormation::CustomResource"
}
_SUB_REF = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.[A-Za-z0-9.]+)?\}")


def _references(value: Any) -> Iterator[str]:
    """Logical ids a property value refers to (Ref, GetAtt, Sub), anywhere inside it."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                yield inner
            elif key == "Fn::GetAtt":
                yield inner[0] if isinstance(inner, list) else str(inner).split(".", 1)[0]
            elif key == "Fn::Sub":
                text, variables = (inner, {}) if isinstance(inner, str) else (inner[0], inner[1])
                yield from (m for m in _SUB_REF.findall(text) if m not in variables)
                yield from _references(variables)
            else:
                yield from _references(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _references(inner)


def direct_dependencies(name: str) -> set[str]:
    resource = RESOURCES[name]
    depends = resource.get("DependsOn", [])
    explicit = {depends} if isinstance(depends, str) else set(depends)
    return (explicit | set(_references(resource.get("Properties", {})))) & set(RESOURCES)


def dependencies(name: str) -> set[str]:
    """Everything CloudFormation creates before `name` (the transitive closure)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for dep in direct_dependencies(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def log_group_of(function: str) -> str:
    """The template's log group the function logs to (LoggingConfig.LogGroup, Globals merged)."""
    config = {
        **TEMPLATE.get("Globals", {}).get("Function", {}).get("LoggingConfig", {}),
        **FUNCTIONS[function]["Properties"].get("LoggingConfig", {}),
    }
    group = config.get("LogGroup")
    assert isinstance(group, dict) and group.get("Ref") in LOG_GROUPS, (
        f"{function} must log to a log group of this template (LoggingConfig: LogGroup: !Ref ...), "
        f"not {group!r}: otherwise Lambda creates /aws/lambda/<name> itself on its first invocation"
    )
    return str(group["Ref"])


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_is_created_after_its_own_log_group(function: str) -> None:
    # Given the log group a function logs to
    group = log_group_of(function)
    # Then the function depends on it, the group does not depend on any function, and the group
    # serves this function alone
    assert group in dependencies(function)
    assert not dependencies(group) & set(FUNCTIONS), f"{group} waits for a function: it could come second"
    assert [f for f in FUNCTIONS if log_group_of(f) == group] == [function]
    assert LOG_GROUPS[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_the_template_has_a_custom_resource_that_runs_during_the_deploy() -> None:
    assert "RegistrySeed" in CUSTOM_RESOURCES


@pytest.mark.parametrize("resource", sorted(CUSTOM_RESOURCES))
def test_every_custom_resource_waits_for_the_log_group_of_the_function_it_runs(resource: str) -> None:
    # Given the function a custom resource invokes when CloudFormation creates it
    token = CUSTOM_RESOURCES[resource]["Properties"]["ServiceToken"]
    (function,) = set(_references(token)) & set(FUNCTIONS)
    # Then it says so itself (DependsOn), and the group is created before it in any case
    depends = CUSTOM_RESOURCES[resource].get("DependsOn", [])
    assert log_group_of(function) in ([depends] if isinstance(depends, str) else depends)
    assert log_group_of(function) in dependencies(resource)


def test_the_dependency_reader_sees_refs_getatts_subs_and_depends_on() -> None:
    # The checks above are only as good as this reader: it must find each kind of reference
    assert {"SeederFunction", "SeedDataLayer", "SeederLogGroup"} <= dependencies("RegistrySeed")
    assert "JobsTable" in direct_dependencies("TriggerResolverFunction")  # !GetAtt JobsTable.Arn
    assert "RegistryTable" in direct_dependencies("TriggerResolverFunction")  # !Sub or !GetAtt
    assert "AlarmTopic" in direct_dependencies("DeadLetterAlarm")  # !Ref
