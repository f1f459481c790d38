"""Rate limits and paused queues another client wrote: a value of the wrong type or out of
range in any column of rate_limits or paused (SQLite stores what it is given). None may
stop a task name, stop a worker, crash its children or reach a user as a traceback: the
supervisor's quarantine repairs the row within seconds. Real workers, real files, a
foreign connection writing beside them; what a worker's child and the commands make of the
rows is also checked in this process (no worker process)."""

import math
import signal
import time

import apsw
import pytest

import litequeue
from litequeue import PENDING, SUCCESS, LiteQueue

from .helpers import Dashboard, foreign, lq, lq_here, sql, task_source, wait_until

pytestmark = pytest.mark.timeout(180)

LIMITS = task_source("limits.py")
KEY = "limits.limited"

# (table, column, SQL value) written by a foreign client after the worker registered.
CASES = {
    "next_start blob": ("rate_limits", "next_start", "X'01'"),
    "next_start text": ("rate_limits", "next_start", "'soon'"),
    "next_start 1e300": ("rate_limits", "next_start", "1e300"),
    "next_start +Inf": ("rate_limits", "next_start", "9e999"),
    "next_start -5": ("rate_limits", "next_start", "-5"),
    "interval text": ("rate_limits", "interval", "'x'"),
    "interval 0": ("rate_limits", "interval", "0"),
    "interval -1": ("rate_limits", "interval", "-1"),
    "interval +Inf": ("rate_limits", "interval", "9e999"),
    "rate blob": ("rate_limits", "rate", "X'00'"),
    "rate not UTF-8": ("rate_limits", "rate", "CAST(X'61ff62' AS TEXT)"),
    "rate and interval": ("rate_limits", "rate = 'x', interval", "'y'"),
    "key blob": ("rate_limits", "key", "X'01'"),
    "rate_key of no limit": ("tasks", "rate_key", "'nothing'"),
    "paused since text": ("paused", "since", "'x'"),
    "paused since blob": ("paused", "since", "X'01'"),
}


def plant(project, table, column, value):
    if table == "rate_limits":
        foreign(project.db, f"UPDATE rate_limits SET {column} = {value} WHERE key = ?", KEY)
    elif table == "paused":        # the queue the worker serves, paused at a time not a time
        foreign(project.db, f"INSERT INTO paused (queue, since) VALUES ('default', {value})")
    else:                          # limited rows pointing at a limit that does not exist
        foreign(project.db, f"UPDATE tasks SET {column} = {value} WHERE name = ?", KEY)


def queue_beside_the_bad_row(project, tasks, table, column, value):
    """Plant the bad value and queue 5 rate-limited and 5 plain tasks around it (a tasks
    row's value needs the rows first). Returns (limited, plain) results."""
    if table == "tasks":
        limited = [tasks["limited"].delay(n) for n in range(5)]
        plant(project, table, column, value)
    else:
        plant(project, table, column, value)
        limited = [tasks["limited"].delay(n) for n in range(5)]
    return limited, [tasks["plain"].delay(n) for n in range(5)]


def producer(project):
    app = LiteQueue(project.db)
    tasks = {}
    for name, options in (("limited", {"rate_limit": "20/s"}), ("plain", {})):
        def stand_in(n):
            raise AssertionError("runs only in a worker")
        stand_in.__module__, stand_in.__qualname__ = "limits", name
        stand_in.__name__ = name
        tasks[name] = app.task(stand_in, **options)
    return tasks


def no_traceback(project):
    for command in (["status"], ["health", "--max-wait", "3600"]):
        done = lq(*command, project.db, cwd=project.dir)
        out = done.stdout + done.stderr
        assert "Traceback" not in out, (command, out)
        assert done.returncode in (0, 2), (command, done.returncode, out)


def limits_repaired(db):
    """Every rate limit holds values of the type and range litequeue writes."""
    return all(isinstance(key, str) and isinstance(rate, str)
               and isinstance(interval, float) and 0 < interval < math.inf
               and isinstance(next_start, (int, float)) and next_start < 1e11
               for key, rate, interval, next_start in sql(db, "SELECT * FROM rate_limits"))


@pytest.mark.worker
@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_rate_limit_or_pause_never_stops_a_task_name(project, workers, case):
    table, column, value = CASES[case]
    project.write_module("limits", LIMITS)
    worker = workers.start(project, concurrency=2, app=("limits",))
    children = {c["pid"] for c in worker.live_children()}
    tasks = producer(project)
    # The producer registered both names (once per process) and they run.
    assert [tasks[name].delay(-1).get(timeout=20) for name in tasks] == [-1, -1]
    # The supervisor (the only process that repairs) is stopped while the bad value is
    # read: what the children, the commands and the dashboard meet is the bad row.
    worker.signal(signal.SIGSTOP)
    try:
        limited, plain = queue_beside_the_bad_row(project, tasks, table, column, value)
        no_traceback(project)
        d = Dashboard(project)
        try:
            for result in (limited[-1], plain[-1]):
                code, _, text = d.request(f"/data/task/{result.id}")
                assert code == 200, (code, text)
            code, _, text = d.request("/data/queues")
            assert code == 200, (code, text)
        finally:
            d.stop()
    finally:
        worker.signal(signal.SIGCONT)
    if table == "paused":
        # The pause stays (it was on purpose; only its time was not one), repaired.
        wait_until(lambda: sql(project.db, "SELECT typeof(since) FROM paused")
                   in ([("real",)], [("integer",)]), 10, "paused.since repaired")
        assert "resumed" in lq("resume", project.db, "default", cwd=project.dir).stdout
    assert [r.get(timeout=20) for r in limited] == list(range(5))
    assert [r.get(timeout=20) for r in plain] == list(range(5))
    assert all(r.state == SUCCESS for r in limited + plain)
    # The row is repaired within seconds: every value of the type and range litequeue
    # writes (some bad values do not hold the tasks, which may end first).
    wait_until(lambda: limits_repaired(project.db), 10,
               lambda: sql(project.db, "SELECT * FROM rate_limits"))
    no_traceback(project)
    # No child died, none was replaced, and the supervisor still runs.
    assert worker.proc.poll() is None
    assert {c["pid"] for c in worker.live_children()} == children
    assert "ended with" not in worker.log_text()


def no_traceback_here(project):
    """status and health, run in this process, answer without a traceback; health fails
    nothing but what no live worker means (none runs here)."""
    done = lq_here("status", project.db, cwd=project.dir)
    assert "Traceback" not in done.stdout + done.stderr and done.returncode == 0, done
    done = lq_here("health", project.db, "--max-wait", "3600", cwd=project.dir)
    out = done.stdout + done.stderr
    failed = {line.split(":")[0] for line in out.splitlines() if line.startswith("FAIL")}
    assert "Traceback" not in out and done.returncode == 1, out
    assert "FAIL workers" in failed, out
    assert failed <= {"FAIL workers", "FAIL queues served"}, out


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_rate_limit_or_pause_holds_no_other_name_and_is_repaired(project, here, case):
    """The same values met by a worker's child and the commands in this process, with no
    supervisor to repair them: no error escapes the child's steps, no command answers with
    a traceback and the name the value is not about runs (unless its queue is paused).
    Once the quarantine step a supervisor runs every 2 s (called here) has repaired the
    row, every task runs, and a wrong interval is recomputed from the declared rate (20/s:
    0.05 s). (That no process dies of it, and the dashboard's answers: the test above.)"""
    table, column, value = CASES[case]
    project.write_module("limits", LIMITS)
    w = here(project, ("limits",))
    tasks = {name: getattr(w.loaded[0], name) for name in ("limited", "plain")}
    first = [tasks[name].delay(-1) for name in tasks]
    assert w.work() == 2
    assert [r.get(timeout=5) for r in first] == [-1, -1]
    limited, plain = queue_beside_the_bad_row(project, tasks, table, column, value)
    no_traceback_here(project)
    w.work()
    if table == "paused":
        assert [r.state for r in limited + plain] == [PENDING] * 10
    else:
        assert [r.get(timeout=5) for r in plain] == list(range(5))
    storage = litequeue._Storage(project.db)
    try:
        storage.quarantine(time.time())
    finally:
        storage.close()
    assert limits_repaired(project.db), sql(project.db, "SELECT * FROM rate_limits")
    if column == "interval":
        assert sql(project.db, "SELECT interval FROM rate_limits") == [(0.05,)]
    if table == "paused":
        # The pause stays (it was on purpose; only its time was not one), repaired.
        assert sql(project.db, "SELECT typeof(since) FROM paused") in ([("real",)],
                                                                       [("integer",)])
        assert w.work() == 0
        assert "resumed" in lq_here("resume", project.db, "default", cwd=project.dir).stdout
    w.work_until(lambda: all(r.ready() for r in limited + plain), 10, "every task to run")
    assert [r.get(timeout=1) for r in limited] == list(range(5))
    assert [r.get(timeout=1) for r in plain] == list(range(5))
    assert all(r.state == SUCCESS for r in limited + plain)
    no_traceback_here(project)


@pytest.mark.worker
def test_a_wrong_interval_is_recomputed_from_the_declared_rate(project, workers):
    """interval is derived from the declared rate: a wrong one is recomputed (not
    dropped), so the name stays limited (20/s: 50 ms between starts)."""
    project.write_module("limits", LIMITS)
    worker = workers.start(project, concurrency=2, app=("limits",))
    foreign(project.db, "UPDATE rate_limits SET interval = 0 WHERE key = ?", KEY)
    wait_until(lambda: sql(project.db, "SELECT interval FROM rate_limits WHERE key = ?",
                           KEY) == [(0.05,)], 10, "interval recomputed from '20/s'")
    assert worker.proc.poll() is None


def test_nan_cannot_be_written(project):
    """SQLite stores NaN as NULL, which NOT NULL refuses: no NaN case to repair."""
    producer(project)["limited"].delay(1)       # registers the rate limit
    assert sql(project.db, "SELECT key FROM rate_limits") == [(KEY,)]
    for table, column in (("rate_limits", "next_start"), ("rate_limits", "interval"),
                          ("paused", "since")):
        with pytest.raises(apsw.ConstraintError):
            if table == "paused":
                foreign(project.db, "INSERT INTO paused (queue, since) VALUES ('q', ?)",
                        math.nan)
            else:
                foreign(project.db, f"UPDATE rate_limits SET {column} = ?", math.nan)
