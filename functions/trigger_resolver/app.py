"""TriggerResolver: the object-type table's stream -> one conditional job put per triggered workflow."""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from jobtriggers.dal.jobs import JobRepository
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.logic.triggering import TriggerResolver, record_batch_metrics
from jobtriggers.observability import logger, metrics
from jobtriggers.settings import require_settings, table_names

require_settings(table_names)  # a missing variable fails the cold start, naming it

processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)
resolver = TriggerResolver(RegistryRepository(), JobRepository())


def record_handler(record: DynamoDBRecord) -> None:
    resolver.handle_stream_record(record.raw_event)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    record_batch_metrics(response)
    return response
