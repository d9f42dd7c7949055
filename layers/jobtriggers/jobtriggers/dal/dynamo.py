"""DynamoDB for the data-access layer: one botocore client, the item codec, errors, transactions.

botocore finds a local DynamoDB through AWS_ENDPOINT_URL_DYNAMODB / AWS_ENDPOINT_URL_DYNAMODB_STREAMS,
so nothing here knows whether it talks to AWS or to the local runtime. The client is botocore's,
not boto3's: boto3 adds nothing the service uses but its import (a cold-start cost), and its type
serializer is the few lines of `to_attr` / `from_attr` below.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Clamped, Context, Decimal, Inexact, Overflow, Rounded, Underflow
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NoReturn

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from jobtriggers.errors import JobTriggersError, RetryableStoreError, ValidationFailed

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Throttling and transient faults are retried by botocore (standard mode, jittered backoff);
# what is left after that surfaces as RetryableStoreError.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=3,
    read_timeout=10,
    max_pool_connections=64,
)

RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
    }
)
# Cancellation reasons that mean the store was busy, not that an item changed.
_BUSY_REASONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"})
# A transaction cancelled by TransactionConflict alone is sent again this many times (with a short
# jittered pause), then reported as busy.
CONFLICT_RETRIES = 3
CONFLICT_PAUSE_SECONDS = 0.05


@lru_cache(maxsize=1)
def _session() -> Any:
    import botocore.session

    return botocore.session.get_session()


@lru_cache(maxsize=4)
def client(service: str = "dynamodb") -> Any:
    """One client per service and process (reused across Lambda invocations)."""
    return _session().create_client(service, config=CLIENT_CONFIG)


def dynamodb() -> DynamoDBClient:
    """The DynamoDB client."""
    return client("dynamodb")


def reset_clients() -> None:
    """Tests and the local runtime change endpoints and credentials; they call this after."""
    client.cache_clear()
    _session.cache_clear()


# --------------------------------------------------------------------------- the item codec

# DynamoDB's numbers: 38 significant digits, exponents -130 to +125. A value it cannot keep exactly
# is refused (ArithmeticError), never rounded; NaN and infinities are refused too (TypeError).
_NUMBERS = Context(Emin=-128, Emax=126, prec=38, traps=[Clamped, Overflow, Inexact, Rounded, Underflow])


def _number(value: int | float | Decimal) -> str:
    number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise TypeError("Infinity and NaN are not numbers DynamoDB can keep")
    return str(_NUMBERS.create_decimal(number))


def to_attr(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value (what boto3's TypeSerializer makes of it)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float | Decimal):
        return {"N": _number(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes | bytearray):
        return {"B": bytes(value)}
    if isinstance(value, Mapping):
        return {"M": {str(k): to_attr(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [to_attr(v) for v in value]}
    if isinstance(value, set | frozenset):
        if all(isinstance(v, str) for v in value):
            return {"SS": sorted(value)}
        if all(isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in value):
            return {"NS": [_number(v) for v in value]}
    raise TypeError(f"DynamoDB cannot keep a {type(value).__name__}")


def _from_number(text: str) -> int | float:
    number = Decimal(text)
    return int(number) if number == number.to_integral_value() else float(number)


def from_attr(attr: Mapping[str, Any]) -> Any:
    """A DynamoDB attribute value as plain Python: numbers as int or float, sets as lists."""
    ((kind, value),) = attr.items()
    if kind == "S":
        return value
    if kind == "N":
        return _from_number(value)
    if kind == "BOOL":
        return bool(value)
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: from_attr(v) for k, v in value.items()}
    if kind == "L":
        return [from_attr(v) for v in value]
    if kind == "SS" or kind == "BS":
        return list(value)
    if kind == "NS":
        return [_from_number(v) for v in value]
    if kind == "B":
        return bytes(value)
    raise ValueError(f"unknown DynamoDB attribute type {kind}")


def to_item(data: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict (None values dropped) as a DynamoDB item."""
    return {k: to_attr(v) for k, v in data.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: from_attr(v) for k, v in item.items()}


# --------------------------------------------------------------------------- errors


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def cancellation_reasons(exc: ClientError) -> list[str]:
    """Per item of a cancelled transaction, why: "None", "ConditionalCheckFailed", ..."""
    return [str(r.get("Code")) for r in exc.response.get("CancellationReasons", [])]


def raise_store_error(exc: Exception, action: str) -> NoReturn:
    """Turn a botocore error into a domain exception; callers handle ConditionalCheckFailed themselves."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in RETRYABLE_CODES:
            raise RetryableStoreError(f"the store is busy ({code}) while trying to {action}; retry") from exc
        raise JobTriggersError(f"store error {code} while trying to {action}") from exc
    if isinstance(exc, BotoCoreError):
        raise RetryableStoreError(f"the store could not be reached while trying to {action}; retry") from exc
    raise exc


# --------------------------------------------------------------------------- expressions


class Expression:
    """Placeholders for every name and value of one request, so reserved words need no care."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, *path: str) -> str:
        """`#n0.#n1` for a path of attribute names; list positions as `name[3]`."""
        parts = []
        for attr in path:
            index = ""
            if attr.endswith("]") and "[" in attr:
                attr, index = attr[: attr.index("[")], attr[attr.index("[") :]
            placeholder = next((k for k, v in self.names.items() if v == attr), None)
            if placeholder is None:
                placeholder = f"#n{len(self.names)}"
                self.names[placeholder] = attr
            parts.append(placeholder + index)
        return ".".join(parts)

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = to_attr(value)
        return placeholder

    def assign(self, updates: Mapping[tuple[str, ...] | str, Any]) -> str:
        return ", ".join(
            f"{self.name(*((k,) if isinstance(k, str) else k))} = {self.value(v)}" for k, v in updates.items()
        )

    def request(self, **kwargs: Any) -> dict[str, Any]:
        out = dict(kwargs)
        if self.names:
            out["ExpressionAttributeNames"] = self.names
        if self.values:
            out["ExpressionAttributeValues"] = self.values
        return out


# --------------------------------------------------------------------------- transactions


@dataclass(frozen=True)
class Transacted:
    """How a transaction ended: applied (truthy), or cancelled because items were no longer as the
    caller read them; `reasons` says which, per item ("None" for the items that were fine)."""

    applied: bool
    reasons: list[str] = field(default_factory=list)
    # Per item, what it held when its condition failed (items put with ReturnValuesOnConditionCheckFailure).
    old_items: list[dict[str, Any] | None] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.applied

    def failed_at(self, position: int) -> bool:
        return len(self.reasons) > position and self.reasons[position] == "ConditionalCheckFailed"


def request_token(items: list[dict[str, Any]], attempt: int = 0) -> str:
    """The ClientRequestToken of one send of a transaction: the same items (one logical write,
    with its own new ids and timestamps) give the same token, so every retry botocore makes of
    that call repeats it, and DynamoDB answers a repeat of an applied write with success. A send
    after a TransactionConflict (which wrote nothing) is a new request: `attempt` is part of it."""
    canonical = json.dumps([items, attempt], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:36]


def transact(
    items: list[dict[str, Any]],
    *,
    action: str,
    site_data: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> Transacted:
    """One TransactWriteItems, safe to retry. Every write that changes state goes through here.

    - Its ClientRequestToken is derived from its items, so a retry of the same write (botocore's,
      after a lost answer) is answered with success instead of failing its own condition.
    - Cancelled only by TransactionConflict (another transaction on an item at that moment; nothing
      was written, and the conditions still hold the caller's view), it is sent again a few times,
      then reported as busy (RetryableStoreError, a 503), never as a lost race.
    - Cancelled by a failed condition, it returns a falsy Transacted naming the items.
    `site_data`: the items carry what a site sent, so a value the store refuses is the site's to fix
    (422), not a fault.
    """
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            dynamodb().transact_write_items(
                TransactItems=items,  # type: ignore[arg-type]
                ClientRequestToken=request_token(items, attempt),
            )
        except ClientError as exc:
            if site_data and error_code(exc) == "ValidationException":
                message = exc.response.get("Error", {}).get("Message", "")
                raise ValidationFailed(
                    f"the store cannot keep what was sent: {message}", loc=["body"]
                ) from exc
            if error_code(exc) != "TransactionCanceledException":
                raise_store_error(exc, action)
            per_item = cancellation_reasons(exc)
            reasons = set(per_item) - {"None"}
            if not reasons or "ConditionalCheckFailed" in reasons:
                old = [
                    from_item(r["Item"]) if r.get("Item") else None
                    for r in exc.response.get("CancellationReasons", [])
                ]
                return Transacted(False, per_item, old)
            if reasons <= {"TransactionConflict"}:
                if attempt < CONFLICT_RETRIES:
                    sleep(random.uniform(0, CONFLICT_PAUSE_SECONDS * 2**attempt))
                    continue
                raise RetryableStoreError(
                    f"the store is busy (transaction conflicts) while trying to {action}; retry"
                ) from exc
            if reasons & _BUSY_REASONS:
                raise RetryableStoreError(
                    f"the store is busy ({', '.join(sorted(reasons))}) while trying to {action}; retry"
                ) from exc
            raise JobTriggersError(f"the store refused to {action} ({', '.join(sorted(reasons))})") from exc
        except BotoCoreError as exc:
            raise_store_error(exc, action)
        return Transacted(True)
    raise AssertionError("unreachable: the last conflict retry raises")  # pragma: no cover


def put_if_absent(
    table: str, item: Mapping[str, Any], key_attribute: str, action: str, site_data: bool = False
) -> bool:
    """A conditional put that makes an item exist once: True when this call created it.
    `site_data`: the item carries what a site sent, so a value the store refuses (a number it
    cannot keep, an item over its size) is the site's to fix (422), not a fault."""
    try:
        encoded = to_item(item)
    except (TypeError, ArithmeticError) as exc:
        if not site_data:
            raise
        raise ValidationFailed(
            f"the store cannot keep what was sent ({type(exc).__name__}): use numbers of at most 38 "
            "significant digits, or strings",
            loc=["body"],
        ) from exc
    try:
        dynamodb().put_item(
            TableName=table, Item=encoded, ConditionExpression=f"attribute_not_exists({key_attribute})"
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        if site_data and error_code(exc) == "ValidationException":
            message = exc.response.get("Error", {}).get("Message", "")
            raise ValidationFailed(f"the store cannot keep what was sent: {message}", loc=["body"]) from exc
        raise_store_error(exc, action)
    except BotoCoreError as exc:
        raise_store_error(exc, action)
    return True


def get_item(
    table: str, key: Mapping[str, Any], action: str, consistent: bool = True
) -> dict[str, Any] | None:
    """One item by key, as plain Python, or None."""
    try:
        resp = dynamodb().get_item(TableName=table, Key=to_item(key), ConsistentRead=consistent)
    except (ClientError, BotoCoreError) as exc:
        raise_store_error(exc, action)
    return from_item(resp["Item"]) if "Item" in resp else None
