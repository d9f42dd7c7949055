"""Fault injection for DynamoDB (and Streams) calls: fail a fraction of requests where the network
and the service would fail them.

One policy (FaultInjector: rate, seed, kinds, which operations, counters), two places to apply it:

- a botocore `before-send` hook on a client of this process, for code that runs here
  (integration tests):

      with FaultInjector(rate=0.2, seed=7).attached(dynamodb()) as faults:
          ...

- the local runtime's DynamoDB proxy, for the functions in its worker processes (e2e tests):

      with FaultInjector(rate=0.2, seed=7).attached(local_runtime.proxy) as faults:
          ...

Either way it sits under botocore's retry logic, so the code under test sees what it would see on
AWS: throttles and 500s that botocore retries (standard mode) and, past its attempts, a ClientError;
requests that never reach the table (a timeout); and the nasty one, a *lost response*: the request
reached the table and was applied, and the client saw no answer, so its retry repeats a write that
already happened (the store keeps TransactWriteItems' ClientRequestToken as DynamoDB does, so a
retried transaction is not applied twice). In-process a dropped answer is botocore's
ReadTimeoutError; through the proxy it is a closed connection (ConnectionClosedError). Both are
HTTPClientErrors, retried alike.

Adding a kind: one entry in KINDS, naming what happens to a request it hits (an Answer in the
store's place, or a Drop before or after the store applied it) and, if it only makes sense for some
operations, which. ALL_KINDS, the default, lists the kinds every fault test gets.

The RNG is seeded; under threads the order of draws varies, the rate does not.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import urllib3
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ReadTimeoutError
from botocore.retries.standard import ExponentialBackoff

from jobtriggers.local.proxy import Answer, Drop, Outcome, error_body

THROTTLE = "throttle"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
LOST_RESPONSE = "lost_response"


@dataclass(frozen=True)
class FaultKind:
    """What a fault of this kind does to a request (operation, body) it hits; `operations`: the
    only operations it can hit (None: any)."""

    outcome: Callable[[str, bytes], Outcome]
    operations: frozenset[str] | None = None

    def hits(self, operation: str) -> bool:
        return self.operations is None or operation in self.operations


def answered(status: int, code: str, message: str) -> Callable[[str, bytes], Outcome]:
    """An error answer in DynamoDB's place (the request never reaches the table)."""
    body = error_body(code, message)
    return lambda _operation, _body: Answer(status, body)


KINDS: dict[str, FaultKind] = {
    THROTTLE: FaultKind(
        answered(
            400,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput was exceeded",
        )
    ),
    SERVER_ERROR: FaultKind(answered(500, "InternalServerError", "Internal server error (injected)")),
    # No answer; the request never reached the table.
    TIMEOUT: FaultKind(lambda _operation, _body: Drop(apply=False)),
    # No answer; the request reached the table and was applied.
    LOST_RESPONSE: FaultKind(lambda _operation, _body: Drop(apply=True)),
}
ALL_KINDS = (THROTTLE, SERVER_ERROR, TIMEOUT, LOST_RESPONSE)
# Opt-in (not in ALL_KINDS): TransactWriteItems cancelled because another transaction held one of
# its items at that moment. Nothing is written; DynamoDB says so with the TransactionConflict
# reason, which is not a failed condition. Other operations never get this kind.
CONFLICT = "conflict"


def _transaction_conflict(_operation: str, body: bytes) -> Outcome:
    n = max(transaction_items(body), 1)
    reasons = [{"Code": "None"}] * (n - 1) + [
        {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
    ]
    message = (
        "Transaction cancelled, please refer cancellation reasons for specific reasons ["
        + ", ".join(r["Code"] for r in reasons)
        + "]"
    )
    return Answer(400, error_body("TransactionCanceledException", message, CancellationReasons=reasons))


KINDS[CONFLICT] = FaultKind(_transaction_conflict, operations=frozenset({"TransactWriteItems"}))


class _Body:
    """The `raw` an AWSResponse reads its content from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


class FaultInjector:
    """Fail `rate` of the matching calls, choosing a fault kind uniformly from `kinds` (among those
    that can hit the call's operation).

    `operations` limits faults to those API operations (e.g. {"PutItem"}); by default every
    DynamoDB operation may fail. `only_if_body_contains` limits them to requests that mention a
    string, or every one of several (a sustained fault on one item: rate=1 and the item's key).
    `max_faults` stops injecting after that many (one lost answer of one call: rate=1, max_faults=1).
    Counters: `calls` (seen), `faults` (by kind), `by_operation`.
    """

    def __init__(
        self,
        rate: float,
        seed: int = 0,
        kinds: Sequence[str] = ALL_KINDS,
        operations: set[str] | None = None,
        only_if_body_contains: str | Sequence[str] | None = None,
        max_faults: int | None = None,
    ) -> None:
        if not 0 <= rate <= 1:
            raise ValueError("rate is a fraction between 0 and 1")
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; use {sorted(KINDS)}")
        self.rate = rate
        self.kinds = tuple(kinds)
        self.operations = operations
        wanted = [only_if_body_contains] if isinstance(only_if_body_contains, str) else only_if_body_contains
        self.only_if_body_contains = [w.encode() for w in wanted] if wanted else None
        self.max_faults = max_faults
        self.enabled = True
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._http = urllib3.PoolManager(maxsize=16)
        self.calls = 0
        self.faults: Counter[str] = Counter()
        self.by_operation: Counter[str] = Counter()

    # ------------------------------------------------------------------ wiring

    @contextmanager
    def attached(self, *targets: Any) -> Iterator[FaultInjector]:
        """Fail the targets' calls for the block: boto3 clients of this process (DynamoDB or
        DynamoDB Streams), or the local runtime's proxy (or the runtime itself), whose worker
        processes' calls pass through it."""
        with ExitStack() as stack:
            for target in targets:
                proxy = getattr(target, "proxy", target)
                if hasattr(proxy, "hooked"):
                    stack.enter_context(proxy.hooked(self.decide))
                else:
                    stack.enter_context(self._hooked_client(target))
            yield self

    @contextmanager
    def _hooked_client(self, client: Any) -> Iterator[None]:
        unique = f"fault-injector-{uuid.uuid4().hex}"
        event = f"before-send.{client.meta.service_model.service_id.hyphenize()}.*"
        client.meta.events.register(event, self._before_send, unique_id=unique)
        try:
            yield
        finally:
            client.meta.events.unregister(event, unique_id=unique)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No faults inside the block (a test's own checks must see the truth)."""
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    # ------------------------------------------------------------------ the policy

    def _choose(self, operation: str, body: bytes) -> str | None:
        with self._lock:
            if not self.enabled or (self.operations is not None and operation not in self.operations):
                return None
            if self.only_if_body_contains is not None and not all(
                w in body for w in self.only_if_body_contains
            ):
                return None
            if self.max_faults is not None and sum(self.faults.values()) >= self.max_faults:
                return None
            candidates = [k for k in self.kinds if KINDS[k].hits(operation)]
            if not candidates:
                return None
            self.calls += 1
            if self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(candidates)
            self.faults[kind] += 1
            self.by_operation[operation] += 1
            return kind

    def decide(self, operation: str, body: bytes) -> Outcome | None:
        """What happens to this request: None (it goes through) or a fault's outcome."""
        kind = self._choose(operation, body)
        return None if kind is None else KINDS[kind].outcome(operation, body)

    # ------------------------------------------------------------------ in this process: botocore

    def _before_send(self, request: Any, event_name: str = "", **_: Any) -> AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]
        raw = request.body or b""
        body = raw.encode() if isinstance(raw, str) else bytes(raw)
        outcome = self.decide(operation, body)
        if outcome is None:
            return None  # botocore sends the request
        if isinstance(outcome, Answer):
            headers = HTTPHeaders()
            headers["Content-Type"] = outcome.content_type
            headers["x-amzn-RequestId"] = uuid.uuid4().hex
            return AWSResponse(request.url, outcome.status, headers, _Body(outcome.body))
        if outcome.apply:
            # The request arrives and is applied; only its answer is lost.
            self._http.request(
                request.method, request.url, body=body, headers=dict(request.headers.items()), retries=False
            )
        raise ReadTimeoutError(endpoint_url=request.url)

    # ------------------------------------------------------------------ reporting

    @property
    def injected(self) -> int:
        return sum(self.faults.values())

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": self.calls,
                "injected": sum(self.faults.values()),
                "rate_observed": round(sum(self.faults.values()) / self.calls, 3) if self.calls else 0.0,
                "by_kind": dict(self.faults),
                "by_operation": dict(self.by_operation),
            }


def transaction_items(body: bytes) -> int:
    """How many actions a TransactWriteItems request body holds (for kinds that answer per action)."""
    return len(json.loads(body).get("TransactItems", []))


@contextmanager
def fast_backoff(scale: float = 0.02) -> Iterator[None]:
    """Shrink botocore's retry delays (throttles back off 1 s, 2 s, 4 s ...) by `scale`, in this
    process (the local runtime's worker processes back off in real time, as Lambda's would).

    Time compression, as an injectable clock would be: which calls are retried, how often and with
    what retry quota stays botocore's own decision; only the sleeping is shorter.
    """
    original = ExponentialBackoff.delay_amount

    def scaled(self: ExponentialBackoff, context: Any) -> float:
        return float(original(self, context)) * scale

    ExponentialBackoff.delay_amount = scaled  # type: ignore[method-assign]
    try:
        yield
    finally:
        ExponentialBackoff.delay_amount = original  # type: ignore[method-assign]
