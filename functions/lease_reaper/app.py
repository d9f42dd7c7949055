"""LeaseReaper: every minute (an EventBridge schedule), expire the claimed jobs whose lease ended."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from jobtriggers import wiring
from jobtriggers.observability import logger, metrics
from jobtriggers.settings import job_settings, require_settings, table_names

require_settings(table_names, job_settings)  # a missing variable fails the cold start, naming it


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # A service per run: it caches workflow limits, which the registry may change between runs.
    report = wiring.claim_service().expire_ended_leases()
    logger.info("lease reaper run", extra=report.as_dict())
    return report.as_dict()
