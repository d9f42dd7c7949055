"""Objects (DRS) and their object types: POST /objects, GET /objects/{id}, the /types family."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body

from jobtriggers import wiring
from jobtriggers.api.auth import require_site_id
from jobtriggers.api.params import SITE_TOKEN, ObjectIdPath, RegistryIdPath
from jobtriggers.dal.assignments import MAX_TYPES_PER_REPLACE
from jobtriggers.errors import NotFoundError
from jobtriggers.logic.objects import object_from_request
from jobtriggers.models import DrsObject, DrsObjectIn, ObjectType, RegistryId
from jobtriggers.models.object_triggers import ObjectTriggers
from jobtriggers.observability import logger

router = Router()

TypeIdList = Annotated[
    list[RegistryId],
    Body(
        description="the complete set of object type ids the object should carry",
        max_length=MAX_TYPES_PER_REPLACE,
    ),
]


def _type_records(type_ids: list[str]) -> list[ObjectType]:
    """The registry records of these type ids (one that left the registry is skipped, and logged)."""
    registry = wiring.registry()
    records = []
    for type_id in type_ids:
        try:
            records.append(registry.get("object_type", type_id))
        except NotFoundError:
            logger.warning(
                "object carries a type the registry no longer has", extra={"object_type_id": type_id}
            )
    return records


def _request_host() -> str:
    headers = router.current_event.headers
    return headers.get("Host") or headers.get("host") or "localhost"


@router.post("/objects", tags=["objects"], security=SITE_TOKEN, status_code=201)
def create_object(body: DrsObjectIn) -> Response[DrsObject]:
    """Register an object. 409 when its id exists or a checksum belongs to another object."""
    site_id = require_site_id()
    obj = object_from_request(body, site_id, _request_host())
    wiring.objects().create(obj)
    logger.info("object created", extra={"object_id": obj.id, "site_id": site_id})
    return Response(status_code=201, content_type=content_types.APPLICATION_JSON, body=obj)


@router.get("/objects/<object_id>", tags=["objects"], security=SITE_TOKEN)
def get_object(object_id: ObjectIdPath) -> DrsObject:
    require_site_id()
    obj = wiring.objects().get(object_id)
    types = sorted(a.object_type_id for a in wiring.assignments().types_of(object_id))
    return obj.model_copy(update={"types": types})


@router.get("/objects/<object_id>/types", tags=["objects"], security=SITE_TOKEN)
def get_object_types(object_id: ObjectIdPath) -> list[ObjectType]:
    require_site_id()
    return _type_records(wiring.object_tagger().current_types(object_id))


@router.get("/objects/<object_id>/triggers", tags=["objects"], security=SITE_TOKEN)
def get_object_triggers(object_id: ObjectIdPath) -> ObjectTriggers:
    """Why is there (no) job? For each of the object's types, each trigger and its job (id and
    status) or why there is none; a type that triggers nothing; a workflow no longer in the
    registry; and the object's jobs that no current trigger explains."""
    require_site_id()
    return wiring.object_triggers().explain(object_id)


@router.put("/objects/<object_id>/types", tags=["objects"], security=SITE_TOKEN)
def replace_object_types(object_id: ObjectIdPath, type_ids: TypeIdList) -> list[ObjectType]:
    """Replace the object's set of types in one transaction; 422 names unknown type ids."""
    site_id = require_site_id()
    return _type_records(wiring.object_tagger().replace(object_id, type_ids, by=site_id))


@router.put("/objects/<object_id>/types/<type_id>", tags=["objects"], security=SITE_TOKEN)
def add_object_type(object_id: ObjectIdPath, type_id: RegistryIdPath) -> list[ObjectType]:
    """Add one type (nothing happens when the object has it already)."""
    site_id = require_site_id()
    return _type_records(wiring.object_tagger().add(object_id, type_id, by=site_id))


@router.delete("/objects/<object_id>/types/<type_id>", tags=["objects"], security=SITE_TOKEN)
def remove_object_type(object_id: ObjectIdPath, type_id: RegistryIdPath) -> list[ObjectType]:
    """Remove one type (nothing happens when the object does not have it)."""
    site_id = require_site_id()
    return _type_records(wiring.object_tagger().remove(object_id, type_id, by=site_id))
