"""Task failures in a worker: retries and backoff, time limits, revoke, per-child limits
and storage that stays bounded.
"""

import contextlib
import datetime as dt
import os
import random
import signal
import sys
import threading
import time

import apsw
import pytest

import litequeue
from litequeue import (
    FAILURE, PENDING, RETRY, REVOKED, SCHEDULED, STARTED, SUCCESS, UNKNOWN, LitequeueError,
    MaxRetriesExceededError, RemoteError, Retry, SoftTimeLimitExceeded, TaskNotFound, TaskRevoked,
    TimeLimitExceeded, WorkerLostError,
)

from .helpers import UTC, alive, lq_here, sql, wait_until

pytestmark = pytest.mark.timeout(120)


# Slack allowed between a retry's due time and its next run starting: the supervisor
# promotes the row when it is due and rings a child, which claims it (about 1 ms idle).
# A child run in the test process (here(...).start()) wakes itself at the row's eta and
# claims it as it stands (_DUE_ROWS): the same bound holds.
RETRY_LATENESS_MAX = 0.25
# How long a fresh child may take to start and make its first claim, at most.
CHILD_START_MAX = 1.0


def error_lines(errors):
    """(type, message) of each entry of an error history."""
    return [(e["type"], e["message"]) for e in errors]


class TestFailures:
    """Retries, time limits, revoke and worker hygiene. Retries and revokes run in the
    test process (the `here` fixture); kills, time limits and per-child limits need real
    workers and signals."""

    # -- retries ----------------------------------------------------------------------------

    def test_autoretry_follows_the_backoff_schedule_then_fails(self, project, here):
        """flaky: autoretry_for=(IOError,), max_retries=3, retry_backoff=0.2, no jitter:
        runs at about 0, 0.2, 0.6 and 1.4 s, then FAILURE with the last exception."""
        here(project).start()
        r = project.delay("flaky", "always", 99)
        exc = r.get(timeout=20, propagate=False)
        assert (r.state, r.retries) == (FAILURE, 3)
        assert type(exc) is OSError and str(exc) == "always failed on retry 3"
        with pytest.raises(OSError, match="always failed on retry 3"):
            r.get(timeout=5)
        errors = r.errors
        assert error_lines(errors) == [("builtins.OSError", f"always failed on retry {n}")
                                       for n in range(4)]
        assert [e["attempt"] for e in errors] == [1, 2, 3, 4]
        runs = project.runs("always")
        assert [run[0] for run in runs] == [0, 1, 2, 3]   # self.request.retries in the task
        # Timing against the schedule: each run starts backoff seconds after the error
        # before it, plus the worker's lateness.
        backoff = [0.2, 0.4, 0.8]
        lateness = [runs[n + 1][3] - errors[n]["time"] - backoff[n] for n in range(3)]
        offsets = [e["time"] - errors[0]["time"] for e in errors]
        print(f"retry lateness (s) against backoff 0.2/0.4/0.8: "
              f"{', '.join(f'{late:+.4f}' for late in lateness)}; error times at "
              f"{', '.join(f'{o:.3f}' for o in offsets)} s (schedule 0, 0.2, 0.6, 1.4)")
        assert all(0 <= late < RETRY_LATENESS_MAX for late in lateness), lateness
        for offset, due in zip(offsets, [0, 0.2, 0.6, 1.4]):
            assert due <= offset < due + 3 * RETRY_LATENESS_MAX, offsets

    def test_retry_jitter_stays_within_the_capped_backoff(self, project, here):
        """jittery: retry_backoff=True (1, 2, 4 s), retry_backoff_max=0.5, full jitter:
        every countdown is random in [0, 0.5]."""
        here(project).start()
        results = [project.delay("jittery", f"j{n}") for n in range(3)]
        delays = []
        for n, r in enumerate(results):
            assert isinstance(r.get(timeout=30, propagate=False), OSError)
            assert (r.state, r.retries) == (FAILURE, 3)
            runs, errors = project.runs(f"j{n}"), r.errors
            assert len(runs) == len(errors) == 4
            delays += [runs[i + 1][3] - errors[i]["time"] for i in range(3)]
        print(f"jittered retry delays (s), cap 0.5: {sorted(round(d, 3) for d in delays)}")
        assert all(0 <= d < 0.5 + RETRY_LATENESS_MAX for d in delays), delays
        assert len({round(d, 2) for d in delays}) > 1, "no jitter at all"

    def test_bound_retry_with_countdown_reads_retry_while_it_waits(self, project, here):
        here(project).start()
        r = project.delay("retrier", "bound", 2, 0.6)
        wait_until(lambda: r.state == RETRY, 10, lambda: f"RETRY (state {r.state})")
        assert not r.ready() and str(r.result) == str(r.info) == "bound try 0"  # as Celery
        row = project.row(r.id)
        assert (row["retries"], row["worker"] is not None) == (1, True)
        # self.request.retries counted the retries; Retry passed `except LitequeueError`.
        assert r.get(timeout=20) == 2
        assert (r.state, r.retries) == (SUCCESS, 2)
        runs = project.runs("bound")
        assert [run[0] for run in runs] == [0, 1, 2]
        errors = r.errors
        assert error_lines(errors) == [("tasks.TaskFailed", "bound try 0"),
                                       ("tasks.TaskFailed", "bound try 1")]
        assert errors[0]["time"] < errors[1]["time"] <= time.time()
        for n in range(2):
            assert runs[n + 1][3] - errors[n]["time"] >= 0.6      # the countdown held

    def test_bound_retry_out_of_budget_fails_with_the_last_exception(self, project, here):
        w = here(project)
        with_exc = project.delay("retrier", "exc", 99, 0.01)
        without = project.delay("retrier", "bare", 99, 0.01, with_exc=False)
        w.work_until(lambda: with_exc.ready() and without.ready(), 20, "both tasks to end")
        # The results are read as by a producer that never imported tasks.py.
        w.close()
        assert "tasks" not in sys.modules
        exc = with_exc.get(timeout=20, propagate=False)
        # tasks.TaskFailed is not imported here: a stand-in carrying its name and message.
        assert isinstance(exc, RemoteError)
        assert (exc.exc_type, exc.exc_message) == ("tasks.TaskFailed", "exc try 3")
        assert "raise self.retry(exc=TaskFailed" in exc.remote_traceback
        assert (with_exc.state, with_exc.retries, len(with_exc.errors)) == (FAILURE, 3, 4)
        exc = without.get(timeout=20, propagate=False)
        assert isinstance(exc, MaxRetriesExceededError), exc
        assert (without.state, without.retries) == (FAILURE, 3)
        assert without.errors[-1]["type"] == "litequeue.MaxRetriesExceededError"
        assert [e["type"] for e in without.errors[:3]] == ["litequeue.Retry"] * 3
        assert len(project.runs("bare")) == len(project.runs("exc")) == 4

    def test_retry_is_outside_the_error_tree(self):
        assert issubclass(Retry, Exception) and not issubclass(Retry, LitequeueError)
        with pytest.raises(Retry):
            try:
                raise Retry(exc=ValueError("x"), countdown=1)
            except LitequeueError:
                pytest.fail("except LitequeueError caught a Retry")
        for cls in (MaxRetriesExceededError, TimeLimitExceeded, SoftTimeLimitExceeded,
                    WorkerLostError):
            assert issubclass(cls, LitequeueError)

    def test_task_max_retries_applies_when_queued_by_name(self, project, here):
        w = here(project)       # registers the names it serves: `call` finds the task
        # The CLI's app imports nothing: it queues the name without max_retries.
        done = lq_here("call", project.db, "tasks.flaky_max1", "byname", cwd=project.dir)
        assert done.returncode == 0, done.stderr
        r = project.app.AsyncResult(done.stdout.strip())
        w.work_until(r.ready, 20, "the task to end")
        assert isinstance(r.get(timeout=20, propagate=False), OSError)
        runs = (project.marks / "runs.byname").read_text().splitlines()
        assert (len(runs), r.retries) == (2, 1)           # max_retries=1: two runs

    def test_a_bad_retry_request_fails_the_task_instead_of_looping(self, project, here):
        w = here(project).start()
        r = project.delay("bad_retry", "bad")
        wait_until(lambda: r.ready() or len(project.runs("bad")) > 4, 30,
                   "the task to finish or loop")
        assert len(project.runs("bad")) <= 4, f"ran {len(project.runs('bad'))} times"
        assert r.state == FAILURE
        assert project.delay("add", 1, 2).get(timeout=20) == 3
        w.stop()                  # the child's loop ended without an error

    # -- time limits ------------------------------------------------------------------------

    @pytest.mark.worker
    def test_hard_time_limit_kills_and_replaces_the_child(self, project, workers):
        w = workers.start(project, concurrency=1)
        (old,) = w.children()
        r = project.delay("hard_limited", "hard")               # time_limit=0.5 on the task
        exc = r.get(timeout=20, propagate=False)
        assert isinstance(exc, TimeLimitExceeded), exc
        assert "hard time limit" in str(exc)
        assert (r.state, r.retries) == (FAILURE, 0)
        assert error_lines(r.errors) == [("litequeue.TimeLimitExceeded", str(exc))]
        ((_, pid),) = project.started("hard")
        assert pid == old["pid"] and not alive(pid)
        assert project.marked("hard.finished.*") == []
        (started_at, finished_at), = sql(project.db, "SELECT started_at, finished_at FROM "
                                         "tasks WHERE id = ?", r.id)
        print(f"hard limit 0.5 s: killed and recorded after {finished_at - started_at:.3f} s")
        assert 0.5 <= finished_at - started_at < 1.5
        # A new child took its place, and the worker keeps serving.
        new = wait_until(lambda: [c for c in w.live_children() if c["pid"] != pid], 10,
                         "a replacement child")
        assert project.delay("add", 2, 2).get(timeout=20) == 4
        assert project.row(project.delay("add", 1, 1).id)["pid"] in (None, new[0]["pid"])
        assert w.proc.poll() is None

    @pytest.mark.worker
    def test_worker_time_limit(self, project, workers):
        w = workers.start(project, "--time-limit", 0.5, concurrency=1)
        slow = project.delay("nap", "slow", 60)
        quick = project.delay("nap", "quick", 0.05)
        assert quick.get(timeout=20) == "quick"
        assert isinstance(slow.get(timeout=20, propagate=False), TimeLimitExceeded)
        assert slow.state == FAILURE and project.marked("slow.finished.*") == []
        ((_, pid),) = project.started("slow")
        wait_until(lambda: len(w.live_children()) == 1 and
                   pid not in [c["pid"] for c in w.live_children()], 10, "a replacement child")
        assert project.delay("add", 3, 3).get(timeout=20) == 6

    @pytest.mark.worker
    def test_time_limit_in_autoretry_for_retries(self, project, workers):
        """limited_retry: time_limit=0.4, autoretry_for=(TimeLimitExceeded,), max_retries=2."""
        w = workers.start(project, concurrency=1)
        recovers = project.delay("limited_retry", "recovers", 2)   # too slow twice, then fast
        assert recovers.get(timeout=30) == "recovers"
        assert (recovers.state, recovers.retries) == (SUCCESS, 2)
        assert [e["type"] for e in recovers.errors] == ["litequeue.TimeLimitExceeded"] * 2
        runs = project.runs("recovers")
        assert [run[0] for run in runs] == [0, 1, 2]
        assert len({run[2] for run in runs}) == 3                 # a new child each time
        never = project.delay("limited_retry", "never", 99)
        assert isinstance(never.get(timeout=30, propagate=False), TimeLimitExceeded)
        assert (never.state, never.retries, len(never.errors)) == (FAILURE, 2, 3)
        assert project.marked("*.finished.*") == ["recovers.finished." + str(runs[2][2])]
        assert len(w.live_children()) == 1 and w.proc.poll() is None

    @pytest.mark.worker
    def test_time_limit_retry_reads_retry_while_it_waits(self, project, workers):
        workers.start(project, concurrency=1)
        r = project.delay("limited_retry", "waits", 1)
        seen = set()

        def finished():
            seen.add(r.state)
            return r.ready()
        wait_until(finished, 30, "the task to finish", interval=0.005)
        assert RETRY in seen and r.state == SUCCESS, seen

    @pytest.mark.worker
    def test_time_limit_retry_runs_on_its_backoff_schedule(self, project, workers):
        workers.start(project, concurrency=1)
        r = project.delay("limited_retry", "schedule", 2)      # backoff 0.1 s, then 0.2 s
        assert r.get(timeout=30) == "schedule"
        runs, errors = project.runs("schedule"), r.errors
        lateness = [runs[n + 1][3] - errors[n]["time"] - 0.1 * 2 ** n for n in range(2)]
        print(f"retry lateness after a time-limit kill (s): {lateness}")
        # The child that ran it was killed: its replacement starts (imports, opens the
        # file) before it can claim the retry, which takes longer on a loaded machine.
        assert all(0 <= late < RETRY_LATENESS_MAX + CHILD_START_MAX for late in lateness), \
            lateness

    @pytest.mark.worker
    @pytest.mark.parametrize("where", ["task", "worker"])
    def test_soft_time_limit_lets_the_task_clean_up(self, project, workers, where):
        if where == "task":
            w = workers.start(project, concurrency=1)
            name, task = "soft", "soft_limited"                    # soft_time_limit=0.3
        else:
            w = workers.start(project, "--soft-time-limit", 0.3, "--time-limit", 10,
                              concurrency=1)
            name, task = "wsoft", "cleans_up"
        (child,) = w.children()
        started = time.monotonic()
        r = project.delay(task, name)
        assert r.get(timeout=20) == f"{name} cleaned up"
        assert 0.3 <= time.monotonic() - started < 5
        assert (r.state, r.retries, r.errors) == (SUCCESS, 0, [])
        assert project.marked(f"{name}.cleaned.*") == [f"{name}.cleaned.{child['pid']}"]
        assert project.marked(f"{name}.finished.*") == []
        # The same child ran it and is still serving: a soft limit kills nothing.
        assert w.live_children() == [child]
        assert project.delay("add", 1, 1).get(timeout=20) == 2
        if where == "worker":
            # A task that does not catch it fails with SoftTimeLimitExceeded.
            r = project.delay("nap", "uncaught", 60)
            assert isinstance(r.get(timeout=20, propagate=False), SoftTimeLimitExceeded)
            assert r.state == FAILURE and "soft time limit" in str(r.result)
            assert w.live_children() == [child]

    # -- revoke -----------------------------------------------------------------------------

    def test_revoked_queued_tasks_never_run(self, project, here):
        stamp = project.app.tasks["tasks.stamp"]
        # No worker running yet.
        queued = stamp.delay("queued")
        assert queued.revoke() is True
        assert (queued.state, queued.ready(), queued.result) == (REVOKED, True, None)
        with pytest.raises(TaskRevoked, match="revoked"):
            queued.get(timeout=5)
        assert queued.get(timeout=5, propagate=False) is None
        assert queued.revoke() is False                  # nothing left to revoke
        w = here(project)
        # A queue nobody serves yet.
        elsewhere = stamp.apply_async(["elsewhere"], queue="other")
        later = stamp.delay("later")                     # queued after `queued`: FIFO
        assert w.work() == 1                             # the default queue's worker
        assert later.get(timeout=20) > 0
        assert elsewhere.state == PENDING and elsewhere.revoke() is True
        probe = stamp.apply_async(["probe"], queue="other")
        assert w.work(queues=("other",)) == 1            # a worker of queue other
        assert probe.get(timeout=20) > 0
        assert [queued.state, elsewhere.state] == [REVOKED, REVOKED]
        assert project.stamps("queued") == project.stamps("elsewhere") == []
        assert project.row(queued.id)["attempt"] == project.row(elsewhere.id)["attempt"] == 0

    def test_revoked_scheduled_and_retrying_tasks_never_run(self, project, here):
        w = here(project)
        stamp = project.app.tasks["tasks.stamp"]
        scheduled = stamp.apply_async(["scheduled"], countdown=0.5)
        retrying = project.delay("retrier", "waiting", 5, 0.5)
        w.work()                                         # the first run only: none is due
        wait_until(lambda: retrying.state == RETRY, 10, "the retry to wait")
        assert scheduled.detailed_state == SCHEDULED
        assert scheduled.revoke() is True and retrying.revoke() is True
        (eta,), = sql(project.db, "SELECT max(eta) FROM tasks WHERE id IN (?, ?)",
                      scheduled.id, retrying.id)
        # A task due after both: once it has run, the scheduler went past their ETAs.
        after = stamp.apply_async(["after"], eta=dt.datetime.fromtimestamp(eta + 0.2, UTC))
        w.work_until(after.ready, 20, "the task due after both to run")
        assert after.get(timeout=20) >= eta
        assert [scheduled.state, retrying.state] == [REVOKED, REVOKED]
        assert project.stamps("scheduled") == []
        assert len(project.runs("waiting")) == 1         # the first run only
        for r in (scheduled, retrying):
            with pytest.raises(TaskRevoked):
                r.get(timeout=5)

    @pytest.mark.worker
    def test_revoke_terminate_kills_and_replaces_the_child(self, project, workers):
        w = workers.start(project, concurrency=2)
        r = project.delay("nap", "victim", 30)
        ((_, pid),) = wait_until(lambda: project.started("victim"), 10, "the task to start")
        (other,) = [c["pid"] for c in w.children() if c["pid"] != pid]
        # Without terminate a running task is left to finish, as in Celery.
        assert r.revoke() is False and r.state == STARTED
        revoked_at = time.monotonic()
        assert r.revoke(terminate=True) is True
        assert r.state == REVOKED
        wait_until(lambda: not alive(pid), 5, "the child to be killed")
        killed = time.monotonic() - revoked_at
        new = wait_until(lambda: [c["pid"] for c in w.live_children() if c["pid"] != other
                                  and c["pid"] != pid], 5, "a replacement child")
        replaced = time.monotonic() - revoked_at
        print(f"revoke(terminate=True): child killed after {killed * 1000:.0f} ms, "
              f"replaced after {replaced * 1000:.0f} ms")
        assert replaced < 1.5
        assert alive(other) and len(new) == 1
        # The process is dead, so the rest of the task never happens, and nobody reruns it.
        assert project.delay("add", 2, 3).get(timeout=20) == 5
        assert project.marked("victim.finished.*") == []
        assert project.started("victim") == [(1, pid)]
        row = project.row(r.id)
        assert (row["state"], row["result"], row["retries"]) == (REVOKED, None, 0)
        with pytest.raises(TaskRevoked):
            r.get(timeout=5)
        assert w.proc.poll() is None

    @staticmethod
    def _revoke_a_prefetched_task(project, terminate, nothing_killed):
        """A row a child claimed in a batch but has not started (it reads STARTED) is
        revoked and never runs; the task the child is running is left alone, and a plain
        revoke() of it is refused. Batches grow 1, 2, 4, 8, 16 rows while tasks are fast,
        so a slow task at position 20 shares a batch with the one after it. After each
        round, nothing_killed() checks the child."""
        record = project.app.tasks["tasks.record"]
        prefetched = 0
        for round_ in range(3):
            project.delay("block", f"gate{round_}")
            wait_until(lambda: project.started(f"gate{round_}"), 10, "the gate to start")
            before = [record.delay(n) for n in range(20)]
            mid = project.delay("block", f"mid{round_}")
            target = project.delay("stamp", f"target{round_}")
            after = [record.delay(n) for n in range(20, 30)]
            project.go(f"gate{round_}")
            wait_until(lambda: project.started(f"mid{round_}"), 10, "the slow task to start")
            prefetched += project.state(target.id) == STARTED
            assert mid.revoke() is False                       # running: left to finish
            assert target.revoke(terminate=terminate) is True
            project.go(f"mid{round_}")
            assert mid.get(timeout=20) == f"mid{round_}" and mid.state == SUCCESS
            assert [r.get(timeout=20) for r in before + after] == list(range(30))
            assert target.state == REVOKED and project.stamps(f"target{round_}") == []
            nothing_killed()
            if prefetched:
                break
        print(f"the target was prefetched in round {round_ + 1} of 3" if prefetched else
              "the target was never prefetched")
        assert prefetched, "the target was never in a prefetched batch"

    def test_revoke_of_a_prefetched_task_drops_it(self, project, here):
        """A plain revoke() of a prefetched row: the child drops it (see
        _revoke_a_prefetched_task), in the test process. No supervisor acts on a plain
        revoke; the child's loop runs on and ends without an error."""
        w = here(project).start()
        self._revoke_a_prefetched_task(project, False, lambda: None)
        w.stop()

    @pytest.mark.worker
    def test_revoke_of_a_prefetched_task_drops_it_and_kills_nothing(self, project, workers):
        """revoke(terminate=True) of a prefetched row drops it as a plain revoke does (see
        _revoke_a_prefetched_task), and the supervisor, which kills the child of a running
        row revoked with terminate, kills nothing."""
        w = workers.start(project, concurrency=1)
        (child,) = w.children()

        def nothing_killed():
            assert w.live_children() == [child]
        self._revoke_a_prefetched_task(project, True, nothing_killed)

    @pytest.mark.worker
    def test_revokes_racing_fast_tasks_never_let_a_revoked_task_run(self, project, workers):
        """While two children drain 3 000 fast tasks in batches, the producer revokes
        one of the last 30 it queued after every third delay(). Whatever the timing,
        revoke() returning True means the task never ran and reads REVOKED; False means it
        had begun or finished, and it ends SUCCESS, run once."""
        workers.start(project, concurrency=2)
        record = project.app.tasks["tasks.record"]
        rng = random.Random(4)
        results, outcome, seen_started = [], {}, 0
        for n in range(3000):
            results.append(record.delay(n))
            if n % 3 == 0 and n >= 30:
                r = results[n - rng.randrange(1, 30)]
                if r.id not in outcome:
                    before = project.state(r.id)
                    outcome[r.id] = r.revoke()
                    seen_started += before == STARTED and outcome[r.id]
        wait_until(lambda: all(r.ready() for r in results), 60, "every task to end")
        ledger = project.ledger()
        revoked = [task_id for task_id, done in outcome.items() if done]
        refused = [task_id for task_id, done in outcome.items() if not done]
        print(f"racing revokes: {len(revoked)} revoked ({seen_started} read STARTED just "
              f"before), {len(refused)} refused (running or finished)")
        assert revoked and refused, "the revokes never raced the children"
        assert [task_id for task_id in revoked if ledger[task_id]] == []
        assert {project.state(task_id) for task_id in revoked} == {REVOKED}
        others = [r.id for r in results if not outcome.get(r.id)]
        assert {project.state(task_id) for task_id in others} == {SUCCESS}
        assert {ledger[task_id] for task_id in others} == {1}

    # -- worker hygiene ---------------------------------------------------------------------

    @pytest.mark.worker
    def test_max_tasks_per_child_replaces_children_and_loses_nothing(self, project, workers):
        w = workers.start(project, "--max-tasks-per-child", 3, concurrency=2)
        first = {c["pid"] for c in w.children()}
        record = project.app.tasks["tasks.record"]
        results = [record.delay(n) for n in range(40)]
        assert [r.get(timeout=60) for r in results] == list(range(40))
        assert all(r.retries == 0 for r in results)
        assert set(project.ledger().values()) == {1}           # each ran exactly once
        per_child = {path.name: len(path.read_text().splitlines())
                     for path in project.marks.glob("ledger.*")}
        assert max(per_child.values()) <= 3, per_child
        assert len(per_child) >= 14, per_child
        wait_until(lambda: len(w.live_children()) == 2 and
                   not first & {c["pid"] for c in w.live_children()}, 15,
                   "two fresh children")
        assert "ran 3 tasks: replacing it" in w.log_text()
        assert project.delay("add", 1, 2).get(timeout=20) == 3
        assert w.proc.poll() is None

    @staticmethod
    def _fresh_child_kib(project, workers):
        """Resident KiB of a fresh child that has run one task (a worker without limits,
        stopped again)."""
        probe = workers.start(project, concurrency=1)
        assert project.delay("add", 0, 0).get(timeout=20) == 0
        (child,) = probe.children()
        with open(f"/proc/{child['pid']}/statm") as f:
            kib = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
        probe.signal(signal.SIGTERM)
        assert probe.wait(20) == 0
        return kib

    @pytest.mark.worker
    def test_max_memory_per_child_replaces_a_child_that_grew(self, project, workers):
        fresh = self._fresh_child_kib(project, workers)
        limit = fresh + 40 * 1024
        w = workers.start(project, "--max-memory-per-child", limit, concurrency=1)
        (child,) = w.children()
        small = [project.delay("add", n, n) for n in range(10)]
        assert [r.get(timeout=20) for r in small] == [2 * n for n in range(10)]
        assert {project.row(r.id)["pid"] for r in small} == {child["pid"]}
        assert project.delay("hog", 60).get(timeout=20) == child["pid"]
        wait_until(lambda: not alive(child["pid"]), 10, "the grown child to be replaced")
        after = project.delay("add", 1, 1)
        assert after.get(timeout=20) == 2
        assert project.row(after.id)["pid"] != child["pid"]
        print(f"fresh child {fresh} KiB; limit {limit} KiB; replaced after hog(60 MiB)")
        assert "KiB (limit" in w.log_text() and "is below a fresh child" not in w.log_text()
        assert w.proc.poll() is None

    @pytest.mark.worker
    def test_memory_limit_below_a_fresh_child_does_not_respawn_in_a_loop(self, project,
                                                                         workers):
        w = workers.start(project, "--max-memory-per-child", 1000, concurrency=1)
        (child,) = w.children()
        results = [project.delay("add", n, 1) for n in range(30)]
        assert [r.get(timeout=20) for r in results] == [n + 1 for n in range(30)]
        # One child ran them all; it was not replaced after each task.
        assert {project.row(r.id)["pid"] for r in results} == {child["pid"]}
        assert w.live_children() == [child]
        log = w.log_text()
        assert log.count("max memory per child 1000 KiB is below a fresh child's") == 1, log
        # The allowance it got instead (1.5 times its start size) still applies.
        assert project.delay("hog", 80).get(timeout=20) == child["pid"]
        wait_until(lambda: not alive(child["pid"]), 10, "the grown child to be replaced")
        assert project.delay("add", 2, 2).get(timeout=20) == 4
        assert w.proc.poll() is None

    # -- bounded storage --------------------------------------------------------------------

    @pytest.mark.worker
    @pytest.mark.slow
    @pytest.mark.timeout(300)
    def test_storage_stays_bounded_over_200_000_tasks(self, project, workers, request):
        """10 waves of 20 000 tasks, result_expires=3 s, one worker with 2 children: the
        supervisor prunes and vacuums as it goes, so the file and the -wal stay small.

        Each wave is inserted with apsw in one transaction (the columns and msgpack
        envelope delay() writes), then one delay() rings the workers: delay() commits
        one row at a time, about 2 800/s while two children drain here, which would
        spend some 70 s on enqueueing alone. The enqueue path has its own tests."""
        bound = 20 * 1024 * 1024                    # for the file and for the -wal alike
        waves, per_wave, expires = 10, 20_000, 3
        w = workers.start(project, concurrency=2, loglevel="WARNING",
                          settings={"result_expires": expires})
        add = project.app.tasks["tasks.add"]
        wal = project.db + "-wal"
        peak = {"db": 0, "wal": 0}
        peak_lock = threading.Lock()

        def sizes():
            now = {"db": os.path.getsize(project.db),
                   "wal": os.path.getsize(wal) if os.path.exists(wal) else 0}
            with peak_lock:
                for key in peak:
                    peak[key] = max(peak[key], now[key])
            return now

        # The -wal can grow by 100 MiB/s here: look at it every 2 ms, not only at each poll.
        sampling = threading.Event()

        def sample():
            while not sampling.wait(0.002):
                with contextlib.suppress(FileNotFoundError):
                    sizes()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        request.addfinalizer(lambda: (sampling.set(), sampler.join()))

        def unfinished():
            return sql(project.db, "SELECT (SELECT count(*) FROM tasks WHERE state = 'PENDING')"
                       " + (SELECT count(*) FROM tasks WHERE state = 'STARTED')")[0][0]

        started = time.monotonic()
        first_wave = []
        for wave in range(waves):
            # Pacing, not waiting for a state: a wave every `expires` seconds or so, so that
            # finished rows of about two waves are retained at any time.
            wait_until(lambda: time.monotonic() >= started + wave * (expires + 0.5),
                       expires + 1, "the next wave's start")
            conn = apsw.Connection(project.db, flags=apsw.SQLITE_OPEN_READWRITE)
            try:
                conn.set_busy_timeout(30_000)
                rows = [(litequeue._new_id(), "tasks.add",
                         litequeue._pack_envelope("tasks.add", (n, wave), {}), time.time())
                        for n in range(per_wave - 1)]
                with conn:
                    conn.executemany("INSERT INTO tasks (id, name, payload, created_at) "
                                     "VALUES (?, ?, ?, ?)", rows)
            finally:
                conn.close()
            last = add.delay(per_wave - 1, wave)                      # rings the workers
            if wave == 0:
                first_wave = [row[0] for row in rows[:100]] + [last.id]
            assert last.get(timeout=60) == per_wave - 1 + wave
            wait_until(lambda: unfinished() == 0, 60, "the wave to be done")
            print(f"wave {wave}: done at {time.monotonic() - started:.1f} s; now {sizes()}")
        drained = time.monotonic() - started
        failed = sql(project.db, "SELECT count(*) FROM tasks WHERE state != 'SUCCESS'")[0][0]
        assert failed == 0

        def left():
            return sql(project.db, "SELECT count(*) FROM tasks")[0][0]
        wait_until(lambda: left() == 0, 30, lambda: f"pruning to catch up ({left()} rows left)")
        pruned = time.monotonic() - started
        # The vacuum that follows the last prune, and a checkpoint after it.
        final = wait_until(lambda: (lambda s: s["db"] < 2 * 1024 * 1024 and s)(sizes()), 10,
                           lambda: f"the file to shrink ({sizes()})")
        mib = 1024 * 1024
        print(f"storage: {waves * per_wave} tasks in {drained:.1f} s, all pruned after "
              f"{pruned:.1f} s; peak file {peak['db'] / mib:.2f} MiB, peak -wal "
              f"{peak['wal'] / mib:.2f} MiB; final file {final['db'] / mib:.2f} MiB, "
              f"-wal {final['wal'] / mib:.2f} MiB (bound {bound / mib:.0f} MiB)")
        assert peak["db"] < bound, peak
        assert peak["wal"] < bound, peak
        assert sql(project.db, "PRAGMA integrity_check") == [("ok",)]
        for task_id in first_wave:
            assert project.app.AsyncResult(task_id).detailed_state == UNKNOWN
        with pytest.raises(TaskNotFound):
            project.app.AsyncResult(first_wave[-1]).get(timeout=5)
        assert w.proc.poll() is None and len(w.live_children()) == 2
