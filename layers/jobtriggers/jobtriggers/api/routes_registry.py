"""The public, read-only registry: object types, workflows and the triggers that link them.

The registry is small (tens of entries per kind), so lists are whole lists, as in the NMDC Runtime.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler.api_gateway import Router

from jobtriggers import wiring
from jobtriggers.api.params import RegistryIdPath
from jobtriggers.models import ObjectType, Trigger, Workflow

router = Router()


@router.get("/object_types", tags=["registry"])
def list_object_types() -> list[ObjectType]:
    return wiring.registry().list_all("object_type")


@router.get("/object_types/<type_id>", tags=["registry"])
def get_object_type(type_id: RegistryIdPath) -> ObjectType:
    return wiring.registry().get("object_type", type_id)


@router.get("/object_types/<type_id>/workflows", tags=["registry"])
def get_object_type_workflows(type_id: RegistryIdPath) -> list[Workflow]:
    """The workflows an object of this type triggers."""
    registry = wiring.registry()
    registry.get("object_type", type_id)
    return registry.workflows_for_object_type(type_id)


@router.get("/workflows", tags=["registry"])
def list_workflows() -> list[Workflow]:
    return wiring.registry().list_all("workflow")


@router.get("/workflows/<workflow_id>", tags=["registry"])
def get_workflow(workflow_id: RegistryIdPath) -> Workflow:
    return wiring.registry().get("workflow", workflow_id)


@router.get("/workflows/<workflow_id>/object_types", tags=["registry"])
def get_workflow_object_types(workflow_id: RegistryIdPath) -> list[ObjectType]:
    """The object types that trigger this workflow."""
    registry = wiring.registry()
    registry.get("workflow", workflow_id)
    return registry.object_types_for_workflow(workflow_id)


@router.get("/triggers", tags=["registry"])
def list_triggers() -> list[Trigger]:
    return wiring.registry().list_all("trigger")


@router.get("/triggers/<trigger_id>", tags=["registry"])
def get_trigger(trigger_id: RegistryIdPath) -> Trigger:
    return wiring.registry().get("trigger", trigger_id)
