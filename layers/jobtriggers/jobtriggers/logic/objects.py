"""Objects and their types: registering an object, and tagging it with object types.

Tagging is where jobs come from (each new assignment streams to the trigger engine), so a change
of an object's types is one transaction of exactly the assignments that change: a repeated request
writes nothing, and a concurrent writer makes us re-read and try again rather than lose an update.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from jobtriggers.dal.assignments import MAX_TYPES_PER_REPLACE
from jobtriggers.errors import ConflictError, ValidationFailed
from jobtriggers.models import DrsObject, DrsObjectIn, ObjectTypeAssignment

# Crockford's base32 alphabet, lower case: no i, l, o, u (nothing to misread).
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
MAX_TAG_ATTEMPTS = 5


def new_object_id() -> str:
    """A `sys0...` id like the NMDC Runtime's minted ones: URL-safe, 60 random bits."""
    return "sys0" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def drs_uri(host: str, object_id: str) -> str:
    return f"drs://{host}/{object_id}"


def object_from_request(body: DrsObjectIn, site_id: str, host: str) -> DrsObject:
    object_id = body.id or new_object_id()
    return DrsObject.model_validate(
        {
            **body.model_dump(exclude_unset=False),
            "id": object_id,
            "self_uri": drs_uri(host, object_id),
            "created_by": site_id,
        }
    )


class ObjectReader(Protocol):
    def get(self, object_id: str) -> DrsObject: ...


class AssignmentStore(Protocol):
    def types_of(self, object_id: str) -> list[ObjectTypeAssignment]: ...

    def apply(self, object_id: str, add: list[str], remove: list[str], by: str | None) -> None: ...


class TypeLookup(Protocol):
    def existing_ids(self, kind: str, ids: list[str]) -> set[str]: ...


class ObjectTagger:
    """Changes an object's set of object types in one transaction per attempt."""

    def __init__(
        self,
        objects: ObjectReader,
        assignments: AssignmentStore,
        registry: TypeLookup,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.objects = objects
        self.assignments = assignments
        self.registry = registry
        self.sleep = sleep

    def current_types(self, object_id: str) -> list[str]:
        self.objects.get(object_id)  # 404 for an unknown object, even when it would have no types
        return sorted(a.object_type_id for a in self.assignments.types_of(object_id))

    def replace(self, object_id: str, type_ids: Iterable[str], by: str) -> list[str]:
        desired = set(type_ids)
        return self._change(object_id, lambda _current: desired, by)

    def add(self, object_id: str, type_id: str, by: str) -> list[str]:
        return self._change(object_id, lambda current: current | {type_id}, by)

    def remove(self, object_id: str, type_id: str, by: str) -> list[str]:
        return self._change(object_id, lambda current: current - {type_id}, by)

    def _change(self, object_id: str, desired_from: Callable[[set[str]], set[str]], by: str) -> list[str]:
        for attempt in range(1, MAX_TAG_ATTEMPTS + 1):
            current = set(self.current_types(object_id))
            desired = desired_from(current)
            add, remove = sorted(desired - current), sorted(current - desired)
            if not add and not remove:
                return sorted(current)
            self._check_addable(add, len(remove))
            try:
                self.assignments.apply(object_id, add=add, remove=remove, by=by)
            except ConflictError:
                if attempt == MAX_TAG_ATTEMPTS:
                    raise
                # Another writer changed the set between our read and our write: re-read and retry.
                self.sleep(random.uniform(0.01, 0.05) * attempt)
                continue
            return sorted(desired)
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_addable(self, add: list[str], n_remove: int) -> None:
        if len(add) + n_remove > MAX_TYPES_PER_REPLACE:
            raise ValidationFailed(
                f"at most {MAX_TYPES_PER_REPLACE} object types can change in one request, "
                f"not {len(add) + n_remove}"
            )
        unknown = sorted(set(add) - self.registry.existing_ids("object_type", add)) if add else []
        if unknown:
            raise ValidationFailed(f"unknown object type ids: {', '.join(unknown)}")
