"""Queries a page at a time, and the opaque page tokens that continue them. Never a Scan.

A page token is the Query's LastEvaluatedKey plus a fingerprint of the query it belongs to, base64:
stateless, and refused (400) for any other query. Tokens are not signed, so the key one carries is
checked for shape and size before it reaches the store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from jobtriggers.dal.dynamo import dynamodb, error_code, from_item, raise_store_error, to_attr
from jobtriggers.errors import BadRequestError, ValidationFailed
from jobtriggers.models import PARTITION_KEY_MAX_BYTES, SORT_KEY_MAX_BYTES

R = TypeVar("R")

# --------------------------------------------------------------------------- page tokens


def encode_page_token(last_evaluated_key: Mapping[str, Any] | None, query_fingerprint: str) -> str | None:
    """Opaque and stateless: the last key plus a fingerprint of the query it belongs to."""
    if not last_evaluated_key:
        return None
    payload = {"k": dict(last_evaluated_key), "q": query_fingerprint}
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


_NOT_OURS = "page_token is not one this API issued; start again without it"
# A LastEvaluatedKey holds the table's key and the index's: at most four attributes.
_MAX_KEY_ATTRIBUTES = 4


def _query(kwargs: dict[str, Any], from_a_token: bool, action: str) -> Any:
    """One Query; store errors mapped (errors.py)."""
    try:
        return dynamodb().query(**kwargs)
    except ClientError as exc:
        # An edited token whose key still has the right shapes but not this index's attributes
        # (or a sort key over 1024 bytes): DynamoDB refuses the start key, and it is the token's fault.
        if from_a_token and error_code(exc) == "ValidationException":
            raise BadRequestError(_NOT_OURS) from exc
        raise_store_error(exc, action)
    except BotoCoreError as exc:
        raise_store_error(exc, action)


def _is_key_value(value: Any) -> bool:
    """A string or number key attribute value DynamoDB can take (keys over 2048 bytes it refuses)."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    ((kind, text),) = value.items()
    if kind not in ("S", "N") or not isinstance(text, str) or not text:
        return False
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # a lone surrogate: not UTF-8, DynamoDB would refuse it
        return False
    return size <= PARTITION_KEY_MAX_BYTES if kind == "S" else size <= 40


def decode_page_token(token: str | None, query_fingerprint: str) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        key = payload["k"]
        ok = isinstance(key, dict) and payload.get("q") == query_fingerprint
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequestError(_NOT_OURS) from exc
    if not ok:
        raise BadRequestError(
            "page_token belongs to a different query; repeat the same filters, or start without it"
        )
    return dict(key)


def _start_key(token: str | None, query_fingerprint: str) -> dict[str, Any] | None:
    """The ExclusiveStartKey a Query's page token carries. A token is not signed, so one that was
    edited is checked before it reaches the store: attribute values of the shapes and sizes a key
    can have (DynamoDB answers others with a ValidationException, a 500)."""
    key = decode_page_token(token, query_fingerprint)
    if key is None:
        return None
    if not key or len(key) > _MAX_KEY_ATTRIBUTES or not all(_is_key_value(v) for v in key.values()):
        raise BadRequestError(_NOT_OURS)
    return key


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


_KEY_CLAUSE = re.compile(r"^\s*(?:begins_with\(\s*)?([#\w]+)")


def check_key_values(key_condition: str, values: Mapping[str, Any], names: Mapping[str, str] | None) -> None:
    """Refuse a Query whose key condition compares a key with a value DynamoDB cannot take as one
    (over 2048 bytes of UTF-8 for the partition key, the first clause; 1024 for the sort key):
    AWS would answer ValidationException, a 500. Request parsing bounds each id; this catches the
    paths it does not see, such as the values of GET /jobs' `filter`."""
    for position, clause in enumerate(key_condition.split(" AND ")):
        limit = PARTITION_KEY_MAX_BYTES if position == 0 else SORT_KEY_MAX_BYTES
        match = _KEY_CLAUSE.match(clause)
        attribute = (names or {}).get(match.group(1), match.group(1)) if match else "a key"
        for placeholder in re.findall(r":\w+", clause):
            value = values.get(placeholder)
            if not isinstance(value, str):
                continue
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > limit:
                raise ValidationFailed(
                    f"{attribute} can be at most {limit} bytes (UTF-8) here, as a key; this one has {size}",
                    loc=["query", attribute],
                )


def query_page(
    *,
    table: str,
    key_condition: str,
    values: Mapping[str, Any],
    names: Mapping[str, str] | None = None,
    index: str | None = None,
    limit: int,
    page_token: str | None,
    forward: bool = True,
    filter_expression: str | None = None,
    projection: Sequence[str] | None = None,
    moving_values: Collection[str] = (),
    consistent: bool = False,
    action: str,
) -> tuple[list[dict[str, Any]], str | None]:
    """One Query page, with an opaque token for the next. Never a Scan.

    `projection` names the attributes to return (all when None), to keep large pages small.
    `moving_values` names values that belong to the query but may differ from page to page, such as
    a bound taken from the clock ("leases that ended before now"): they are left out of the token's
    fingerprint, so the next page continues the same query with its own bound."""
    check_key_values(key_condition, values, names)
    fixed = {k: v for k, v in values.items() if k not in moving_values}
    fp = fingerprint(table, index, key_condition, fixed, filter_expression, forward)
    names = dict(names or {})
    if projection:
        names.update({f"#p{i}": attr for i, attr in enumerate(projection)})
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": key_condition,
        "ExpressionAttributeValues": {k: to_attr(v) for k, v in values.items()},
        "Limit": limit,
        "ScanIndexForward": forward,
    }
    if consistent:
        kwargs["ConsistentRead"] = True
    if names:
        kwargs["ExpressionAttributeNames"] = names
    if projection:
        kwargs["ProjectionExpression"] = ", ".join(f"#p{i}" for i in range(len(projection)))
    if index:
        kwargs["IndexName"] = index
    if filter_expression:
        kwargs["FilterExpression"] = filter_expression
    start = _start_key(page_token, fp)
    if start:
        kwargs["ExclusiveStartKey"] = start
    resp = _query(kwargs, bool(start), action)
    items = [from_item(i) for i in resp.get("Items", [])]
    return items, encode_page_token(resp.get("LastEvaluatedKey"), fp)


def query_all(
    *,
    table: str,
    key_condition: str,
    values: Mapping[str, Any],
    names: Mapping[str, str] | None = None,
    index: str | None = None,
    action: str,
    page_size: int = 500,
    consistent: bool = False,
) -> list[dict[str, Any]]:
    """Every item a Query matches (for small, bounded result sets such as a type's triggers)."""
    out: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        items, token = query_page(
            table=table,
            key_condition=key_condition,
            values=values,
            names=names,
            index=index,
            limit=page_size,
            page_token=token,
            consistent=consistent,
            action=action,
        )
        out.extend(items)
        if not token:
            return out


# --------------------------------------------------------------------------- filtered listings


@dataclass(frozen=True)
class Partition:
    """One partition a filtered listing reads: a Query's key condition and its values."""

    key_condition: str
    values: Mapping[str, Any]
    names: Mapping[str, str] | None = None


@dataclass(frozen=True)
class ReadBudget:
    """What one page of a filtered listing may cost: items read (what DynamoDB bills), Query
    requests, and bytes of results (an answer must stay well inside Lambda's 6 MB)."""

    items: int = 1000
    requests: int = 40
    result_bytes: int = 4 * 1024 * 1024


@dataclass
class PageStats:
    """What a page cost, and why it ended."""

    items_read: int = 0
    requests: int = 0
    results: int = 0
    result_bytes: int = 0
    stopped_by: str = "end"  # end | limit | items | requests | bytes


@dataclass(frozen=True)
class Selected(Generic[R]):
    """A matching item as the caller serves it, and its size in bytes (for the page's byte bound)."""

    result: R
    size: int = 0


def filtered_page(
    *,
    table: str,
    index: str,
    key_attributes: Sequence[str],
    partitions: Sequence[Partition],
    select: Callable[[list[dict[str, Any]]], list[Selected[R] | None]],
    limit: int,
    page_token: str | None,
    query_identity: Any,
    budget: ReadBudget = ReadBudget(),
    action: str,
) -> tuple[list[R], str | None, PageStats]:
    """One page of a listing that reads whole partitions of an index, in order, and keeps the items
    `select` keeps (it sees each Query's items at once and answers, per item, its result or None).

    The work is bounded by `budget`, not by how rare matches are: the page ends when it holds
    `limit` results, or has read `budget.items` items, made `budget.requests` Queries or gathered
    `budget.result_bytes` of results, whichever comes first; so a page may hold fewer results than
    asked for (none, even) and still carry a token. The token names the partition and the last
    item this page looked at (`key_attributes`: the table's key and the index's), built from that
    item, so the next page starts right after it, and it works only for the same query
    (`query_identity` and the partitions are in its fingerprint). Each Query asks for what is still
    missing at the rate matches came so far (`_next_chunk`), so an unfiltered page reads exactly what
    it returns and a filtered one little more than it looks at.
    """
    fp = fingerprint(
        "filtered",
        table,
        index,
        [(p.key_condition, dict(p.values), dict(p.names or {})) for p in partitions],
        query_identity,
    )
    position, start = _filtered_position(page_token, fp, len(partitions))
    stats = PageStats()
    results: list[R] = []
    chunk = 0
    while position < len(partitions):
        if len(results) >= limit:
            stats.stopped_by = "limit"
            break
        if stats.items_read >= budget.items:
            stats.stopped_by = "items"
            break
        if stats.requests >= budget.requests:
            stats.stopped_by = "requests"
            break
        if stats.result_bytes >= budget.result_bytes:
            stats.stopped_by = "bytes"
            break
        needed = limit - len(results)
        chunk = min(_next_chunk(chunk, needed, stats), budget.items - stats.items_read)
        partition = partitions[position]
        items, last_key, scanned = _query_chunk(table, index, partition, chunk, start, action)
        stats.requests += 1
        stats.items_read += scanned
        chosen = select(items) if items else []
        if len(chosen) != len(items):
            raise ValueError(f"select answered {len(chosen)} decisions for {len(items)} items")
        stopped_at: int | None = None
        for i, picked in enumerate(chosen):
            if picked is None:
                continue
            results.append(picked.result)
            stats.results += 1
            stats.result_bytes += picked.size
            if len(results) >= limit or stats.result_bytes >= budget.result_bytes:
                stopped_at = i
                break
        if stopped_at is not None and stopped_at < len(items) - 1:
            start = _key_of(items[stopped_at], key_attributes)  # the rest of this chunk comes next
        elif last_key:
            start = last_key
        else:
            position, start = position + 1, None
    token = None if position >= len(partitions) else _filtered_token(position, start, fp)
    return results, token, stats


def _next_chunk(previous: int, needed: int, stats: PageStats) -> int:
    """How many items the next Query of a page asks for: what is missing, at first (an unfiltered
    listing reads exactly what it returns); then what is missing at the rate matches came so far
    (plus a tenth), never less than what is missing nor more than twice the previous Query, so a
    rare match grows the reads geometrically and a page that fills inside a Query re-reads little
    on the next page."""
    if previous == 0:
        return needed
    if stats.results == 0:
        return 2 * previous
    estimate = math.ceil(needed * stats.items_read / stats.results * 1.1)
    return max(needed, min(estimate, 2 * previous))


def _query_chunk(
    table: str,
    index: str,
    partition: Partition,
    limit: int,
    start: Mapping[str, Any] | None,
    action: str,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, int]:
    check_key_values(partition.key_condition, partition.values, partition.names)
    kwargs: dict[str, Any] = {
        "TableName": table,
        "IndexName": index,
        "KeyConditionExpression": partition.key_condition,
        "ExpressionAttributeValues": {k: to_attr(v) for k, v in partition.values.items()},
        "Limit": max(limit, 1),
    }
    if partition.names:
        kwargs["ExpressionAttributeNames"] = dict(partition.names)
    if start:
        kwargs["ExclusiveStartKey"] = dict(start)
    resp = _query(kwargs, bool(start), action)
    raw = resp.get("Items", [])
    return (
        [from_item(i) for i in raw],
        resp.get("LastEvaluatedKey"),
        int(resp.get("ScannedCount", len(raw))),
    )


def _key_of(item: Mapping[str, Any], key_attributes: Sequence[str]) -> dict[str, Any]:
    """The ExclusiveStartKey that continues a Query right after `item`."""
    return {name: to_attr(item[name]) for name in key_attributes}


def _filtered_token(position: int, start: Mapping[str, Any] | None, query_fingerprint: str) -> str:
    payload = {"p": position, "k": dict(start) if start else None, "q": query_fingerprint}
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def _filtered_position(
    token: str | None, query_fingerprint: str, partitions: int
) -> tuple[int, dict[str, Any] | None]:
    """Where a filtered listing's token says to go on: a partition and a start key in it (None: its
    beginning). A token is not signed, so what it carries is checked before it reaches the store."""
    if not token:
        return 0, None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        position, key, fp = payload["p"], payload["k"], payload["q"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequestError(_NOT_OURS) from exc
    if fp != query_fingerprint:
        raise BadRequestError(
            "page_token belongs to a different query; repeat the same filters, or start without it"
        )
    if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < partitions:
        raise BadRequestError(_NOT_OURS)
    if key is None:
        return position, None
    if (
        not isinstance(key, dict)
        or not key
        or len(key) > _MAX_KEY_ATTRIBUTES
        or not all(_is_key_value(v) for v in key.values())
    ):
        raise BadRequestError(_NOT_OURS)
    return position, key
