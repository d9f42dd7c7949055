"""The environment as plain pydantic models over os.environ: one place that knows the variable names.

A setting that cannot be missing has no default. Each handler calls `require_settings(...)` at
import with the groups it reads, so a Lambda with a missing or malformed variable fails at cold
start with a message naming every such variable, instead of talking to a table that does not exist.
The template sets them (Globals and each function's Environment); the CLI and the local runtime set
them before they build repositories (cli/common.configure_store, local/store.create_tables).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobtriggers.errors import JobTriggersError


class SettingsError(JobTriggersError):
    """The environment lacks (or garbles) settings; the message names each variable. A fault (500)
    where a request meets it; the CLI prints it as an error."""

    def __init__(self, missing: list[str], invalid: list[str]) -> None:
        self.missing = missing
        self.invalid = invalid
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if invalid:
            parts.append("invalid " + "; ".join(invalid))
        super().__init__(
            f"the environment is not complete: {'; '.join(parts)} (template.yaml sets them for each "
            "function; the jobtriggers command finds the tables with --endpoint-url or --stack)"
        )


class _Environment(BaseModel):
    """Fields are aliased to their variable names; an empty variable counts as unset."""

    # defer_build: a handler builds the validators of the groups it reads, not of every group.
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)
    # Groups of variables of which at least one must be set (e.g. where the signing key comes from).
    one_of: ClassVar[tuple[tuple[str, ...], ...]] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = os.environ if environ is None else environ
        names = [f.alias or name for name, f in cls.model_fields.items()]
        values = {n: env[n] for n in names if env.get(n)}
        missing = [" or ".join(group) for group in cls.one_of if not any(values.get(n) for n in group)]
        invalid: list[str] = []
        try:
            settings = cls.model_validate(values)
        except ValidationError as exc:
            for error in exc.errors():
                name = ".".join(str(p) for p in error["loc"])
                if error["type"] == "missing":
                    missing.append(name)
                else:  # the message, never the value (it may be a secret)
                    invalid.append(f"{name}: {error['msg']}")
        if missing or invalid:
            raise SettingsError(missing, invalid)
        return settings


class TableNames(_Environment):
    """DynamoDB table names, set by template.yaml (Globals) or by the local runtime."""

    registry_table: str = Field(alias="REGISTRY_TABLE")
    sites_table: str = Field(alias="SITES_TABLE")
    objects_table: str = Field(alias="OBJECTS_TABLE")
    object_types_table: str = Field(alias="OBJECT_TYPES_TABLE")
    jobs_table: str = Field(alias="JOBS_TABLE")
    operations_table: str = Field(alias="OPERATIONS_TABLE")


class IdempotencySettings(_Environment):
    """The table of POST /jobs:claim's idempotency records. Only ApiFunction has it (template.yaml
    sets IDEMPOTENCY_TABLE in its own environment), so it is read only where a claim needs it."""

    idempotency_table: str = Field(alias="IDEMPOTENCY_TABLE", min_length=1)


class JobEventsSettings(_Environment):
    """The tables the job events consumer writes and the board reads: one item per job transition
    (JOB_EVENTS_TABLE) and the running counts (COUNTS_TABLE). template.yaml sets them on the
    functions that use them only."""

    job_events_table: str = Field(alias="JOB_EVENTS_TABLE", min_length=1)
    counts_table: str = Field(alias="COUNTS_TABLE", min_length=1)


class JobEventsBusSettings(_Environment):
    """The EventBridge bus job transitions are published on (its name). Only JobEventsFunction
    publishes; readers of the events table (the board) do not need it."""

    job_events_bus: str = Field(alias="JOB_EVENTS_BUS", min_length=1)


class TokenSettings(_Environment):
    """How access tokens are signed and how long they live."""

    # On AWS the key lives in Secrets Manager; locally the runtime generates one and passes it in
    # SIGNING_KEY (never on argv, never logged).
    one_of = (("SIGNING_KEY_SECRET_ARN", "SIGNING_KEY"),)

    signing_key_secret_arn: str | None = Field(default=None, alias="SIGNING_KEY_SECRET_ARN")
    signing_key: str | None = Field(default=None, alias="SIGNING_KEY", repr=False)
    token_ttl_seconds: int = Field(default=3600, alias="TOKEN_TTL_SECONDS", ge=60, le=86400)
    issuer: str = Field(default="jobtriggers", alias="TOKEN_ISSUER")


class JobSettings(_Environment):
    """Defaults for workflows that do not set their own lease and attempt limits."""

    default_lease_seconds: int = Field(default=3600, alias="DEFAULT_LEASE_SECONDS", ge=1)
    default_max_attempts: int = Field(default=3, alias="DEFAULT_MAX_ATTEMPTS", ge=1)
    # Jobs of workflows the registry does not know (created with POST /jobs, claimed by their
    # creator): 30 days, the expiry the NMDC Runtime gives an operation, since NMDC's watcher
    # reports only when a run ends and never renews a lease.
    site_workflow_lease_seconds: int = Field(
        default=30 * 24 * 3600, alias="SITE_WORKFLOW_LEASE_SECONDS", ge=1
    )


@lru_cache(maxsize=1)
def table_names() -> TableNames:
    return TableNames.from_environ()


@lru_cache(maxsize=1)
def idempotency_settings() -> IdempotencySettings:
    return IdempotencySettings.from_environ()


@lru_cache(maxsize=1)
def job_events_settings() -> JobEventsSettings:
    return JobEventsSettings.from_environ()


@lru_cache(maxsize=1)
def job_events_bus_settings() -> JobEventsBusSettings:
    return JobEventsBusSettings.from_environ()


@lru_cache(maxsize=1)
def token_settings() -> TokenSettings:
    return TokenSettings.from_environ()


@lru_cache(maxsize=1)
def job_settings() -> JobSettings:
    return JobSettings.from_environ()


def require_settings(*groups: Callable[[], Any]) -> None:
    """Read these settings now (a handler calls this at import): one SettingsError naming every
    missing or malformed variable of all of them, rather than the first one a request trips on."""
    missing: list[str] = []
    invalid: list[str] = []
    for group in groups:
        try:
            group()
        except SettingsError as exc:
            missing += exc.missing
            invalid += exc.invalid
    if missing or invalid:
        raise SettingsError(missing, invalid)


def reset_settings_cache() -> None:
    """Tests and the local runtime change the environment; they call this after."""
    table_names.cache_clear()
    idempotency_settings.cache_clear()
    job_events_settings.cache_clear()
    job_events_bus_settings.cache_clear()
    token_settings.cache_clear()
    job_settings.cache_clear()
