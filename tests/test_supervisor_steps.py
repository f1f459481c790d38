"""The supervisor's steps, driven in process on an injected clock: the scheduler
(due ETA rows, periodic fires, schedules that cannot fire), the janitor's timers, and the
guard that contains a failing step. Real SQLite files; no worker process, no sleep."""
import datetime as dt
import logging
import time

import pytest

import litequeue
from litequeue import PENDING, SCHEDULED, SUCCESS

from .helpers import UTC, fires_of, insert_schedule, lq_here, pack, sql
from .test_hostile_rows import BAD_SCHEDULES


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


@pytest.mark.parametrize("name", list(BAD_SCHEDULES))
def test_a_schedule_that_cannot_fire_is_disabled_and_the_scheduler_goes_on(project, here,
                                                                           name):
    """The schedules of test_hostile_rows' TestBadRows (not a time, no such zone, no such
    minute, no interval, past year 9999, an interval of 10 microseconds) met by the
    scheduler step of a supervisor opened in this process: it is disabled saying why, as
    `litequeue schedules` and `status` show, no error reaches the guard that would end the
    worker, however many passes, and ETA rows and a good schedule still go when due. (That
    the process lives on: TestBadRows.)"""
    w = here(project)
    sup = w.supervisor()
    insert_schedule(project.db, name, **BAD_SCHEDULES[name])
    for _ in range(litequeue._STEP_FAILURES_MAX):   # passes enough to end a failing worker
        sup._schedule()                             # the loop's step, under its guard
    assert sup._guard.failures == {}
    (error,), = sql(project.db, "SELECT error FROM schedules WHERE name = ?", name)
    assert error                                    # why it was disabled
    done = lq_here("schedules", project.db, cwd=project.dir)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done
    assert name in done.stdout and "DISABLED" in done.stdout, done.stdout
    status = lq_here("status", project.db, cwd=project.dir)
    assert status.returncode == 0 and "Traceback" not in status.stderr, status
    assert f"{name} DISABLED" in status.stdout, status.stdout
    # Still scheduling: a countdown row is promoted at its eta, a good schedule fires at
    # its time, once; the disabled one never.
    r = project.app.tasks["tasks.add"].apply_async((3, 4), countdown=60)
    (eta,), = sql(project.db, "SELECT eta FROM tasks WHERE id = ?", r.id)
    good = pack({"args": [100, 1]})
    fire = float(int(eta) + 1)                      # its next whole second
    insert_schedule(project.db, "good", schedule="every:1.0", payload=good,
                    last_fire=fire - 1, next_fire=fire)
    sup._guard("scheduler", sup.scheduler.step, eta - 0.5)
    assert project.state(r.id) == SCHEDULED and fires_of(project.db, "good") == {}
    for now in (eta + litequeue._DUE_CLAIM_GRACE, fire + 0.5):
        sup._guard("scheduler", sup.scheduler.step, now)
    assert project.state(r.id) == PENDING
    assert list(fires_of(project.db, "good")) == \
        [f"good@{dt.datetime.fromtimestamp(fire, UTC).isoformat()}"]
    assert fires_of(project.db, name) == {}
    assert w.work() == 2
    assert r.get(timeout=5) == 7
    assert sql(project.db, "SELECT count(*) FROM tasks WHERE payload = ? AND state = ?",
               good, SUCCESS) == [(1,)]
    assert sup._guard.failures == {}
