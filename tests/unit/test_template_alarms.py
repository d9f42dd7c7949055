"""The alarms say what really sets them off, and a failing stream record pages before the DLQ does.

Before, a batch whose every record failed was reported, not raised: TriggerEngine's Errors stayed
0 while the errors alarm claimed to cover "a whole batch that failed", and nothing alarmed on
RecordsFailed, so the first page came from the dead-letter queue, after all retries.
"""

from __future__ import annotations

import json
from operator import itemgetter
from typing import Any

import pytest

from jobtriggers.local.template import load_template, resources_of_type
from jobtriggers.logic.job_events import METRICS_CONSUMER
from tests.conftest import ROOT

TEMPLATE = load_template()
ALARMS = resources_of_type(TEMPLATE, "AWS::CloudWatch::Alarm")


def _metric_names(props: dict[str, Any]) -> list[str]:
    if "MetricName" in props:
        return [props["MetricName"]]
    return [q["MetricStat"]["Metric"]["MetricName"] for q in props["Metrics"] if "MetricStat" in q]


def _description(props: dict[str, Any]) -> str:
    return " ".join(str(props["AlarmDescription"]).split())


# Both stream consumers emit RecordsFailed; each has its own alarm, reading exactly the dimensions
# its consumer emits (EMF: Powertools' service dimension, and JobEvents' consumer dimension), so
# that neither alarm's description claims the other's failures.
RECORDS_FAILED_ALARMS = {
    name: a["Properties"] for name, a in ALARMS.items() if _metric_names(a["Properties"]) == ["RecordsFailed"]
}
EMITTED_DIMENSIONS = {
    "StreamRecordsFailedAlarm": [{"Name": "service", "Value": "jobtriggers"}],
    "JobEventsRecordsFailedAlarm": [
        {"Name": "consumer", "Value": METRICS_CONSUMER},
        {"Name": "service", "Value": "jobtriggers"},
    ],
}


def test_each_stream_consumer_has_its_own_records_failed_alarm() -> None:
    assert sorted(RECORDS_FAILED_ALARMS) == sorted(EMITTED_DIMENSIONS)
    for name, props in RECORDS_FAILED_ALARMS.items():
        assert props["Namespace"] == "JobTriggers"
        key = itemgetter("Name")
        assert sorted(props["Dimensions"], key=key) == sorted(EMITTED_DIMENSIONS[name], key=key), name
    assert "TriggerResolver" in _description(RECORDS_FAILED_ALARMS["StreamRecordsFailedAlarm"])
    assert "JobEvents" in _description(RECORDS_FAILED_ALARMS["JobEventsRecordsFailedAlarm"])


@pytest.mark.parametrize("name", sorted(EMITTED_DIMENSIONS))
def test_a_failed_stream_record_pages_within_five_minutes(name: str) -> None:
    # Given the alarm on a consumer's RecordsFailed metric
    alarm = RECORDS_FAILED_ALARMS[name]
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


@pytest.mark.parametrize(
    ("alarm", "function"),
    [
        ("TriggerResolverErrorsAlarm", "TriggerResolverFunction"),
        ("JobEventsErrorsAlarm", "JobEventsFunction"),
    ],
)
def test_the_errors_alarm_covers_a_failed_first_record_because_the_handler_raises_then(
    alarm: str, function: str
) -> None:
    props = ALARMS[alarm]["Properties"]
    text = _description(props)
    assert "first record failed" in text and "raises" in text
    assert props["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function}}]
    handler = TEMPLATE["Resources"][function]["Properties"]["CodeUri"].rstrip("/") + "/app.py"
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
