"""AuthorizerFunction: API Gateway's TOKEN authorizer; a valid site token -> Allow with {site_id}."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from jobtriggers.api.auth import authorize
from jobtriggers.observability import logger
from jobtriggers.settings import require_settings, table_names, token_settings

require_settings(table_names, token_settings)  # a missing variable fails the cold start, naming it


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return authorize(event)
