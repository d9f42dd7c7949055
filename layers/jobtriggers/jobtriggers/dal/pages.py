"""Queries a page at a time, and the opaque page tokens that continue them. Never a Scan.

A page token is the Query's LastEvaluatedKey plus a fingerprint of the query it belongs to, base64:
stateless, and refused (400) for any other query. Tokens are not signed, so the key one carries is
checked for shape and size before it reaches the store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from jobtriggers.dal.dynamo import dynamodb, error_code, from_item, raise_store_error, to_attr
from jobtriggers.errors import BadRequestError, ValidationFailed
from jobtriggers.models import PARTITION_KEY_MAX_BYTES, SORT_KEY_MAX_BYTES

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
    try:
        resp = dynamodb().query(**kwargs)
    except ClientError as exc:
        # An edited token whose key still has the right shapes but not this index's attributes
        # (or a sort key over 1024 bytes): DynamoDB refuses the start key, and it is the token's fault.
        if start and error_code(exc) == "ValidationException":
            raise BadRequestError(_NOT_OURS) from exc
        raise_store_error(exc, action)
    except BotoCoreError as exc:
        raise_store_error(exc, action)
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
