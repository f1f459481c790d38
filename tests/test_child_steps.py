"""A worker child's commit step, driven in process against a real SQLite file: no worker
process, no signal handler, no sleep."""
import os
import time

import apsw

import litequeue
from litequeue import FAILURE, PENDING, SUCCESS

from .helpers import sql


class Bell:
    def __init__(self):
        self.rings = []

    def ring(self, prefix=None):
        self.rings.append(prefix)

    def ring_tasks(self, tags):
        self.rings.extend(tags)


class Refusing(litequeue._Storage):
    """Refuses a group commit, and any commit of the poisoned row (as SQLite refuses a
    result over its size limit)."""
    poison = None

    def complete_and_claim(self, outcomes, *args, **kwargs):
        if len(outcomes) > 1 or any(o.seq == self.poison and o.state == SUCCESS
                                    for o in outcomes):
            raise apsw.TooBigError("string or blob too big")
        return super().complete_and_claim(outcomes, *args, **kwargs)


def test_a_refused_result_is_stored_alone_and_its_neighbours_followers_still_run(project):
    add = project.app.tasks["tasks.add"]
    chain = (add.s(1, 1) | add.s(10)).delay()          # the first step has a follower
    first = chain.parent
    alone = add.delay(5, 5)
    storage = Refusing(project.db)
    worker = litequeue._new_worker_id()
    storage.register_worker({"id": worker, "parent": None, "hostname": "h", "pid": os.getpid(),
                             "queues": "default", "concurrency": 1, "started_at": time.time()})
    child = litequeue._Child({
        "db": project.db, "worker_id": worker, "parent_id": None, "queues": ["default"],
        "modules": [], "loglevel": "INFO", "settings": dict(litequeue.DEFAULTS),
        "autoimport": False, "poll_interval": 1.0, "cwd": str(project.dir), "hostname": "h",
        "time_limit": None, "soft_time_limit": None, "max_tasks": None, "max_memory": None})
    child.storage = storage
    child.done_bell, child.work_bell, child.control_bell = Bell(), Bell(), Bell()
    try:
        rows = storage.complete_and_claim([], worker, os.getpid(), time.time(), "default",
                                          8).rows
        by_id = {row.id: row for row in rows}
        assert set(by_id) == {first.id, alone.id}
        storage.poison = by_id[alone.id].seq
        outcomes = [litequeue._Run(by_id[first.id], litequeue._ON_MAIN).outcome(
                        SUCCESS, litequeue._pack(2)),
                    litequeue._Run(by_id[alone.id], litequeue._ON_MAIN).outcome(
                        SUCCESS, litequeue._pack(10))]
        assert child._commit(outcomes, 0) == []
        # The good result is stored and its link queued (and the workers rung for it);
        # the refused one ends FAILURE saying why, and charges nobody else.
        assert project.state(first.id) == SUCCESS and first.get(timeout=1) == 2
        assert project.state(chain.id) == PENDING and child.work_bell.rings
        assert project.state(alone.id) == FAILURE
        assert "its outcome could not be stored: TooBigError" in \
            sql(project.db, "SELECT result FROM tasks WHERE id = ?", alone.id)[0][0].decode(
                "utf-8", "replace")
    finally:
        storage.close()
