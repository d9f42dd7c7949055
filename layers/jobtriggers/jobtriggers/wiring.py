"""The composition root: the one place that builds the services from their stores, for the Lambda
handlers, the CLI, the job board and the local runtime alike. Nothing else constructs a service
with its repositories, so changing what backs a port is a change here.

Each builder imports what it builds when called: a handler that builds only the trigger engine
does not pay, at cold start, for the claims, the tokens or the objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobtriggers.dal.assignments import AssignmentRepository
    from jobtriggers.dal.chains import ChainRepository
    from jobtriggers.dal.job_events import JobEventsStore
    from jobtriggers.dal.job_views import JobViews
    from jobtriggers.dal.jobs import JobRepository
    from jobtriggers.dal.objects import ObjectRepository
    from jobtriggers.dal.operations import OperationRepository
    from jobtriggers.dal.registry import RegistryRepository
    from jobtriggers.dal.sites import SiteRepository
    from jobtriggers.logic.claims import ClaimService
    from jobtriggers.logic.job_creation import JobCreator
    from jobtriggers.logic.lifecycle import JobSteering
    from jobtriggers.logic.lineage import LineageService
    from jobtriggers.logic.listing import JobListing, OperationListing
    from jobtriggers.logic.object_triggers import ObjectTriggersReader
    from jobtriggers.logic.objects import ObjectTagger
    from jobtriggers.logic.tokens import TokenService
    from jobtriggers.logic.triggering import TriggerEngine


def registry() -> RegistryRepository:
    from jobtriggers.dal.registry import RegistryRepository

    return RegistryRepository()


def sites() -> SiteRepository:
    from jobtriggers.dal.sites import SiteRepository

    return SiteRepository()


def jobs() -> JobRepository:
    from jobtriggers.dal.jobs import JobRepository

    return JobRepository()


def operations() -> OperationRepository:
    from jobtriggers.dal.operations import OperationRepository

    return OperationRepository()


def assignments() -> AssignmentRepository:
    from jobtriggers.dal.assignments import AssignmentRepository

    return AssignmentRepository()


def claim_service() -> ClaimService:
    from jobtriggers.logic.claims import ClaimService

    registry_repo = registry()
    return ClaimService(jobs(), operations(), registry_repo, triggers=registry_repo)


def job_steering() -> JobSteering:
    from jobtriggers.logic.lifecycle import JobSteering

    return JobSteering(jobs())


def job_creator() -> JobCreator:
    from jobtriggers.logic.job_creation import JobCreator

    return JobCreator(jobs())


def job_listing() -> JobListing:
    from jobtriggers.logic.listing import JobListing

    return JobListing(jobs(), registry())


def operation_listing() -> OperationListing:
    from jobtriggers.logic.listing import OperationListing

    return OperationListing(operations())


def stream_trigger_engine() -> TriggerEngine:
    """What the object-type stream runs: the trigger set read whole and strongly consistent, kept a
    second in the warm Lambda (logic/triggering.py says why)."""
    from jobtriggers.logic.triggering import TriggerEngine, TriggerSet

    return TriggerEngine(TriggerSet(registry().all_triggers), jobs())


def backfill_engine() -> TriggerEngine:
    """What a seed load, the seeder and a reconcile run: backfills read each trigger's type index."""
    from jobtriggers.logic.triggering import TriggerEngine

    return TriggerEngine(registry(), jobs())


def objects() -> ObjectRepository:
    from jobtriggers.dal.objects import ObjectRepository

    return ObjectRepository()


def object_tagger() -> ObjectTagger:
    from jobtriggers.logic.objects import ObjectTagger

    return ObjectTagger(objects(), assignments(), registry())


def chains() -> ChainRepository:
    from jobtriggers.dal.chains import ChainRepository

    return ChainRepository()


def lineage() -> LineageService:
    """Chains and lineage (GET /jobs/{id}/lineage, `jobtriggers jobs tree`, the board): one Query
    of the jobs' by_root index per chain."""
    from jobtriggers.logic.lineage import LineageService

    return LineageService(jobs(), chains())


def object_triggers() -> ObjectTriggersReader:
    """GET /objects/{id}/triggers: an object's types, their triggers and jobs, and why not."""
    from jobtriggers.logic.object_triggers import ObjectTriggersReader

    return ObjectTriggersReader(objects(), assignments(), registry(), jobs())


def token_service() -> TokenService:
    """A TokenService on the configured sites table and signing key (cheap to build: the settings
    and the Secrets Manager value are cached where they are read)."""
    from jobtriggers.dal.secrets import signing_key
    from jobtriggers.logic.tokens import TokenService
    from jobtriggers.settings import token_settings

    settings = token_settings()
    return TokenService(sites(), lambda: signing_key(settings), settings)


def job_events_store() -> JobEventsStore:
    """The job events and counts tables (JOB_EVENTS_TABLE, COUNTS_TABLE), for reading: the board."""
    from jobtriggers.dal.job_events import JobEventsStore

    return JobEventsStore()


def job_views() -> JobViews:
    """The operators' bounded reads of the jobs and operations tables (the board's lists)."""
    from jobtriggers.dal.job_views import JobViews

    return JobViews()
