"""The objects table: `object#<id>` items (DRS objects) and `checksum#<type>#<value>` guard items.

Creating an object puts the object and one guard per checksum in one transaction, each with
`attribute_not_exists(pk)`: two objects never share a checksum and a retried create never makes a
second object, without a scan. A guard records the object it belongs to, so a conflict can name it.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from jobtriggers.dal.dynamo import dynamodb, error_code, from_item, raise_store_error, to_item
from jobtriggers.errors import ConflictError, NotFoundError, ValidationFailed
from jobtriggers.models import Checksum, DrsObject
from jobtriggers.settings import table_names


def object_pk(object_id: str) -> str:
    return f"object#{object_id}"


def checksum_pk(checksum: Checksum) -> str:
    return f"checksum#{checksum.type}#{checksum.checksum}"


class ObjectRepository:
    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or table_names().objects_table

    def create(self, obj: DrsObject) -> None:
        """Put the object and its checksum guards, all or nothing.

        ConflictError names the object id that exists already, or the checksum that another
        object (named too) carries.
        """
        doc = obj.model_dump(mode="json", exclude={"types"})
        try:
            item = to_item({"pk": object_pk(obj.id), **doc})
        except (TypeError, ArithmeticError) as exc:  # boto3 refuses numbers DynamoDB cannot keep
            raise ValidationFailed(
                "the store cannot keep a number in this object: use numbers of at most 38 significant "
                "digits (exponent -130 to 125), or strings",
                loc=["body"],
            ) from exc
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        ]
        for c in obj.checksums:
            guard = {"pk": checksum_pk(c), "object_id": obj.id, "type": c.type, "checksum": c.checksum}
            actions.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": to_item(guard),
                        "ConditionExpression": "attribute_not_exists(pk)",
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                }
            )
        try:
            dynamodb().transact_write_items(TransactItems=actions)  # type: ignore[arg-type]
        except ClientError as exc:
            if error_code(exc) == "TransactionCanceledException":
                self._raise_conflict(obj, exc)
            if error_code(exc) == "ValidationException":  # what the site sent, e.g. over 400 KB
                message = exc.response.get("Error", {}).get("Message", "")
                raise ValidationFailed(f"the store cannot keep this object: {message}", loc=["body"]) from exc
            raise_store_error(exc, f"create object {obj.id}")
        except BotoCoreError as exc:
            raise_store_error(exc, f"create object {obj.id}")

    def _raise_conflict(self, obj: DrsObject, exc: ClientError) -> None:
        """Turn the transaction's cancellation reasons into a 409 that names what clashed."""
        reasons: list[dict[str, Any]] = exc.response.get("CancellationReasons", [])  # type: ignore[assignment]
        codes = [r.get("Code") for r in reasons]
        if codes and codes[0] == "ConditionalCheckFailed":
            raise ConflictError(f"object '{obj.id}' already exists", object_id=obj.id) from exc
        for reason, checksum in zip(reasons[1:], obj.checksums, strict=False):
            if reason.get("Code") != "ConditionalCheckFailed":
                continue
            owner = from_item(reason["Item"]).get("object_id") if reason.get("Item") else None
            owner = owner or self._checksum_owner(checksum)
            raise ConflictError(
                f"checksum {checksum.type}:{checksum.checksum} belongs to object '{owner}' already",
                object_id=owner,
            ) from exc
        if "TransactionConflict" in codes:
            raise ConflictError(
                f"object '{obj.id}' or one of its checksums is being created concurrently; retry"
            ) from exc

    def _checksum_owner(self, checksum: Checksum) -> str | None:
        try:
            resp = dynamodb().get_item(
                TableName=self.table, Key=to_item({"pk": checksum_pk(checksum)}), ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as exc:
            raise_store_error(exc, "read a checksum guard")
        return from_item(resp["Item"]).get("object_id") if "Item" in resp else None

    def get(self, object_id: str) -> DrsObject:
        try:
            resp = dynamodb().get_item(
                TableName=self.table, Key=to_item({"pk": object_pk(object_id)}), ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as exc:
            raise_store_error(exc, f"read object {object_id}")
        if "Item" not in resp:
            raise NotFoundError(f"object '{object_id}' does not exist")
        item = from_item(resp["Item"])
        item.pop("pk", None)
        return DrsObject.model_validate(item)
