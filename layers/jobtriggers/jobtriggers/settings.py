"""The environment as pydantic models: one place that knows the variable names.

Every Lambda reads only the settings it needs; a missing variable fails at cold start with the
variable's name, not later with a KeyError deep in a request.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TableNames(BaseSettings):
    """DynamoDB table names, set by template.yaml (Globals) or by the local runtime."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    registry_table: str = Field(default="jobtriggers-registry", alias="REGISTRY_TABLE")
    sites_table: str = Field(default="jobtriggers-sites", alias="SITES_TABLE")
    objects_table: str = Field(default="jobtriggers-objects", alias="OBJECTS_TABLE")
    object_types_table: str = Field(default="jobtriggers-object-types", alias="OBJECT_TYPES_TABLE")
    jobs_table: str = Field(default="jobtriggers-jobs", alias="JOBS_TABLE")
    operations_table: str = Field(default="jobtriggers-operations", alias="OPERATIONS_TABLE")


class IdempotencySettings(BaseSettings):
    """The table of POST /jobs:claim's idempotency records. Only ApiFunction has it (template.yaml
    sets IDEMPOTENCY_TABLE in its own environment), so it is read only where a claim needs it."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    idempotency_table: str = Field(alias="IDEMPOTENCY_TABLE", min_length=1)


class TokenSettings(BaseSettings):
    """How access tokens are signed and how long they live."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # On AWS the key lives in Secrets Manager; locally the runtime generates one and passes it in
    # SIGNING_KEY (never on argv, never logged).
    signing_key_secret_arn: str | None = Field(default=None, alias="SIGNING_KEY_SECRET_ARN")
    signing_key: str | None = Field(default=None, alias="SIGNING_KEY", repr=False)
    token_ttl_seconds: int = Field(default=3600, alias="TOKEN_TTL_SECONDS", ge=60, le=86400)
    issuer: str = Field(default="jobtriggers", alias="TOKEN_ISSUER")


class JobSettings(BaseSettings):
    """Defaults for workflows that do not set their own lease and attempt limits."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    default_lease_seconds: int = Field(default=3600, alias="DEFAULT_LEASE_SECONDS", ge=1)
    default_max_attempts: int = Field(default=3, alias="DEFAULT_MAX_ATTEMPTS", ge=1)


@lru_cache(maxsize=1)
def table_names() -> TableNames:
    return TableNames()


@lru_cache(maxsize=1)
def idempotency_settings() -> IdempotencySettings:
    return IdempotencySettings()


@lru_cache(maxsize=1)
def token_settings() -> TokenSettings:
    return TokenSettings()


@lru_cache(maxsize=1)
def job_settings() -> JobSettings:
    return JobSettings()


def reset_settings_cache() -> None:
    """Tests and the local runtime change the environment; they call this after."""
    table_names.cache_clear()
    idempotency_settings.cache_clear()
    token_settings.cache_clear()
    job_settings.cache_clear()
