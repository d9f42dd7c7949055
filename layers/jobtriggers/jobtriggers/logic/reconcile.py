"""Reconcile: every object that carries a triggered type has its jobs.

One loop serves `jobtriggers reconcile` (an operator's repair) and the scheduled ReconcilerFunction
(the safety net the NMDC Runtime's polling sensor was). Dead letters of the stream carry only shard
and sequence numbers, so the object-type table, read through its type index, is the truth to
reconcile from. Every put is conditional: running it twice, or beside the stream, makes nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit

from jobtriggers.errors import NotFoundError
from jobtriggers.logic.triggering import Resolution, TaggedObjects
from jobtriggers.models import Trigger
from jobtriggers.observability import logger, metrics


class TriggerSource(Protocol):
    def list_all(self, kind: str) -> list[Any]: ...


class Backfiller(Protocol):
    """Makes a trigger's jobs for objects tagged before it (TriggerResolver; fakes in tests)."""

    def backfill(
        self,
        trigger: Trigger,
        objects: TaggedObjects,
        page_size: int = ...,
        progress: Callable[[int, int], None] | None = ...,
    ) -> Resolution: ...


@dataclass
class TriggerReconciled:
    """What reconciling one trigger did."""

    trigger_id: str
    created: int
    already_present: int


def select_triggers(registry: TriggerSource, trigger_ids: Iterable[str] | None = None) -> list[Trigger]:
    """All triggers, or the named ones; an unknown id is an error that names it."""
    triggers: list[Trigger] = registry.list_all("trigger")
    wanted = set(trigger_ids or ())
    if not wanted:
        return triggers
    unknown = sorted(wanted - {t.id for t in triggers})
    if unknown:
        raise NotFoundError(f"no such trigger: {', '.join(unknown)} (see GET /triggers)")
    return [t for t in triggers if t.id in wanted]


def reconcile_triggers(
    triggers: Iterable[Trigger],
    resolver: Backfiller,
    objects: TaggedObjects,
    progress: Callable[[Trigger], Callable[[int, int], None] | None] | None = None,
) -> list[TriggerReconciled]:
    """Backfill each trigger; `progress(trigger)` may return a per-trigger (seen, created) callback.

    `JobsReconciled` counts jobs the stream should have made and did not: above zero after a
    quiet period means records were lost (see docs/operations.md).
    """
    out: list[TriggerReconciled] = []
    for trigger in triggers:
        tick = progress(trigger) if progress else None
        result = resolver.backfill(trigger, objects, progress=tick)
        out.append(TriggerReconciled(trigger.id, len(result.created), len(result.already_present)))
    created = sum(r.created for r in out)
    metrics.add_metric(name="JobsReconciled", unit=MetricUnit.Count, value=created)
    logger.info(
        "reconcile finished",
        extra={
            "triggers": len(out),
            "jobs_created": created,
            "already_present": sum(r.already_present for r in out),
        },
    )
    return out


def reconcile_everything(
    registry: TriggerSource, resolver: Backfiller, objects: TaggedObjects
) -> dict[str, Any]:
    """The scheduled run: every trigger, a summary for the invocation's result."""
    results = reconcile_triggers(select_triggers(registry), resolver, objects)
    return {
        "triggers": len(results),
        "jobs_created": sum(r.created for r in results),
        "already_present": sum(r.already_present for r in results),
    }
