"""Seeder: the RegistrySeed custom resource loads seed/ (the SeedDataLayer, under /opt) on deploy."""

import os
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from jobtriggers import wiring
from jobtriggers.dal.assignments import AssignmentRepository
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.logic.deploy import handle_seed_event
from jobtriggers.logic.triggering import TriggerEngine
from jobtriggers.observability import logger

SEED_DIR = Path(os.environ.get("SEED_DIR", "/opt"))
# No require_settings() at import here: a custom resource that fails to start never answers
# CloudFormation, which then waits an hour. A missing table name fails the seed load instead, and
# handle_seed_event reports it as the FAILED reason, naming the variables.


def services() -> tuple[RegistryRepository, TriggerEngine, AssignmentRepository]:
    return wiring.registry(), wiring.backfill_engine(), wiring.assignments()


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_seed_event(event, SEED_DIR, services)
