"""TriggerEngine: the object-type table's stream -> one conditional job put per triggered workflow.

Records are handled in order and a batch stops at its first failed record (logic/stream_batch.py):
the rest is handed back, so a retry starts there and nothing is done twice; when the first record
fails the handler raises, so that Lambda counts the error and bisects the batch (template.yaml).
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from jobtriggers import wiring
from jobtriggers.logic.stream_batch import PartialItemFailureResponse, process_in_order
from jobtriggers.logic.triggering import record_batch_metrics
from jobtriggers.observability import logger, metrics
from jobtriggers.settings import require_settings, table_names

require_settings(table_names)  # a missing variable fails the cold start, naming it

# The trigger set: read whole and strongly consistent, kept a second in the warm Lambda.
engine = wiring.stream_trigger_engine()


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    result = process_in_order(event.get("Records", []), engine.handle_stream_record)
    record_batch_metrics(result)
    return result.response_or_raise()
