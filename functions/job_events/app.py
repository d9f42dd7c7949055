"""JobEvents: the jobs table's stream -> a transition item and counts per new job version, then its
events on the job events bus (logic/job_events.py).

Records are handled in order and a batch stops at its first failed record (logic/stream_batch.py):
the rest is handed back, so a retry starts there; when the first record fails the handler raises,
so that Lambda counts the error and bisects the batch (template.yaml).
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from jobtriggers.dal.job_events import JobEventsBus, JobEventsStore
from jobtriggers.logic.job_events import JobEventsProcessor, record_batch_metrics
from jobtriggers.logic.stream_batch import PartialItemFailureResponse, process_in_order
from jobtriggers.observability import logger, metrics
from jobtriggers.settings import job_events_bus_settings, job_events_settings, require_settings

# a missing variable fails the cold start, naming it
require_settings(job_events_settings, job_events_bus_settings)

processor = JobEventsProcessor(JobEventsStore(), JobEventsBus())


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    result = process_in_order(event.get("Records", []), processor.handle_stream_record)
    record_batch_metrics(result)
    return result.response_or_raise()
