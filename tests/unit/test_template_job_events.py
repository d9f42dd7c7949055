"""template.yaml's job events: the jobs stream, the bus, the two tables, JobEventsFunction and what
watches it. The rules every function and alarm meets are checked for these too by test_template.py,
test_template_alarms.py and test_template_deploy_order.py; here is what is particular to them."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from jobtriggers.local.template import load_template, resources_of_type
from tests.unit.test_settings import _environment_without, _load_handler

TEMPLATE = load_template()
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]
FUNCTIONS = resources_of_type(TEMPLATE, "AWS::Serverless::Function")
FUNCTION = FUNCTIONS["JobEventsFunction"]["Properties"]
JOB_EVENTS_VARIABLES = ("JOB_EVENTS_TABLE", "COUNTS_TABLE", "JOB_EVENTS_BUS")


def _stream(function: str) -> dict[str, Any]:
    (event,) = [e for e in FUNCTIONS[function]["Properties"]["Events"].values() if e["Type"] == "DynamoDB"]
    return dict(event["Properties"])


def test_the_jobs_table_streams_old_and_new_images_to_job_events() -> None:
    jobs = RESOURCES["JobsTable"]["Properties"]
    assert jobs["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert _stream("JobEventsFunction")["Stream"] == {"Fn::GetAtt": ["JobsTable", "StreamArn"]}


def test_the_tables_are_keyed_as_the_data_access_reads_them() -> None:
    events = RESOURCES["JobEventsTable"]["Properties"]
    assert events["KeySchema"] == [
        {"AttributeName": "job_id", "KeyType": "HASH"},
        {"AttributeName": "version", "KeyType": "RANGE"},
    ]
    assert {"AttributeName": "version", "AttributeType": "N"} in events["AttributeDefinitions"]
    counts = RESOURCES["CountsTable"]["Properties"]
    assert counts["KeySchema"] == [{"AttributeName": "scope", "KeyType": "HASH"}]
    assert RESOURCES["JobEventsBus"]["Type"] == "AWS::Events::EventBus"
    assert RESOURCES["JobEventsBus"]["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-jobs"}


def test_its_mapping_keeps_the_ordered_batch_rules_and_retries_longer_than_the_resolver() -> None:
    mine, resolver = _stream("JobEventsFunction"), _stream("TriggerResolverFunction")
    for rule in ("FunctionResponseTypes", "BisectBatchOnFunctionError", "StartingPosition", "BatchSize"):
        assert mine[rule] == resolver[rule], rule
    # One batch at a time per shard: a job's events go out in the order they were written
    assert mine["ParallelizationFactor"] == 1
    # No reconcile can publish lost events again: more retries, within the stream's 24 h
    assert resolver["MaximumRetryAttempts"] < mine["MaximumRetryAttempts"] <= 10_000
    assert resolver["MaximumRecordAgeInSeconds"] < mine["MaximumRecordAgeInSeconds"] <= 86_400
    # Its own dead-letter queue, and removals are filtered out (a removed job is no transition)
    assert mine["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS",
        "Destination": {"Fn::GetAtt": ["JobEventsDLQ", "Arn"]},
    }
    (pattern,) = [json.loads(f["Pattern"]) for f in mine["FilterCriteria"]["Filters"]]
    assert pattern == {"eventName": ["INSERT", "MODIFY"]}


def test_only_job_events_gets_the_job_events_variables() -> None:
    assert FUNCTION["Environment"]["Variables"] == {
        "JOB_EVENTS_TABLE": {"Ref": "JobEventsTable"},
        "COUNTS_TABLE": {"Ref": "CountsTable"},
        "JOB_EVENTS_BUS": {"Ref": "JobEventsBus"},
    }
    others = {
        name: set(fn["Properties"].get("Environment", {}).get("Variables", {})) & set(JOB_EVENTS_VARIABLES)
        for name, fn in FUNCTIONS.items()
        if name != "JobEventsFunction"
    }
    assert all(not v for v in others.values()), others
    assert not set(TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]) & set(JOB_EVENTS_VARIABLES)


def test_its_policy_puts_events_on_its_bus_only_and_writes_only_its_tables() -> None:
    (policy,) = FUNCTION["Policies"]
    grants = {
        (action, json.dumps(s["Resource"], sort_keys=True))
        for s in policy["Statement"]
        for action in s["Action"]
    }
    assert grants == {
        ("dynamodb:PutItem", '{"Fn::GetAtt": ["JobEventsTable", "Arn"]}'),
        ("dynamodb:UpdateItem", '{"Fn::GetAtt": ["JobEventsTable", "Arn"]}'),
        ("dynamodb:UpdateItem", '{"Fn::GetAtt": ["CountsTable", "Arn"]}'),
        ("events:PutEvents", '{"Fn::GetAtt": ["JobEventsBus", "Arn"]}'),
        ("sqs:SendMessage", '{"Fn::GetAtt": ["JobEventsDLQ", "Arn"]}'),
    }
    # And nobody else may put events on the bus
    for name, fn in FUNCTIONS.items():
        if name != "JobEventsFunction":
            assert "events:PutEvents" not in json.dumps(fn["Properties"].get("Policies", [])), name


def test_the_stack_outputs_name_the_bus_and_the_tables() -> None:
    outputs = TEMPLATE["Outputs"]
    assert outputs["JobEventsBusName"]["Value"] == {"Ref": "JobEventsBus"}
    assert outputs["JobEventsBusArn"]["Value"] == {"Fn::GetAtt": ["JobEventsBus", "Arn"]}
    assert outputs["JobEventsTableName"]["Value"] == {"Ref": "JobEventsTable"}
    assert outputs["CountsTableName"]["Value"] == {"Ref": "CountsTable"}
    assert outputs["JobEventsDlqUrl"]["Value"] == {"Ref": "JobEventsDLQ"}


def test_the_dashboard_shows_the_consumer_beside_the_resolver() -> None:
    body = RESOURCES["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    dashboard = json.loads(re.sub(r"\$\{([^}]+)\}", r"<\1>", body))
    widgets = {w["properties"].get("title", ""): json.dumps(w) for w in dashboard["widgets"]}
    for title in ("Stream iterator age (ms)", "Lambda errors"):
        assert "<JobEventsFunction>" in widgets[title] and "<TriggerResolverFunction>" in widgets[title]
    assert "<JobEventsDLQ.QueueName>" in widgets["Dead letters (stream records given up on)"]
    assert "<CountsTable>" in widgets["DynamoDB throttle events by table"]
    shown = [m for w in dashboard["widgets"] for m in w["properties"].get("metrics", [])]
    assert ["JobTriggers", "RecordsFailed", "service", "jobtriggers", "consumer", "job-events"] in shown
    assert ["JobTriggers", "JobEventsPublished", "service", "jobtriggers"] in shown
    # Widgets do not overlap
    cells = set()
    for w in dashboard["widgets"]:
        for x in range(w["x"], w["x"] + w["width"]):
            for y in range(w["y"], w["y"] + w["height"]):
                assert (x, y) not in cells, w["properties"].get("title")
                cells.add((x, y))


@pytest.mark.parametrize("missing", JOB_EVENTS_VARIABLES)
def test_the_handler_without_one_of_its_variables_fails_at_import_naming_it(missing: str) -> None:
    env = _environment_without(missing, **{v: f"t-{v.lower()}" for v in JOB_EVENTS_VARIABLES if v != missing})
    proc = _load_handler("job_events", env)
    assert proc.returncode != 0
    assert missing in proc.stderr and "the environment is not complete" in proc.stderr


def test_the_handler_with_its_variables_loads() -> None:
    env = _environment_without(**{v: f"t-{v.lower()}" for v in JOB_EVENTS_VARIABLES})
    proc = _load_handler("job_events", env)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "LOADED True" in proc.stdout
