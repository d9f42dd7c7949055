"""The template's `Type: Schedule` events (EventBridge rules) for the local runtime.

An enabled rate(...) rule invokes its function every interval, first one interval after the
runtime starts, asynchronously (as EventBridge does: the rule does not wait for the function, and
two runs may overlap when one is slower than the rate). A disabled rule never fires by itself.
`run(function)` fires a function's schedule event now, enabled or not, and returns what the
function returned: what tests and people use instead of waiting hours. cron(...) rules are run only
on demand (their calendar is not emulated).

The event is EventBridge's "Scheduled Event" (or the rule's Input, when it sets one).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jobtriggers.local.template import LOCAL_ACCOUNT, ScheduleEvent

log = logging.getLogger("local_runtime.schedules")

Invoke = Callable[[str, dict[str, Any]], Any]


def scheduled_event(
    schedule: ScheduleEvent, region: str, account: str, rule_name: str, now: float | None = None
) -> dict[str, Any]:
    """What EventBridge sends the function when the rule fires."""
    if schedule.event_input is not None:
        event: dict[str, Any] = json.loads(schedule.event_input)
        return event
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{account}:rule/{rule_name}"],
        "detail": {},
    }


class Scheduler:
    """Fires enabled rate(...) schedules on time; `run()` fires one on demand."""

    def __init__(
        self,
        schedules: list[ScheduleEvent],
        invoke: Invoke,
        *,
        region: str = "us-east-1",
        account: str = LOCAL_ACCOUNT,
        rule_prefix: str = "jobtriggers-local",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.schedules = list(schedules)
        self.invoke = invoke
        self.region = region
        self.account = account
        self.rule_prefix = rule_prefix
        self.clock = clock
        self.runs: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self._next: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def timed(self) -> list[ScheduleEvent]:
        """The schedules that fire by themselves: enabled, with a rate."""
        return [s for s in self.schedules if s.enabled and s.interval_seconds]

    def arm(self) -> None:
        """Each timed schedule's first run: one interval from now."""
        now = self.clock()
        with self._lock:
            for s in self.timed:
                self._next[(s.function, s.name)] = now + float(s.interval_seconds or 0)

    def start(self) -> None:
        """Arm the schedules and fire them on time from a thread of their own."""
        self.arm()
        if not self.timed:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            with self._lock:
                waits = [t - self.clock() for t in self._next.values()]
            self._stop.wait(max(0.05, min([1.0, *waits])))

    def tick(self, now: float | None = None) -> list[ScheduleEvent]:
        """Fire (in the background) every timed schedule that is due; the ones fired."""
        now = self.clock() if now is None else now
        fired = []
        with self._lock:
            for s in self.timed:
                key = (s.function, s.name)
                if now >= self._next.get(key, float("inf")):
                    self._next[key] = now + float(s.interval_seconds or 0)
                    fired.append(s)
        for s in fired:
            threading.Thread(target=self._fire, args=(s,), name=f"schedule-{s.name}", daemon=True).start()
        return fired

    def find(self, function: str, name: str | None = None) -> ScheduleEvent:
        for s in self.schedules:
            if s.function == function and (name is None or s.name == name):
                return s
        known = ", ".join(f"{s.function}.{s.name}" for s in self.schedules) or "none"
        raise KeyError(f"{function} has no schedule event{f' {name}' if name else ''} (schedules: {known})")

    def run(self, function: str, name: str | None = None) -> Any:
        """Fire the function's schedule event now and return what the function returned."""
        return self._fire(self.find(function, name), raise_errors=True)

    def _fire(self, schedule: ScheduleEvent, raise_errors: bool = False) -> Any:
        rule = f"{self.rule_prefix}-{schedule.function}{schedule.name}"
        event = scheduled_event(schedule, self.region, self.account, rule, self.clock())
        key = f"{schedule.function}.{schedule.name}"
        try:
            result = self.invoke(schedule.function, event)
        except Exception as exc:
            with self._lock:
                self.failures[key] += 1
            if raise_errors:
                raise
            log.error("scheduled %s failed: %s", key, exc)
            return None
        with self._lock:
            self.runs[key] += 1
        return result

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                f"{s.function}.{s.name}": {
                    "expression": s.expression,
                    "enabled": s.enabled,
                    "runs": self.runs[f"{s.function}.{s.name}"],
                    "failures": self.failures[f"{s.function}.{s.name}"],
                }
                for s in self.schedules
            }
