"""Reconciler: on an EventBridge schedule (off by default), make sure every tagged object has its jobs."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from jobtriggers import wiring
from jobtriggers.logic.reconcile import reconcile_everything
from jobtriggers.observability import logger, metrics
from jobtriggers.settings import require_settings, table_names

require_settings(table_names)  # a missing variable fails the cold start, naming it

registry = wiring.registry()
engine = wiring.backfill_engine()


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return reconcile_everything(registry, engine, wiring.assignments())
