"""template.yaml checks that `sam validate --lint` does not make: least privilege, encryption and
recovery on every table, the alarms and dashboard the runbook promises, and the stream's retry rules."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from jobtriggers.local.template import load_template, resources_of_type
from tests.conftest import ROOT

TEMPLATE = load_template()
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]
FUNCTIONS = resources_of_type(TEMPLATE, "AWS::Serverless::Function")
TABLES = resources_of_type(TEMPLATE, "AWS::DynamoDB::Table")
ALARMS = resources_of_type(TEMPLATE, "AWS::CloudWatch::Alarm")


def _statements() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, fn in FUNCTIONS.items():
        for policy in fn["Properties"].get("Policies", []):
            assert isinstance(policy, dict) and set(policy) == {"Statement"}, (
                f"{name}: only inline statements (no managed policies or SAM policy templates, which grant "
                f"more than a function uses): {policy}"
            )
            out += [(name, s) for s in policy["Statement"]]
    return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _refers_to_table(resource: Any) -> str | None:
    text = json.dumps(resource)
    return next((t for t in TABLES if re.search(rf"\b{t}\b", text)), None)


def test_no_iam_statement_grants_wildcard_actions() -> None:
    # Given every IAM statement of every function
    statements = _statements()
    assert len(statements) >= 10
    # Then none names an action with a wildcard
    wild = [(fn, a) for fn, s in statements for a in _as_list(s["Action"]) if "*" in a]
    assert wild == []


def test_no_iam_statement_grants_every_resource() -> None:
    # Given every IAM statement's resources
    resources = [(fn, r) for fn, s in _statements() for r in _as_list(s["Resource"])]
    # Then none is "*", and a wildcard on a table is only ever its indexes
    assert [(fn, r) for fn, r in resources if r == "*"] == []
    for fn, r in resources:
        table = _refers_to_table(r)
        text = r["Fn::Sub"] if isinstance(r, dict) and "Fn::Sub" in r else json.dumps(r)
        if table and "*" in text:
            assert text == f"${{{table}.Arn}}/index/*", f"{fn}: wildcard on {table} beyond its indexes: {r}"


def test_dynamodb_statements_name_a_table_or_index() -> None:
    # Given statements with DynamoDB actions
    dynamo = [
        (fn, s) for fn, s in _statements() if any(a.startswith("dynamodb:") for a in _as_list(s["Action"]))
    ]
    assert dynamo
    # Then each resource is one of the template's tables (or its indexes)
    for fn, s in dynamo:
        for r in _as_list(s["Resource"]):
            assert _refers_to_table(r), f"{fn}: DynamoDB statement on something that is not a table: {r}"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_table_is_encrypted_with_point_in_time_recovery(table: str) -> None:
    props = TABLES[table]["Properties"]
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert TABLES[table]["DeletionPolicy"] == "Retain"


def test_the_stream_event_has_the_retry_and_dead_letter_rules() -> None:
    # Given TriggerEngine's DynamoDB event
    events = FUNCTIONS["TriggerResolverFunction"]["Properties"]["Events"]
    (stream,) = [e["Properties"] for e in events.values() if e["Type"] == "DynamoDB"]
    # Then it reports partial failures, bisects, bounds retries and age, and dead-letters to SQS
    assert stream["Stream"] == {"Fn::GetAtt": ["ObjectTypesTable", "StreamArn"]}
    assert stream["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert stream["BisectBatchOnFunctionError"] is True
    assert 0 < stream["MaximumRetryAttempts"] <= 10
    assert 60 <= stream["MaximumRecordAgeInSeconds"] <= 86400
    assert 1 <= stream["BatchSize"] <= 1000
    assert "MaximumBatchingWindowInSeconds" in stream
    assert stream["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS",
        "Destination": {"Fn::GetAtt": ["TriggerResolverDLQ", "Arn"]},
    }
    assert TABLES["ObjectTypesTable"]["Properties"]["StreamSpecification"]["StreamViewType"] == (
        "NEW_AND_OLD_IMAGES"
    )


def _alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(namespace, metric name, dimensions) of a plain alarm or of every metric a math alarm reads."""
    props = alarm["Properties"]
    if "MetricName" in props:
        return [(props["Namespace"], props["MetricName"], props.get("Dimensions", []))]
    out = []
    for q in props["Metrics"]:
        if "MetricStat" in q:
            m = q["MetricStat"]["Metric"]
            out.append((m["Namespace"], m["MetricName"], m.get("Dimensions", [])))
    return out


def _find_alarm(namespace: str, metric: str, dimension_ref: str | None = None) -> dict[str, Any]:
    for alarm in ALARMS.values():
        for ns, name, dims in _alarm_metrics(alarm):
            if (
                ns == namespace
                and name == metric
                and (dimension_ref is None or dimension_ref in json.dumps(dims))
            ):
                return alarm
    raise AssertionError(f"no alarm on {namespace} {metric} {dimension_ref or ''}")


@pytest.mark.parametrize(
    ("namespace", "metric", "dimension"),
    [
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "TriggerResolverDLQ"),
        ("AWS/Lambda", "Errors", "TriggerResolverFunction"),
        ("AWS/Lambda", "IteratorAge", "TriggerResolverFunction"),
        ("AWS/ApiGateway", "5XXError", None),
        ("AWS/DynamoDB", "ReadThrottleEvents", "JobsTable"),
        ("AWS/DynamoDB", "WriteThrottleEvents", "JobsTable"),
        ("AWS/Lambda", "Errors", "AuthorizerFunction"),
    ],
)
def test_the_runbook_alarms_exist_and_notify_the_topic(
    namespace: str, metric: str, dimension: str | None
) -> None:
    alarm = _find_alarm(namespace, metric, dimension)
    assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert alarm["Properties"]["TreatMissingData"] == "notBreaching"


def test_iterator_age_alarm_fires_over_a_minute() -> None:
    alarm = _find_alarm("AWS/Lambda", "IteratorAge", "TriggerResolverFunction")
    assert alarm["Properties"]["Threshold"] == 60000
    assert alarm["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"


def test_throttle_alarms_cover_every_table() -> None:
    for metric in ("ReadThrottleEvents", "WriteThrottleEvents"):
        watched = {
            json.dumps(dims)
            for alarm in ALARMS.values()
            for _, name, dims in _alarm_metrics(alarm)
            if name == metric
        }
        for table in TABLES:
            assert any(table in w for w in watched), f"{metric} of {table} is not alarmed"


def test_every_alarm_is_in_the_runbook() -> None:
    runbook = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    for alarm in ALARMS.values():
        name = alarm["Properties"]["AlarmName"]["Fn::Sub"].replace("${AWS::StackName}-", "")
        assert f"`{name}`" in runbook, f"docs/operations.md does not explain alarm {name}"


def test_alarm_email_subscription_is_optional() -> None:
    sub = RESOURCES["AlarmEmailSubscription"]
    assert sub["Condition"] == "HasAlarmEmail"
    assert TEMPLATE["Parameters"]["AlarmEmail"]["Default"] == ""


def test_dashboard_is_valid_json_and_shows_the_jobs_metrics() -> None:
    # Given the dashboard body with its ${...} substitutions filled in
    body = RESOURCES["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    dashboard = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))
    metrics = [m for w in dashboard["widgets"] for m in w["properties"].get("metrics", [])]
    shown = {(m[0], m[1]) for m in metrics}
    # Then it shows the service's EMF metrics (with the service dimension Powertools adds) and the AWS ones
    for name in ("JobsCreated", "JobsAlreadyPresent", "Claims", "JobsDone", "JobsFailed", "ClaimConflicts"):
        assert ("JobTriggers", name) in shown
    assert all(m[2:4] == ["service", "jobtriggers"] for m in metrics if m[0] == "JobTriggers")
    for pair in [
        ("AWS/Lambda", "IteratorAge"),
        ("AWS/ApiGateway", "Latency"),
        ("AWS/ApiGateway", "4XXError"),
        ("AWS/ApiGateway", "5XXError"),
    ]:
        assert pair in shown
    # And the alarm widget lists every alarm
    alarm_widget = next(w for w in dashboard["widgets"] if w["type"] == "alarm")
    assert len(alarm_widget["properties"]["alarms"]) == len(ALARMS)


def test_emf_namespace_and_service_match_the_dashboard() -> None:
    env = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] == "jobtriggers"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "JobTriggers"
    assert TEMPLATE["Globals"]["Function"]["Tracing"] == "Active"


def test_scheduled_reconcile_is_off_by_default() -> None:
    # Given the reconciler's schedule event
    (event,) = FUNCTIONS["ReconcilerFunction"]["Properties"]["Events"].values()
    # Then it is enabled only through the parameter, which defaults to false
    assert event["Type"] == "Schedule"
    assert event["Properties"]["State"] == {"Fn::If": ["ScheduledReconcileEnabled", "ENABLED", "DISABLED"]}
    assert TEMPLATE["Parameters"]["EnableScheduledReconcile"]["Default"] == "false"
    assert TEMPLATE["Conditions"]["ScheduledReconcileEnabled"] == {
        "Fn::Equals": [{"Ref": "EnableScheduledReconcile"}, "true"]
    }


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_has_a_log_group_with_retention(function: str) -> None:
    # Each function logs to a group of its own (tests/unit/test_template_deploy_order.py: and is
    # created after it); the group's name is the stack's, so two stacks never share one
    groups = resources_of_type(TEMPLATE, "AWS::Logs::LogGroup")
    group = groups[FUNCTIONS[function]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]]
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert group["Properties"]["LogGroupName"]["Fn::Sub"].startswith("/aws/lambda/${AWS::StackName}/")
