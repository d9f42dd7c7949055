"""Fault injection for DynamoDB (and Streams) calls: a botocore `before-send` hook that fails a
fraction of requests.

It sits where the network would fail, under botocore's retry logic, so what the code under test sees
is what it would see on AWS: throttles and 500s that botocore retries (standard mode) and, past its
attempts, a ClientError; read timeouts before the request left; and the nasty one, a *lost
response*: the request reached the table and was applied, and the client saw a timeout, so its
retry repeats a write that already happened.

    with FaultInjector(rate=0.2, seed=7).attached(dynamodb()) as faults:
        ...
    print(faults.summary())

The RNG is seeded; under threads the order of draws varies, the rate does not.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import urllib3
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ReadTimeoutError
from botocore.retries.standard import ExponentialBackoff

THROTTLE = "throttle"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
LOST_RESPONSE = "lost_response"
ALL_KINDS = (THROTTLE, SERVER_ERROR, TIMEOUT, LOST_RESPONSE)
# Opt-in (not in ALL_KINDS): TransactWriteItems cancelled because another transaction held one of
# its items at that moment. Nothing is written; DynamoDB says so with the TransactionConflict
# reason, which is not a failed condition. Other operations never get this kind.
CONFLICT = "conflict"
KNOWN_KINDS = (*ALL_KINDS, CONFLICT)

_DYNAMODB_ERRORS = {
    THROTTLE: (
        400,
        "ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput was exceeded",
    ),
    SERVER_ERROR: (500, "InternalServerError", "Internal server error (injected)"),
}


def _client_request_token(operation: str, body: bytes) -> str | None:
    if operation != "TransactWriteItems" or b"ClientRequestToken" not in body:
        return None
    token = json.loads(body).get("ClientRequestToken")
    return str(token) if token else None


class _Body:
    """The `raw` an AWSResponse reads its content from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


class FaultInjector:
    """Fail `rate` of the matching calls, choosing a fault kind uniformly from `kinds`.

    `operations` limits faults to those API operations (e.g. {"PutItem"}); by default every
    DynamoDB operation may fail. `only_if_body_contains` limits them to requests that mention a
    string (a sustained fault on one item: rate=1 and the item's key).
    Counters: `calls` (seen), `faults` (by kind), `by_operation`.
    """

    def __init__(
        self,
        rate: float,
        seed: int = 0,
        kinds: Sequence[str] = ALL_KINDS,
        operations: set[str] | None = None,
        only_if_body_contains: str | None = None,
    ) -> None:
        if not 0 <= rate <= 1:
            raise ValueError("rate is a fraction between 0 and 1")
        unknown = set(kinds) - set(KNOWN_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; use {KNOWN_KINDS}")
        self.rate = rate
        self.kinds = tuple(kinds)
        self.operations = operations
        self.only_if_body_contains = only_if_body_contains.encode() if only_if_body_contains else None
        self.enabled = True
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._http = urllib3.PoolManager(maxsize=16)
        self.calls = 0
        self.replayed = 0
        self._answers: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.faults: Counter[str] = Counter()
        self.by_operation: Counter[str] = Counter()

    # ------------------------------------------------------------------ wiring

    @contextmanager
    def attached(self, *clients: Any) -> Iterator[FaultInjector]:
        """Register on the clients' `before-send` events (DynamoDB or DynamoDB Streams) for the block."""
        unique = f"fault-injector-{uuid.uuid4().hex}"
        events = [f"before-send.{c.meta.service_model.service_id.hyphenize()}.*" for c in clients]
        for client, event in zip(clients, events, strict=True):
            client.meta.events.register(event, self._before_send, unique_id=unique)
        try:
            yield self
        finally:
            for client, event in zip(clients, events, strict=True):
                client.meta.events.unregister(event, unique_id=unique)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No faults inside the block (a test's own checks must see the truth)."""
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    # ------------------------------------------------------------------ the hook

    def _choose(self, operation: str, body: bytes) -> str | None:
        with self._lock:
            if not self.enabled or (self.operations is not None and operation not in self.operations):
                return None
            if self.only_if_body_contains is not None and self.only_if_body_contains not in body:
                return None
            kinds = (
                self.kinds
                if operation == "TransactWriteItems"
                else tuple(k for k in self.kinds if k != CONFLICT)
            )
            if not kinds:
                return None
            self.calls += 1
            if self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(kinds)
            self.faults[kind] += 1
            self.by_operation[operation] += 1
            return kind

    def _before_send(self, request: Any, event_name: str = "", **_: Any) -> AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]
        raw = request.body or b""
        body = raw.encode() if isinstance(raw, str) else bytes(raw)
        replay = self._idempotent_replay(operation, body)
        if replay is not None:
            return replay
        kind = self._choose(operation, body)
        if kind is None:
            return None  # botocore sends the request
        if kind in _DYNAMODB_ERRORS:
            status, code, message = _DYNAMODB_ERRORS[kind]
            error = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message})
            headers = HTTPHeaders()
            headers["Content-Type"] = "application/x-amz-json-1.0"
            headers["x-amzn-RequestId"] = uuid.uuid4().hex
            return AWSResponse(request.url, status, headers, _Body(error.encode()))
        if kind == CONFLICT:
            return _transaction_conflict(request.url, body)
        if kind == LOST_RESPONSE:
            # The request arrives and is applied; only its answer is lost.
            answer = self._http.request(
                request.method, request.url, body=body, headers=dict(request.headers.items()), retries=False
            )
            self._remember_for_replay(operation, body, answer)
        raise ReadTimeoutError(endpoint_url=request.url)

    # DynamoDB makes TransactWriteItems idempotent on its ClientRequestToken (botocore fills it in
    # once per call, so its retries carry the same token): a retry of a transaction that went
    # through gets the first answer again instead of a cancellation. moto does not keep tokens;
    # replaying the lost answer here keeps a lost response as harmless as it is on AWS.

    def _remember_for_replay(self, operation: str, body: bytes, answer: Any) -> None:
        token = _client_request_token(operation, body)
        if token and 200 <= answer.status < 300:
            with self._lock:
                self._answers[token] = (answer.status, dict(answer.headers), answer.data)

    def _idempotent_replay(self, operation: str, body: bytes) -> AWSResponse | None:
        token = _client_request_token(operation, body)
        with self._lock:
            stored = self._answers.get(token) if token else None
            if stored:
                self.replayed += 1
        if not stored:
            return None
        status, header_map, data = stored
        headers = HTTPHeaders()
        for k, v in header_map.items():
            headers[k] = v
        return AWSResponse("", status, headers, _Body(data))

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
                "idempotent_replays": self.replayed,
            }


def _transaction_conflict(url: str, body: bytes) -> AWSResponse:
    """TransactWriteItems' answer when another transaction was on one of its items: cancelled, with
    one reason per item, the last one TransactionConflict (as DynamoDB words it)."""
    count = max(len(json.loads(body).get("TransactItems", [])), 1)
    reasons = [{"Code": "None"}] * (count - 1)
    reasons.append({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"})
    error = {
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "message": "Transaction cancelled, please refer cancellation reasons for specific reasons "
        f"[{', '.join(r['Code'] for r in reasons)}]",
        "CancellationReasons": reasons,
    }
    headers = HTTPHeaders()
    headers["Content-Type"] = "application/x-amz-json-1.0"
    headers["x-amzn-RequestId"] = uuid.uuid4().hex
    return AWSResponse(url, 400, headers, _Body(json.dumps(error).encode()))


@contextmanager
def fast_backoff(scale: float = 0.02) -> Iterator[None]:
    """Shrink botocore's retry delays (throttles back off 1 s, 2 s, 4 s ...) by `scale`.

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
