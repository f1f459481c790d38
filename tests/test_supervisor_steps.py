"""The supervisor's steps, driven in process on an injected clock: the scheduler
(due ETA rows, periodic fires), the janitor's timers, and the guard that contains a
failing step. Real SQLite files; no worker process, no sleep."""
import logging
import time

import pytest

import litequeue
from litequeue import PENDING, SCHEDULED

from .helpers import insert_schedule, sql


class Bell:
    def __init__(self):
        self.rings = 0

    def ring(self, prefix=None):
        self.rings += 1


def test_timers_run_each_job_when_due_in_order_and_hold_what_is_held():
    ran = []
    timers = litequeue._Timers()
    timers.add("a", 0.0, 10.0, lambda now: ran.append(("a", now)))
    timers.add("b", 5.0, 1.0, lambda now: ran.append(("b", now)) or now + 100.0)
    timers.add("off", None, 1.0, lambda now: ran.append(("off", now)))
    assert timers.next_due() == 0.0
    timers.step(0.0)
    assert ran == [("a", 0.0)] and timers.next_due() == 5.0
    timers.step(6.0, held=("b",))
    assert ran == [("a", 0.0)] and timers.next_due(held=("b",)) == 10.0
    timers.step(12.0)
    assert ran[1:] == [("a", 12.0), ("b", 12.0)]
    assert timers.due == {"a": 22.0, "b": 112.0, "off": None}   # b chose its next time


def test_a_failing_timer_job_waits_its_interval_like_any_other():
    timers = litequeue._Timers()

    def boom(now):
        raise RuntimeError("boom")
    timers.add("boom", 0.0, 3.0, boom)
    with pytest.raises(RuntimeError):
        timers.step(1.0)
    assert timers.next_due() == 4.0


def test_the_guard_waits_out_a_busy_lock_counts_errors_and_ends_the_worker(caplog):
    caplog.set_level(logging.INFO, logger="litequeue")
    quarantined = []
    guard = litequeue._Guard(after_error=lambda: quarantined.append(1))

    def busy():
        raise litequeue.DatabaseBusy("the write lock is busy")

    def broken():
        raise ValueError("a row nobody can read")
    assert guard("scheduler", busy, default="later") == "later"
    assert guard("scheduler", busy, default="later") == "later"
    assert caplog.text.count("waiting it out") == 1         # logged once per interval
    assert quarantined == []
    for n in range(1, litequeue._STEP_FAILURES_MAX):
        assert guard("scheduler", broken, default=None) is None
        assert guard.failures["scheduler"] == n and len(quarantined) == n
    assert guard("scheduler", lambda: 42) == 42 and "scheduler works again" in caplog.text
    for _ in range(litequeue._STEP_FAILURES_MAX - 1):
        guard("scheduler", broken)
    with pytest.raises(litequeue._Fatal, match="scheduler failed 5 times in a row"):
        guard("scheduler", broken)


def test_the_scheduler_promotes_due_rows_fires_schedules_and_says_when_to_look_again(project):
    add = project.app.tasks["tasks.add"]
    later = add.apply_async((1, 1), countdown=3600)
    soon = add.apply_async((2, 2), countdown=30)
    storage = litequeue._Storage(project.db)
    bell, quarantined = Bell(), []
    scheduler = litequeue._Scheduler(storage, bell, lambda: quarantined.append(1))
    try:
        now = time.time()
        # Nothing due: no write, and the next look is ahead of the nearer eta.
        wake = scheduler.step(now)
        (eta,), = sql(project.db, "SELECT eta FROM tasks WHERE id = ?", soon.id)
        assert wake == pytest.approx(eta - litequeue._ETA_PREWAKE, abs=1e-6)
        assert bell.rings == 0 and project.state(soon.id) == SCHEDULED
        # Past the eta and its grace: promoted, and the children rung.
        wake = scheduler.step(now + 31 + litequeue._DUE_CLAIM_GRACE)
        assert project.state(soon.id) == PENDING and project.state(later.id) == SCHEDULED
        assert bell.rings >= 1
        # A periodic task whose fire is due is queued once.
        insert_schedule(project.db, "every-minute", last_fire=now - 90, next_fire=now - 30)
        rings = bell.rings
        scheduler.step(now)
        fired = sql(project.db, "SELECT count(*) FROM tasks WHERE id LIKE 'every-minute@%'")
        assert fired == [(1,)] and bell.rings > rings
        scheduler.step(now)
        assert sql(project.db, "SELECT count(*) FROM tasks WHERE id LIKE 'every-minute@%'") \
            == [(1,)]
        # A row whose eta is not a time is the quarantine's, not the scheduler's problem.
        sql(project.db, "UPDATE tasks SET eta = 'soon' WHERE id = ?", later.id)
        scheduler.step(now)
        assert quarantined == [1]
    finally:
        storage.close()


def test_only_a_revoke_with_terminate_marks_a_row_for_the_supervisor_to_kill(project):
    """A plain revoke takes a claimed row its worker has not begun (the worker skips it);
    the supervisor, which may still read that row in the worker's lock record, must not
    kill the process for it, as it does for terminate."""
    add = project.app.tasks["tasks.add"]
    plain, killed = add.delay(1, 1), add.delay(2, 2)
    storage = litequeue._Storage(project.db)
    worker = litequeue._new_worker_id()
    storage.register_worker({"id": worker, "parent": None, "hostname": "h", "pid": 1,
                             "queues": "default", "concurrency": 1, "started_at": time.time()})
    try:
        rows = storage.complete_and_claim([], worker, 1, time.time(), "default", 2).rows
        seqs = {row.id: row.seq for row in rows}
        assert storage.revoke(plain.id, False, time.time(), lambda: None, lambda w, s: None)
        assert storage.revoke(killed.id, True, time.time(), lambda: None,
                              lambda w, s: "running")
        assert storage.states_of(seqs.values()) == {s: "REVOKED" for s in seqs.values()}
        assert storage.police_states(seqs.values()) == (
            {s: "REVOKED" for s in seqs.values()}, {seqs[killed.id]})
    finally:
        storage.close()
