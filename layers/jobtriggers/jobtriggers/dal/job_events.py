"""The job events table, the counts table and the job events bus (EventBridge).

Job events table (pk `job_id`, sk `version`): one item per transition of a job,
    {job_id, version, workflow_id, status, previous_status?, at, by, events: [<JobEvent>, ...],
     published?: true, published_at?}
Counts table (pk `scope`):
    `workflow#<workflow_id>`: {scope, workflow_id, kind: "workflow", pending?, claimed?, done?,
        failed?, cancelled?} (numbers; a status's attribute appears once a job of that status was
        counted; `kind` puts it in the keys-only index `by_kind`, the list of counted workflows)
    `site#<site_id>#<yyyy-mm-ddThh>`: {scope, site_id, hour, claims}
    `held#<site_id>`: {scope, site_id, jobs} (the jobs the site holds now: claimed by it)

Recording a transition is one TransactWriteItems: the Put of its item, conditional on it not
existing, and the counts' ADDs. The condition makes it apply once, however often it is sent: a
retry whose first answer was lost, or a redelivered record, is cancelled with ConditionalCheckFailed
and the item as it is (ReturnValuesOnConditionCheckFailure), which says whether its events were
published. No ClientRequestToken, on purpose: for 10 minutes DynamoDB would answer a repeat with
the first call's success, which cannot be told from a first recording, and a record redelivered in
that time (after a crash past the `published` mark) would be published again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from jobtriggers.dal.dynamo import (
    RETRYABLE_CODES,
    client,
    dynamodb,
    error_code,
    from_item,
    raise_store_error,
    to_attr,
    to_item,
)
from jobtriggers.dal.pages import query_all
from jobtriggers.errors import JobTriggersError, RetryableStoreError
from jobtriggers.models import iso, utcnow
from jobtriggers.models.job_events import (
    COUNTED_STATUSES,
    JOB_EVENT_SOURCE,
    CountDelta,
    JobEvent,
    JobTransition,
    JobTransitionRecord,
    Recorded,
    SiteHourClaims,
    WorkflowCounts,
)
from jobtriggers.settings import job_events_bus_settings, job_events_settings

if TYPE_CHECKING:
    from collections.abc import Callable

# EventBridge takes at most 10 entries per PutEvents call.
PUT_EVENTS_MAX_ENTRIES = 10
# DynamoDB's BatchGetItem reads at most 100 keys per call.
BATCH_GET_MAX_KEYS = 100
# How often unprocessed keys of a BatchGetItem are asked for again before it gives up.
BATCH_GET_ROUNDS = 5
# The counts table's sparse index of workflow items (`kind` = WORKFLOW_KIND), keys only.
COUNTS_KIND_INDEX = "by_kind"
WORKFLOW_KIND = "workflow"


def transition_item(transition: JobTransition) -> dict[str, Any]:
    """The job events table's item for a transition: only what the record holds, the same on every
    delivery of it."""
    return {
        "job_id": transition.job_id,
        "version": transition.version,
        "workflow_id": transition.workflow_id,
        "status": transition.status,
        "previous_status": transition.previous_status,
        "at": transition.at,
        "by": transition.by,
        "events": [e.model_dump(mode="json", exclude_none=True) for e in transition.events],
    }


def _count_update(table: str, scope: str, deltas: Sequence[CountDelta]) -> dict[str, Any]:
    """One Update of a counts item: ADD each delta, and SET what the item is about (readable ids)."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    adds: list[str] = []
    for i, delta in enumerate(deltas):
        names[f"#a{i}"] = delta.attribute
        values[f":d{i}"] = to_attr(delta.delta)
        adds.append(f"#a{i} :d{i}")
    sets: list[str] = []
    if scope.startswith("workflow#"):
        # `kind` puts the item in the by_kind index (the workflows ever counted); the same value on
        # every update, so the keys-only index is written once per workflow.
        names.update({"#wf": "workflow_id", "#kind": "kind"})
        values.update({":wf": to_attr(scope.removeprefix("workflow#")), ":kind": to_attr(WORKFLOW_KIND)})
        sets.append("#wf = :wf, #kind = :kind")
    elif scope.startswith("site#"):
        site_id, _, hour = scope.removeprefix("site#").rpartition("#")
        names.update({"#site": "site_id", "#hour": "hour"})
        values.update({":site": to_attr(site_id), ":hour": to_attr(hour)})
        sets.append("#site = :site, #hour = :hour")
    elif scope.startswith("held#"):
        names["#site"] = "site_id"
        values[":site"] = to_attr(scope.removeprefix("held#"))
        sets.append("#site = :site")
    expression = "ADD " + ", ".join(adds) + (" SET " + ", ".join(sets) if sets else "")
    return {
        "Update": {
            "TableName": table,
            "Key": to_item({"scope": scope}),
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }


def _merged(deltas: Iterable[CountDelta]) -> dict[str, list[CountDelta]]:
    """Deltas by scope, one per attribute (DynamoDB refuses two actions on one attribute, and one
    transaction may touch an item once); deltas that cancel out are dropped."""
    sums: dict[tuple[str, str], int] = {}
    for d in deltas:
        sums[(d.scope, d.attribute)] = sums.get((d.scope, d.attribute), 0) + d.delta
    out: dict[str, list[CountDelta]] = {}
    for (scope, attribute), total in sums.items():
        if total:
            out.setdefault(scope, []).append(CountDelta(scope, attribute, total))
    return out


class JobEventsStore:
    """Writes transitions and counts (the job events consumer) and reads them (the board)."""

    def __init__(self, events_table: str | None = None, counts_table: str | None = None) -> None:
        settings = None if events_table and counts_table else job_events_settings()
        self.events_table = events_table or (settings.job_events_table if settings else "")
        self.counts_table = counts_table or (settings.counts_table if settings else "")

    # ------------------------------------------------------------------ the consumer

    def record(self, transition: JobTransition) -> Recorded:
        """Put the transition's item and ADD its counts, in one transaction; `applied=False` when
        the item existed already (nothing was counted), with its `published` flag."""
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.events_table,
                    "Item": to_item(transition_item(transition)),
                    "ConditionExpression": "attribute_not_exists(job_id)",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }
        ]
        items += [_count_update(self.counts_table, s, d) for s, d in _merged(transition.deltas).items()]
        action = f"record version {transition.version} of job {transition.job_id}"
        try:
            dynamodb().transact_write_items(TransactItems=items)  # type: ignore[arg-type]
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise_store_error(exc, action)
            reasons: list[Any] = list(exc.response.get("CancellationReasons", []))
            codes = [str(r.get("Code", "None")) for r in reasons]
            if codes and codes[0] == "ConditionalCheckFailed" and all(c == "None" for c in codes[1:]):
                existing = from_item(reasons[0].get("Item") or {})
                return Recorded(applied=False, published=bool(existing.get("published")))
            # A conflict with another transaction, a throttle on one item: nothing was written.
            raise RetryableStoreError(
                f"the store cancelled the transaction to {action} ({', '.join(codes)}); retry"
            ) from exc
        except BotoCoreError as exc:
            raise_store_error(exc, action)
        return Recorded(applied=True)

    def mark_published(self, transition: JobTransition, at: datetime | None = None) -> None:
        """Note that the transition's events are on the bus, so a redelivery does not put them again."""
        try:
            dynamodb().update_item(
                TableName=self.events_table,
                Key=to_item({"job_id": transition.job_id, "version": transition.version}),
                UpdateExpression="SET published = :t, published_at = :at",
                ConditionExpression="attribute_exists(job_id)",
                ExpressionAttributeValues={":t": to_attr(True), ":at": to_attr(iso(at or utcnow()))},
            )
        except (ClientError, BotoCoreError) as exc:
            raise_store_error(exc, f"mark version {transition.version} of job {transition.job_id} published")

    # ------------------------------------------------------------------ the board

    def transitions(self, job_id: str) -> list[JobTransitionRecord]:
        """Every transition of a job, oldest first (one Query; a job has a handful)."""
        items = query_all(
            table=self.events_table,
            key_condition="job_id = :j",
            values={":j": job_id},
            action=f"read the events of job {job_id}",
        )
        return [JobTransitionRecord.model_validate(i) for i in items]

    def events(self, job_id: str) -> list[JobEvent]:
        """Every event of a job, in the order they happened."""
        return [event for t in self.transitions(job_id) for event in t.events]

    def workflow_counts(self, workflow_ids: Iterable[str]) -> dict[str, WorkflowCounts]:
        """Each workflow's jobs by status; a workflow no job was counted for has zeros."""
        wanted = list(dict.fromkeys(workflow_ids))
        items = self._get_scopes([f"workflow#{w}" for w in wanted])
        out: dict[str, WorkflowCounts] = {}
        for workflow_id in wanted:
            item = items.get(f"workflow#{workflow_id}", {})
            counts = {s: int(item.get(s, 0)) for s in COUNTED_STATUSES}
            out[workflow_id] = WorkflowCounts(workflow_id=workflow_id, **counts)
        return out

    def counted_workflow_ids(self) -> list[str]:
        """Every workflow the counts table has an item for, sorted: those of the registry that had
        jobs, and those that left the registry (or never were in it) with their jobs. One Query of
        the keys-only `by_kind` index (a few bytes a workflow), never a Scan.

        A workflow item counted before the index existed enters it with its next count update."""
        items = query_all(
            table=self.counts_table,
            index=COUNTS_KIND_INDEX,
            key_condition="#kind = :kind",
            names={"#kind": "kind"},
            values={":kind": WORKFLOW_KIND},
            action="list the counted workflows",
        )
        return sorted(str(i["scope"]).removeprefix("workflow#") for i in items)

    def site_claims(self, site_ids: Iterable[str], hours: Iterable[str]) -> list[SiteHourClaims]:
        """Claims per site and hour (hours as `yyyy-mm-ddThh`, UTC); zero where none was counted."""
        pairs = [(s, h) for s in dict.fromkeys(site_ids) for h in dict.fromkeys(hours)]
        items = self._get_scopes([f"site#{s}#{h}" for s, h in pairs])
        return [
            SiteHourClaims(site_id=s, hour=h, claims=int(items.get(f"site#{s}#{h}", {}).get("claims", 0)))
            for s, h in pairs
        ]

    def site_holdings(self, site_ids: Iterable[str]) -> dict[str, int]:
        """How many jobs each site holds now (claimed by it); zero where none was counted."""
        wanted = list(dict.fromkeys(site_ids))
        items = self._get_scopes([f"held#{s}" for s in wanted])
        return {s: int(items.get(f"held#{s}", {}).get("jobs", 0)) for s in wanted}

    def _get_scopes(self, scopes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Counts items by scope: BatchGetItem, 100 keys a call, unprocessed keys asked for again."""
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(scopes), BATCH_GET_MAX_KEYS):
            keys: list[dict[str, Any]] = [
                to_item({"scope": s}) for s in scopes[start : start + BATCH_GET_MAX_KEYS]
            ]
            for _ in range(BATCH_GET_ROUNDS):
                try:
                    resp: dict[str, Any] = dict(
                        dynamodb().batch_get_item(RequestItems={self.counts_table: {"Keys": keys}})
                    )
                except (ClientError, BotoCoreError) as exc:
                    raise_store_error(exc, "read the job counts")
                for item in resp.get("Responses", {}).get(self.counts_table, []):
                    plain = from_item(item)
                    out[str(plain["scope"])] = plain
                keys = list(resp.get("UnprocessedKeys", {}).get(self.counts_table, {}).get("Keys", []))
                if not keys:
                    break
            else:
                raise RetryableStoreError("the store left job counts unread after 5 rounds; retry")
        return out


class PublishFailed(JobTriggersError):
    """EventBridge refused some of the entries (FailedEntryCount > 0), or could not be reached."""


class JobEventsBus:
    """PutEvents to the job events bus (Source `jobtriggers`, DetailType = the event's type)."""

    def __init__(self, bus_name: str | None = None, client_factory: Callable[[], Any] | None = None) -> None:
        self.bus_name = bus_name or job_events_bus_settings().job_events_bus
        self._client_factory = client_factory or (lambda: client("events"))
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def publish(self, events: Sequence[JobEvent]) -> None:
        """Put the events, in order; raises PublishFailed unless every entry was accepted."""
        for start in range(0, len(events), PUT_EVENTS_MAX_ENTRIES):
            chunk = events[start : start + PUT_EVENTS_MAX_ENTRIES]
            entries = [
                {
                    "Source": JOB_EVENT_SOURCE,
                    "DetailType": e.type,
                    "Detail": json.dumps(e.model_dump(mode="json"), separators=(",", ":")),
                    "EventBusName": self.bus_name,
                    # The event's `time` is when the transition happened, not when it was published.
                    "Time": datetime.fromisoformat(e.occurred_at.replace("Z", "+00:00")),
                }
                for e in chunk
            ]
            try:
                resp = self.client.put_events(Entries=entries)
            except ClientError as exc:
                code = error_code(exc)
                kind = RetryableStoreError if code in RETRYABLE_CODES else PublishFailed
                raise kind(f"EventBridge answered {code} to PutEvents on {self.bus_name}; retry") from exc
            except BotoCoreError as exc:
                raise RetryableStoreError(f"EventBridge could not be reached ({exc}); retry") from exc
            failed = [
                (e.event_id, r.get("ErrorCode"), r.get("ErrorMessage"))
                for e, r in zip(chunk, resp.get("Entries", []), strict=False)
                if r.get("ErrorCode")
            ]
            if resp.get("FailedEntryCount") or failed:
                raise PublishFailed(
                    f"EventBridge refused {resp.get('FailedEntryCount') or len(failed)} of {len(entries)} "
                    f"events on {self.bus_name}: {failed}"
                )
