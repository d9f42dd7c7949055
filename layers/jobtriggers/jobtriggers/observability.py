"""One Logger, Tracer and Metrics for the whole package (service and namespace from POWERTOOLS_*)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics()
