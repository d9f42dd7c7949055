"""Domain exceptions. The data-access layer raises them (``raise ... from exc``); the API maps them
to HTTP in one place (jobtriggers.api.errors). Messages are written for the person who reads them."""

from __future__ import annotations

from typing import Any


class JobTriggersError(Exception):
    """Base class; ``detail`` is what a client sees."""

    status_code = 500

    def __init__(self, detail: Any, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context


class NotFoundError(JobTriggersError):
    status_code = 404


class ConflictError(JobTriggersError):
    status_code = 409


class ValidationFailed(JobTriggersError):
    """Input that is well-formed JSON but refers to things that do not exist, or breaks a rule."""

    status_code = 422


class BadRequestError(JobTriggersError):
    status_code = 400


class UnauthorizedError(JobTriggersError):
    status_code = 401


class ForbiddenError(JobTriggersError):
    status_code = 403


class PayloadTooLargeError(JobTriggersError):
    status_code = 413


class RetryableStoreError(JobTriggersError):
    """The store throttled or failed transiently; the caller (or Lambda) should retry."""

    status_code = 503


class SeedError(JobTriggersError):
    """The seed/ registry is invalid; ``detail`` is a list of readable problems."""

    status_code = 422
