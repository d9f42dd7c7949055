"""The template's EventBridge buses on the embedded moto server, and what was put on them.

The functions reach EventBridge as they reach DynamoDB (AWS_ENDPOINT_URL_EVENTBRIDGE, through the
runtime's proxy), and moto serves it at the same endpoint. The runtime creates every
`AWS::Events::EventBus` of the template at start, named `{prefix}-{LogicalId}` as tables are.

To see what was put on a bus, the runtime does what a subscriber on AWS does: a rule on the bus
that matches every event (`{"source": [{"prefix": ""}]}`) sends it to a FIFO SQS queue (one message
group: the order of the puts), which the runtime drains into a list every half second, as a
subscriber consumes its queue (moto's SQS work grows with the messages a queue holds, and each
PutEvents reads the queue's attributes: undrained, every put got slower as a run went on). So
`GET /local/events` shows events as a rule's target receives them (EventBridge's envelope: `id`,
`time`, `source`, `detail-type`, `detail`, ...), in the order they were put, each once per put: a
PutEvents that is repeated (at-least-once delivery) shows twice, as it would reach a subscriber
twice.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

log = logging.getLogger("local_runtime.events")

OBSERVER_RULE = "local-observer"
# Every event has a source; a prefix of "" matches them all (EventBridge's catch-all pattern).
MATCH_EVERY_EVENT = json.dumps({"source": [{"prefix": ""}]})
DRAIN_SECONDS = 0.5
_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})


class EventBuses:
    """The template's buses on `endpoint`, each with an observer rule; `events()` lists what was put."""

    def __init__(self, endpoint: str, names: Mapping[str, str], region: str = "us-east-1") -> None:
        self.endpoint = endpoint
        self.names = dict(names)  # logical id -> bus name
        where = {"endpoint_url": endpoint, "region_name": region, "config": _CLIENT_CONFIG}
        self._events = boto3.client("events", **where)  # type: ignore[call-overload]
        self._sqs = boto3.client("sqs", **where)  # type: ignore[call-overload]
        self._queues: dict[str, str] = {}  # bus name -> observer queue URL
        self._seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._drainer: threading.Thread | None = None

    def create(self) -> EventBuses:
        """Create each bus (or take the one a shared server has already) and its observer."""
        for bus in self.names.values():
            try:
                self._events.create_event_bus(Name=bus)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceAlreadyExistsException":
                    raise
            self._queues[bus] = self._observe(bus)
        return self

    def _observe(self, bus: str) -> str:
        queue = self._sqs.create_queue(
            QueueName=f"{bus}-{OBSERVER_RULE}.fifo",
            # EventBridge sends to a FIFO queue only with content-based deduplication on. Each
            # message holds its event's own id, so two puts are never taken for one.
            Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
        )["QueueUrl"]
        arn = self._sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self._events.put_rule(
            Name=OBSERVER_RULE,
            EventBusName=bus,
            EventPattern=MATCH_EVERY_EVENT,
            Description="jobtriggers local runtime: every event, for GET /local/events",
        )
        self._events.put_targets(
            Rule=OBSERVER_RULE,
            EventBusName=bus,
            Targets=[{"Id": "local-runtime", "Arn": arn, "SqsParameters": {"MessageGroupId": bus}}],
        )
        return str(queue)

    def start_draining(self, interval: float = DRAIN_SECONDS) -> EventBuses:
        """Drain the observers' queues every `interval` seconds until `stop()`."""

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.drain()
                except Exception:  # the store stopping under it, a moment's fault: next round
                    log.debug("draining the event observers failed", exc_info=True)

        self._drainer = threading.Thread(target=loop, name="local-event-observers", daemon=True)
        self._drainer.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._drainer is not None:
            self._drainer.join(timeout=5)
            self._drainer = None

    def drain(self) -> int:
        """Move what the observers' queues hold into the list; how many events were new."""
        added = 0
        with self._lock:
            for bus, queue in self._queues.items():
                while True:
                    messages = self._sqs.receive_message(
                        QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0
                    ).get("Messages", [])
                    if not messages:
                        break
                    for message in messages:
                        event = json.loads(message["Body"])
                        self._seen.append({"bus": bus, **event})
                        added += 1
                    handles = [
                        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)
                    ]
                    self._sqs.delete_message_batch(QueueUrl=queue, Entries=handles)
        return added

    def events(self, job_id: str | None = None, bus: str | None = None) -> list[dict[str, Any]]:
        """Every event put on the buses so far, oldest first; only one job's (`detail.job_id`), or
        one bus's (its logical id or name), when asked."""
        self.drain()
        wanted_bus = self.names.get(bus, bus) if bus else None
        with self._lock:
            seen = list(self._seen)
        return [
            e
            for e in seen
            if (job_id is None or (e.get("detail") or {}).get("job_id") == job_id)
            and (wanted_bus is None or e["bus"] == wanted_bus)
        ]
