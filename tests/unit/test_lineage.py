"""Lineage without a network: a chain from its jobs' parent links, a job's ancestors and descendants,
and durations (LineageService over in-memory ports)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobtriggers.errors import NotFoundError
from jobtriggers.logic.lineage import LineageService, chain_job
from jobtriggers.models import InputRef, Job, JobStatus, Lineage

NOW = datetime(2025, 1, 1, 0, 10, tzinfo=UTC)


def job(workflow: str, object_id: str, parent: Job | None, minute: int, **fields: object) -> Job:
    root = parent.root_object_id if parent else object_id
    lineage = Lineage(
        generated_by=parent.id if parent else None,
        root_object_id=root,
        inputs=[InputRef(object_id=root)],
    )
    made = Job.new(workflow, object_id, f"2025-01-01T00:0{minute}:00.000Z", lineage=lineage)
    return made.model_copy(update=fields)


class Store:
    """JobLookup and ChainStore: `indexed` is what by_root shows (it may lag the table)."""

    def __init__(self, jobs: list[Job], indexed: list[Job] | None = None) -> None:
        self.by_id = {j.id: j for j in jobs}
        self.indexed = jobs if indexed is None else indexed
        self.finds: list[str] = []
        self.queries = 0

    def find(self, job_id: str, consistent: bool = True) -> Job | None:
        self.finds.append(job_id)
        return self.by_id.get(job_id)

    def jobs_of_root(self, root_object_id: str) -> list[Job]:
        self.queries += 1
        return sorted(
            (j for j in self.indexed if j.root_object_id == root_object_id), key=lambda j: j.created_at
        )


@pytest.fixture
def chain() -> list[Job]:
    done = {"status": JobStatus.done}
    readqc = job("readqc", "seq", None, 0, finished_at="2025-01-01T00:01:30.000Z", **done)
    metag = job("metag", "seq", None, 0)
    asm = job("mgasm", "rqc-rec", readqc, 2, finished_at="2025-01-01T00:04:00.000Z", **done)
    rba = job("mgrba", "rqc-rec", readqc, 2, status=JobStatus.failed, finished_at="2025-01-01T00:03:00.000Z")
    ann = job("mgann", "asm-rec", asm, 5, status=JobStatus.claimed, site_id="site-a", attempts=1)
    mags = job("mags", "ann-rec", ann, 7)
    return [readqc, metag, asm, rba, ann, mags]


def test_a_chain_is_one_query_and_nests_by_parent(chain: list[Job]) -> None:
    store = Store(chain)
    drawn = LineageService(store, store, clock=lambda: NOW).chain("seq")
    assert store.queries == 1 and store.finds == []
    assert [j.workflow_id for j in drawn.children(None)] == ["readqc", "metag"]
    readqc = drawn.children(None)[0]
    assert [j.workflow_id for j in drawn.children(readqc.id)] == ["mgasm", "mgrba"]
    with pytest.raises(NotFoundError):
        LineageService(store, store).chain("nothing")


def test_a_jobs_lineage_is_its_ancestors_root_first_and_its_descendants_parents_first(
    chain: list[Job],
) -> None:
    store = Store(chain)
    service = LineageService(store, store, clock=lambda: NOW)
    asm = chain[2]
    lineage = service.lineage(asm.id)
    assert lineage.root_object_id == "seq" and lineage.job.id == asm.id
    assert [a.workflow_id for a in lineage.ancestors] == ["readqc"]
    assert [d.workflow_id for d in lineage.descendants] == ["mgann", "mags"]
    first = service.lineage(chain[0].id)
    assert first.ancestors == [] and [d.workflow_id for d in first.descendants] == [
        "mgasm",
        "mgrba",
        "mgann",
        "mags",
    ]
    last = service.lineage(chain[-1].id)
    assert [a.workflow_id for a in last.ancestors] == ["readqc", "mgasm", "mgann"] and last.descendants == []
    # metag shares the root but is neither an ancestor nor a descendant of anything
    assert "metag" not in {j.workflow_id for j in [*first.ancestors, *first.descendants]}


def test_a_parent_the_index_does_not_show_yet_is_read_on_its_own(chain: list[Job]) -> None:
    mags = chain[-1]
    store = Store(chain, indexed=[j for j in chain if j.workflow_id != "mgann"])
    lineage = LineageService(store, store, clock=lambda: NOW).lineage(mags.id)
    assert [a.workflow_id for a in lineage.ancestors] == ["readqc", "mgasm", "mgann"]
    assert store.finds == [mags.id, chain[4].id]  # the job itself (consistent), then its missing parent


def test_a_jobs_duration_runs_from_its_creation_to_its_end_or_to_now(chain: list[Job]) -> None:
    readqc, _, _, rba, ann, _ = chain
    assert chain_job(readqc, NOW).duration_seconds == 90.0
    assert chain_job(rba, NOW).duration_seconds == 60.0
    claimed = chain_job(ann, NOW)
    assert claimed.duration_seconds == 300.0 and claimed.site_id == "site-a" and claimed.finished_at is None
