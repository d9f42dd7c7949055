"""The alarms say what really sets them off, and a failing stream record pages before the DLQ does.

Before, a batch whose every record failed was reported, not raised: TriggerEngine's Errors stayed
0 while the errors alarm claimed to cover "a whole batch that failed", and nothing alarmed on
RecordsFailed, so the first page came from the dead-letter queue, after all retries.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobtriggers.local.template import load_template, resources_of_type
from tests.conftest import ROOT

TEMPLATE = load_template()
ALARMS = resources_of_type(TEMPLATE, "AWS::CloudWatch::Alarm")


def _metric_names(props: dict[str, Any]) -> list[str]:
    if "MetricName" in props:
        return [props["MetricName"]]
    return [q["MetricStat"]["Metric"]["MetricName"] for q in props["Metrics"] if "MetricStat" in q]


def _description(props: dict[str, Any]) -> str:
    return " ".join(str(props["AlarmDescription"]).split())


def test_a_failed_stream_record_pages_within_five_minutes() -> None:
    # Given the alarm on the handlers' RecordsFailed metric (EMF: namespace and service dimension)
    (alarm,) = [
        a["Properties"] for a in ALARMS.values() if _metric_names(a["Properties"]) == ["RecordsFailed"]
    ]
    assert alarm["Namespace"] == "JobTriggers"
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "jobtriggers"}]
    # Then one failed record in one period sets it off, and the periods it needs fit in 5 minutes
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "Sum",
        0,
        "GreaterThanThreshold",
    )
    assert alarm.get("DatapointsToAlarm", alarm["EvaluationPeriods"]) * alarm["Period"] <= 120
    assert alarm["EvaluationPeriods"] * alarm["Period"] <= 300
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert alarm["TreatMissingData"] == "notBreaching"


def test_the_errors_alarm_covers_a_failed_first_record_because_the_handler_raises_then() -> None:
    props = ALARMS["TriggerResolverErrorsAlarm"]["Properties"]
    text = _description(props)
    assert "first record failed" in text and "raises" in text
    handler = (
        TEMPLATE["Resources"]["TriggerResolverFunction"]["Properties"]["CodeUri"].rstrip("/") + "/app.py"
    )
    assert "response_or_raise()" in (ROOT / handler).read_text(encoding="utf-8")


@pytest.mark.parametrize("alarm", sorted(ALARMS))
def test_every_alarm_description_names_its_metrics_and_its_window(alarm: str) -> None:
    # Given an alarm's description, as the page shows it
    props = ALARMS[alarm]["Properties"]
    text = _description(props)
    # Then it names every metric the alarm reads
    for name in _metric_names(props):
        assert name in text, f"{alarm}: its description does not name the metric {name}: {text}"
    # And when the alarm needs several breaching periods, how many of how many
    if "DatapointsToAlarm" in props:
        window = f"{props['DatapointsToAlarm']} of the last {props['EvaluationPeriods']}"
        assert window in text, (
            f"{alarm}: say '{window} ...' (periods of {props.get('Period', 'the metrics')} s)"
        )


def test_the_dashboard_shows_every_alarm_including_the_new_one() -> None:
    body = json.dumps(TEMPLATE["Resources"]["Dashboard"]["Properties"]["DashboardBody"])
    for alarm in ALARMS:
        assert f"${{{alarm}.Arn}}" in body, f"the dashboard's alarm widget misses {alarm}"
