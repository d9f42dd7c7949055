"""Every job of one chain: the jobs table's `by_root` index (root_object_id, created_at).

A job's item carries `root_object_id` (dal/jobs.py `job_item`): the object its chain started from,
its own object when it was made from a plain tag. So one Query returns a whole chain, oldest
first, whatever its depth: the lineage read (GET /jobs/{id}/lineage, the board) and `jobtriggers
jobs tree` need nothing else. The index is eventually consistent: a job made a moment ago may be
missing from it for that moment.
"""

from __future__ import annotations

from jobtriggers.dal.jobs import job_from_item
from jobtriggers.dal.pages import query_all
from jobtriggers.models import Job
from jobtriggers.settings import table_names


class ChainRepository:
    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or table_names().jobs_table

    def jobs_of_root(self, root_object_id: str) -> list[Job]:
        """Every job whose chain started from `root_object_id`, oldest first (one Query, paged)."""
        items = query_all(
            table=self.table,
            index="by_root",
            key_condition="root_object_id = :r",
            values={":r": root_object_id},
            action=f"read the jobs of the chain of object {root_object_id}",
        )
        return [job_from_item(i) for i in items]
