"""Every key the service builds from an id fits DynamoDB's key limits, whatever the id holds.

DynamoDB refuses a partition key value over 2048 bytes and a sort key value over 1024 bytes (UTF-8)
with a ValidationException - a 500 - and moto does not check. So the bounds in jobtriggers.models are added up
here: for each key, the largest value its parts' validators let through, each part at its longest
and made of its widest character (4 bytes wherever any character is allowed).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from jobtriggers.models import (
    JOB_ID_MAX_LENGTH,
    PARTITION_KEY_MAX_BYTES,
    SORT_KEY_MAX_BYTES,
    Checksum,
    ClientId,
    DrsId,
    RegistryId,
    SiteId,
    WorkflowId,
)

# One character of each UTF-8 width, and characters some patterns insist on at the start.
CHARACTERS = ["a", "0", "\u00e9", "\u20ac", "\U0001d538", "!"]

Accepts = Callable[[str], bool]


def _type(annotation: Any) -> Accepts:
    adapter: TypeAdapter[str] = TypeAdapter(annotation)

    def accepts(value: str) -> bool:
        try:
            adapter.validate_python(value)
        except ValidationError:
            return False
        return True

    return accepts


def _checksum_value(value: str) -> bool:
    try:
        Checksum(type="sha256", checksum=value)
    except ValidationError:
        return False
    return True


def _checksum_type(value: str) -> bool:
    try:
        Checksum(type=value, checksum="abc")
    except ValidationError:
        return False
    return True


def widest(accepts: Accepts) -> int:
    """The most UTF-8 bytes a value of one repeated character can have and still be accepted."""
    best = 0
    for char in CHARACTERS:
        low, high = 0, 20_000  # the longest run of `char` that is accepted (binary search)
        while low < high:
            mid = (low + high + 1) // 2
            if accepts(char * mid):
                low = mid
            else:
                high = mid - 1
        assert low < 20_000, "unbounded: any length is accepted"
        best = max(best, low * len(char.encode()))
    return best


Part = str | Accepts
KEYS: dict[str, tuple[list[Part], int]] = {
    "Registry: id (sort key), an object type's or trigger's": ([_type(RegistryId)], SORT_KEY_MAX_BYTES),
    "Registry: id (sort key), a workflow's": ([_type(WorkflowId)], SORT_KEY_MAX_BYTES),
    "Registry.by_object_type: object_type_id": ([_type(RegistryId)], PARTITION_KEY_MAX_BYTES),
    "Registry.by_object_type: workflow_id (sort key)": ([_type(WorkflowId)], SORT_KEY_MAX_BYTES),
    "Sites: site#<site id>": (["site#", _type(SiteId)], PARTITION_KEY_MAX_BYTES),
    "Sites: client#<client id>": (["client#", _type(ClientId)], PARTITION_KEY_MAX_BYTES),
    "Objects: object#<object id>": (["object#", _type(DrsId)], PARTITION_KEY_MAX_BYTES),
    "Objects: checksum#<type>#<value>": (
        ["checksum#", _checksum_type, "#", _checksum_value],
        PARTITION_KEY_MAX_BYTES,
    ),
    "ObjectTypes: object_id": ([_type(DrsId)], PARTITION_KEY_MAX_BYTES),
    "ObjectTypes: object_type_id (sort key)": ([_type(RegistryId)], SORT_KEY_MAX_BYTES),
    "ObjectTypes.by_object_type: object_id (sort key)": ([_type(DrsId)], SORT_KEY_MAX_BYTES),
    "Jobs: job_key = workflow#object": ([_type(WorkflowId), "#", _type(DrsId)], PARTITION_KEY_MAX_BYTES),
    "Jobs.by_object: workflow_id (sort key)": ([_type(WorkflowId)], SORT_KEY_MAX_BYTES),
    "Jobs.by_workflow_status: workflow#status": (
        [_type(WorkflowId), "#claimed"],
        PARTITION_KEY_MAX_BYTES,
    ),
    "Jobs.by_site: site_id": ([_type(SiteId)], PARTITION_KEY_MAX_BYTES),
    "Operations.by_site_done: site#done": ([_type(SiteId), "#false"], PARTITION_KEY_MAX_BYTES),
}


@pytest.mark.parametrize("key", sorted(KEYS))
def test_the_largest_key_the_models_allow_fits_dynamodb(key: str) -> None:
    # Given the parts a key is made of, each at the most bytes its validator accepts
    parts, limit = KEYS[key]
    size = sum(len(p.encode()) if isinstance(p, str) else widest(p) for p in parts)
    # Then the key fits DynamoDB's limit for it
    assert size <= limit, f"{key}: up to {size} bytes, DynamoDB takes {limit}"


def test_the_longest_job_id_decodes_to_a_key_that_fits() -> None:
    # A job id is base64url of its key; the path parameter's bound bounds the key it can name
    decoded = base64.urlsafe_b64decode("A" * JOB_ID_MAX_LENGTH + "=" * (-JOB_ID_MAX_LENGTH % 4))
    assert len(decoded) <= PARTITION_KEY_MAX_BYTES


@pytest.mark.parametrize(
    ("accepts", "value"),
    [
        (_type(ClientId), "client-0123456789abcdef01234567"),
        (_type(SiteId), "nersc"),
        (_checksum_value, "d41d8cd98f00b204e9800998ecf8427e"),
        (_checksum_value, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
        (_type(WorkflowId), "metag-1.0.0"),
        (_type(RegistryId), "schema#/definitions/Database"),
    ],
)
def test_the_ids_in_use_are_still_accepted(accepts: Accepts, value: str) -> None:
    assert accepts(value)


def test_a_created_job_with_the_widest_workflow_id_allowed_has_an_id_the_path_takes() -> None:
    # Given the widest workflow id POST /jobs accepts (4-byte characters up to its byte bound)
    from jobtriggers.logic.job_creation import MAX_WORKFLOW_ID_BYTES
    from jobtriggers.models import Job, job_key_from_id

    workflow_id = "\U0001f9ec" * (MAX_WORKFLOW_ID_BYTES // 4)
    job = Job.submitted(workflow_id, {"any": "config"}, "2025-01-01T00:00:00.000Z", "site")
    # Then its id fits the path parameter and names its key, and the key fits DynamoDB
    assert len(job.id) <= JOB_ID_MAX_LENGTH
    assert job_key_from_id(job.id) == job.key and job.key.startswith(workflow_id + "#config:")
    assert len(job.key.encode()) <= PARTITION_KEY_MAX_BYTES
