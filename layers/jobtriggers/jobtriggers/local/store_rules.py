"""DynamoDB's rules that moto 5.2.5 leaves out or gets wrong, added to the embedded store.

Tests run against moto over HTTP; where moto accepts what DynamoDB refuses, a bug passes the tests
and fails on AWS (a 3 KB `client_id` read with GetItem: a 401 locally, a 500 on AWS). Here:

- Key sizes (partition key <= 2048 bytes, sort key <= 1024, as UTF-8 or raw bytes) on every request
  that names a key: GetItem, DeleteItem, BatchGetItem, TransactGetItems, and a transaction's
  ConditionCheck and Delete (moto checks only items written, and an UpdateItem's own key), and on
  an UpdateItem that sets an index's key attribute.
- Item size <= 400 KB (409,600 bytes) by DynamoDB's rules: attribute names count; a number costs
  1 byte + 1 per two significant digits on each side of the point (+1 if negative); a list or map
  3 bytes + 1 per element. moto refuses at its own estimate (405,000 bytes, no list/map overhead,
  numbers by their text). A Put over the limit is a ValidationException before anything runs; an
  Update is measured on the finished item, and inside a transaction it cancels the transaction
  with a `ValidationError` reason, as DynamoDB reports it.
- TransactWriteItems: at most 4 MB of items (moto: no limit). TransactGetItems: at most 100 items
  (moto refuses more than 25, DynamoDB's limit before 2022). BatchWriteItem: at most 25 requests
  (moto: no limit).
- TransactWriteItems' ClientRequestToken: a transaction repeated with the same token within 10
  minutes succeeds without being applied again; the same token with other TransactItems is
  IdempotentParameterMismatchException (moto ignores the token: a retried transaction whose first
  answer was lost fails its own conditions).

Error codes and messages are DynamoDB's, except the 4 MB transaction limit's wording, which AWS
does not document (the code, ValidationException, is what callers act on).

Installed once per process by jobtriggers.local.store.start_embedded_dynamo; requests run one at a
time there, so the module state below needs no lock of its own.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from decimal import Decimal
from typing import Any

MAX_ITEM_BYTES = 400 * 1024
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024
MAX_TRANSACTION_ITEMS = 100
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024
MAX_BATCH_WRITE_REQUESTS = 25
TOKEN_WINDOW_SECONDS = 600.0

PARTITION_KEY_TOO_LONG = (
    "One or more parameter values were invalid: Size of hashkey has exceeded the maximum size limit of"
    f"{MAX_PARTITION_KEY_BYTES} bytes"  # sic: DynamoDB's message has no space before the number
)
SORT_KEY_TOO_LONG = (
    "One or more parameter values were invalid: Aggregated size of all range keys has exceeded the "
    f"size limit of {MAX_SORT_KEY_BYTES} bytes"
)
ITEM_TOO_LARGE = "Item size has exceeded the maximum allowed size"
UPDATE_TOO_LARGE = "Item size to update has exceeded the maximum allowed size"
TRANSACTION_TOO_LARGE = "Transaction size has exceeded the maximum allowed size of 4 MB"
TOKEN_MISMATCH = (
    "DynamoDB rejected the request because you retried a request with a different payload but with "
    "an idempotent token that was already used."
)

_installed = False
_clock = time.time  # tests move it to see a token expire
_in_transaction = threading.local()
# ClientRequestToken -> (fingerprint of the TransactItems, when the transaction completed)
_tokens: OrderedDict[str, tuple[str, float]] = OrderedDict()


# --------------------------------------------------------------------------- sizes


def _raw_bytes(value: Any) -> int:
    """Length of a binary value (boto3 sends base64; moto may hand over bytes)."""
    if isinstance(value, bytes | bytearray):
        return len(value)
    return len(base64.b64decode(value))


def number_size(text: str) -> int:
    """DynamoDB's size of a number: 1 byte, plus one per two significant digits, counted
    separately on each side of the decimal point, rounded up; plus 1 if negative."""
    sign, digits, exponent = Decimal(text).normalize().as_tuple()
    n = len(digits)
    assert isinstance(exponent, int)
    fraction = min(n, -exponent) if exponent < 0 else 0
    integer = n - fraction
    return 1 + math.ceil(integer / 2) + math.ceil(fraction / 2) + (1 if sign and any(digits) else 0)


def value_size(value: dict[str, Any]) -> int:
    """DynamoDB's size of one attribute value (without its name)."""
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode("utf-8"))
    if kind == "N":
        return number_size(v)
    if kind == "B":
        return _raw_bytes(v)
    if kind == "SS":
        return sum(len(s.encode("utf-8")) for s in v)
    if kind == "NS":
        return sum(number_size(s) for s in v)
    if kind == "BS":
        return sum(_raw_bytes(b) for b in v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + value_size(e) for e in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + value_size(e) for k, e in v.items())
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's size of an item: every attribute's name (UTF-8) plus its value."""
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in item.items())


def _key_value_size(value: Any) -> int:
    if not isinstance(value, dict) or len(value) != 1:
        return 0
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode("utf-8"))
    if kind == "B":
        return _raw_bytes(v)
    return 0  # numbers are at most 38 digits: never near the limit


# --------------------------------------------------------------------------- checks


def _validation(message: str) -> Exception:
    from moto.dynamodb.exceptions import MockValidationException

    return MockValidationException(message)


class ValidationError(Exception):
    """Raised inside a transaction, where moto reports an exception's class name and message as
    the cancellation reason: DynamoDB's reason is `ValidationError`."""


def _key_names(table: Any, with_indexes: bool) -> tuple[list[str], list[str]]:
    if with_indexes:
        return list(table.hash_key_names), list(table.range_key_names)
    return [table.hash_key_attr], [table.range_key_attr] if table.range_key_attr else []


def check_key_sizes(table: Any, attrs: dict[str, Any], with_indexes: bool = False) -> None:
    """ValidationException when a key attribute (of the table, or also of its indexes) is too long."""
    hash_names, range_names = _key_names(table, with_indexes)
    for name in hash_names:
        if name in attrs and _key_value_size(attrs[name]) > MAX_PARTITION_KEY_BYTES:
            raise _validation(PARTITION_KEY_TOO_LONG)
    for name in range_names:
        if name in attrs and _key_value_size(attrs[name]) > MAX_SORT_KEY_BYTES:
            raise _validation(SORT_KEY_TOO_LONG)


def check_item_size(item: dict[str, Any], message: str = ITEM_TOO_LARGE) -> int:
    size = item_size(item)
    if size > MAX_ITEM_BYTES:
        raise _validation(message)
    return size


def _java_list(kind: str, count: int) -> str:
    # DynamoDB echoes a list parameter as Java's toString of its members.
    return ", ".join(f"com.amazonaws.dynamodb.v20120810.{kind}@{268435457 + i:x}" for i in range(count))


def check_batch_write(request_items: dict[str, list[Any]]) -> None:
    for table_name, requests in request_items.items():
        if len(requests) > MAX_BATCH_WRITE_REQUESTS:
            raise _validation(
                "1 validation error detected: Value "
                f"'{{{table_name}=[{_java_list('WriteRequest', len(requests))}]}}'"
                " at 'requestItems' failed to satisfy constraint: Map value must satisfy constraint: "
                f"[Member must have length less than or equal to {MAX_BATCH_WRITE_REQUESTS}, "
                "Member must have length greater than or equal to 1]"
            )
    if sum(len(r) for r in request_items.values()) > MAX_BATCH_WRITE_REQUESTS:
        raise _validation("Too many items requested for the BatchWriteItem call")


def check_transaction(backend: Any, transact_items: list[dict[str, Any]]) -> None:
    """What DynamoDB refuses in a TransactWriteItems before running it."""
    total = 0
    for entry in transact_items:
        for kind, op in entry.items():
            table = backend.get_table(op["TableName"])
            if kind == "Put":
                check_key_sizes(table, op["Item"], with_indexes=True)
                total += check_item_size(op["Item"])
            else:
                check_key_sizes(table, op.get("Key", {}))
                total += item_size(op.get("Key", {}))
                total += sum(value_size(v) for v in (op.get("ExpressionAttributeValues") or {}).values())
    if total > MAX_TRANSACTION_BYTES:
        raise _validation(TRANSACTION_TOO_LARGE)


# --------------------------------------------------------------------------- client request tokens


def _fingerprint(transact_items: Any) -> str:
    canonical = json.dumps(transact_items, sort_keys=True, default=lambda b: base64.b64encode(b).decode())
    return hashlib.sha256(canonical.encode()).hexdigest()


def _known_token(token: str, now: float) -> str | None:
    while _tokens:
        oldest, (_, at) = next(iter(_tokens.items()))
        if now - at <= TOKEN_WINDOW_SECONDS:
            break
        _tokens.pop(oldest)
    entry = _tokens.get(token)
    return entry[0] if entry else None


def forget_tokens() -> None:
    _tokens.clear()


# --------------------------------------------------------------------------- installing


def install() -> None:
    """Patch moto in this process (idempotent)."""
    global _installed
    if _installed:
        return
    import moto.dynamodb.responses as responses
    from moto.core.responses import ActionResult
    from moto.dynamodb.exceptions import DynamodbException, ItemSizeToUpdateTooLarge
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict
    from moto.dynamodb.responses import DynamoHandler

    # moto's own item-size estimate goes; item_size() above decides.
    LimitedSizeDict.__setitem__ = dict.__setitem__  # type: ignore[method-assign]
    responses.TRANSACTION_MAX_ITEMS = MAX_TRANSACTION_ITEMS

    class IdempotentParameterMismatchException(DynamodbException):
        def __init__(self) -> None:
            super().__init__(
                "com.amazonaws.dynamodb.v20120810#IdempotentParameterMismatchException", TOKEN_MISMATCH
            )

    def before(action: str, check: Any) -> None:
        original = getattr(DynamoHandler, action)

        def checked(self: Any) -> Any:
            check(self)
            return original(self)

        setattr(DynamoHandler, action, checked)

    def table_of(handler: Any, name: str) -> Any:
        return handler.dynamodb_backend.get_table(name)

    before("get_item", lambda h: check_key_sizes(table_of(h, h.body["TableName"]), h.body.get("Key", {})))
    before("delete_item", lambda h: check_key_sizes(table_of(h, h.body["TableName"]), h.body.get("Key", {})))
    before("put_item", lambda h: check_item_size(h.body.get("Item", {})))

    def check_batch_get(h: Any) -> None:
        for name, request in h.body.get("RequestItems", {}).items():
            for key in request.get("Keys", []):
                check_key_sizes(table_of(h, name), key)

    def check_batch_write_items(h: Any) -> None:
        check_batch_write(h.body.get("RequestItems", {}))
        for requests in h.body.get("RequestItems", {}).values():
            for request in requests:
                if "PutRequest" in request:
                    check_item_size(request["PutRequest"]["Item"])

    def check_transact_get(h: Any) -> None:
        for entry in h.body.get("TransactItems", []):
            get = entry.get("Get", {})
            if "TableName" in get:
                check_key_sizes(table_of(h, get["TableName"]), get.get("Key", {}))

    before("batch_get_item", check_batch_get)
    before("batch_write_item", check_batch_write_items)
    before("transact_get_items", check_transact_get)

    original_transact = DynamoHandler.transact_write_items

    def transact_write_items(self: Any) -> Any:
        items = self.body["TransactItems"]
        if len(items) <= MAX_TRANSACTION_ITEMS:  # more: moto's own validation error
            check_transaction(self.dynamodb_backend, items)
        token = self.body.get("ClientRequestToken")
        fingerprint = _fingerprint(items) if token else ""
        now = _clock()
        if token:
            known = _known_token(token, now)
            if known is not None:
                if known != fingerprint:
                    raise IdempotentParameterMismatchException()
                # Applied before: succeed without applying it again.
                return ActionResult({"ConsumedCapacity": [], "ItemCollectionMetrics": {}})
        result = original_transact(self)
        if token:
            _tokens[token] = (fingerprint, now)
        return result

    DynamoHandler.transact_write_items = transact_write_items  # type: ignore[method-assign]

    backend_transact = DynamoDBBackend.transact_write_items

    def transact_flagged(self: Any, transact_items: list[dict[str, Any]]) -> None:
        _in_transaction.active = True
        try:
            backend_transact(self, transact_items)
        finally:
            _in_transaction.active = False

    DynamoDBBackend.transact_write_items = transact_flagged  # type: ignore[method-assign]

    backend_update = DynamoDBBackend.update_item

    def update_item(self: Any, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        table = self.get_table(table_name)
        hash_value = DynamoType(key[table.hash_key_attr]) if table.hash_key_attr in key else None
        range_value = (
            DynamoType(key[table.range_key_attr])
            if table.range_key_attr and table.range_key_attr in key
            else None
        )
        current = table.get_item(hash_value, range_value) if hash_value is not None else None
        saved = copy.deepcopy(current)
        stream_length = len(table.stream_shard.items) if table.stream_shard is not None else 0
        item = backend_update(self, table_name, key, *args, **kwargs)
        attrs = item.to_json()["Attributes"]
        problem: Exception | None = None
        if item_size(attrs) > MAX_ITEM_BYTES:
            problem = ItemSizeToUpdateTooLarge()
        else:
            try:
                check_key_sizes(table, attrs, with_indexes=True)
            except DynamodbException as exc:
                problem = exc
        if problem is None:
            return item
        # Undo the update (the item, its stream record) and refuse it.
        if saved is None:
            if range_value is not None:
                table.items[hash_value].pop(range_value, None)
                if not table.items[hash_value]:
                    table.items.pop(hash_value, None)
            else:
                table.items.pop(hash_value, None)
        elif range_value is not None:
            table.items[hash_value][range_value] = saved
        else:
            table.items[hash_value] = saved
        if table.stream_shard is not None:
            del table.stream_shard.items[stream_length:]
        if getattr(_in_transaction, "active", False):
            raise ValidationError(str(getattr(problem, "message", problem)))
        raise problem

    DynamoDBBackend.update_item = update_item  # type: ignore[method-assign]
    _installed = True
