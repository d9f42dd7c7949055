"""One Logger and one Metrics for the whole package (service and namespace from POWERTOOLS_*).

No Tracer: Lambda's active tracing (`Tracing: Active` in template.yaml) records every invocation
without the X-Ray SDK, whose import (an X-Ray recorder and its botocore clients) was the largest
part of each cold start, and whose `capture_lambda_handler` recorded responses, /token's bearer
token among them, as trace metadata.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

logger = Logger()
metrics = Metrics()
