"""TokenFunction: POST /token, client credentials -> a short-lived access token."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from jobtriggers.api.token import app
from jobtriggers.observability import logger
from jobtriggers.settings import require_settings, table_names, token_settings

require_settings(table_names, token_settings)  # a missing variable fails the cold start, naming it


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
