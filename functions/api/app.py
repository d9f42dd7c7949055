"""ApiFunction: the sites' REST API (objects, registry, jobs, and the routes added to jobtriggers.api.app)."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from jobtriggers.api.app import app
from jobtriggers.observability import logger, metrics
from jobtriggers.settings import idempotency_settings, job_settings, require_settings, table_names

require_settings(
    table_names, job_settings, idempotency_settings
)  # a missing variable fails the cold start, naming it


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
