"""Rows another client wrote: text that is not UTF-8 in any column a worker or a command
reads, and rows of the wrong type or shape (TestBadRows: worker ids that are paths, text
where a time belongs, schedules that cannot fire, results that crash a process). Each
must end FAILURE (or be set aside) saying why, and never stop a worker, crash its children
or reach a user as a traceback. Real workers, real files, a foreign connection writing
beside them; how the rows end is also checked with a worker's child in this process."""

import os
import secrets
import time
import uuid
from pathlib import Path

import apsw
import msgpack
import pytest

import litequeue
from litequeue import FAILURE, SCHEDULED, SUCCESS

from .helpers import (
    assert_canary, files_in, foreign, insert_raw, insert_schedule, lq, lq_here, make_victim, pack,
    sql, task_source, wait_until,
)

pytestmark = pytest.mark.timeout(180)

BAD = "CAST(X'61ff62' AS TEXT)"          # 'a', a byte that is never UTF-8, 'b'


def queued_row(project):
    """A PENDING add row, its seq and id."""
    result = project.delay("add", 1, 2)
    (seq,), = sql(project.db, "SELECT seq FROM tasks WHERE id = ?", result.id)
    return seq, result.id


def task_column(column):
    def plant(project):
        seq, _ = queued_row(project)
        foreign(project.db, f"UPDATE tasks SET {column} = {BAD} WHERE seq = ?", seq)
        return seq
    return plant


def started_row_worker(project):
    seq, _ = queued_row(project)
    foreign(project.db, f"UPDATE tasks SET state = 'STARTED', worker = {BAD} WHERE seq = ?",
            seq)
    return seq


def worker_id(project):
    project.delay("add", 0, 0)       # the file exists
    foreign(project.db, f"INSERT INTO workers (id, parent, hostname, pid, queues, started_at) "
            f"VALUES ({BAD}, NULL, 'h', 1, 'default', 0)")


def schedule_name(project):
    project.delay("add", 0, 0)
    payload = litequeue._pack_envelope("tasks.add", [1, 1], {})
    foreign(project.db, "INSERT INTO schedules (name, task, module, schedule, tz, payload, "
            f"queue, next_fire, updated_at) VALUES ({BAD}, 'tasks.add', 'tasks', "
            "'every:3600', 'UTC', ?, 'default', ?, 0)", payload, time.time() + 3600)


def registry_module(project):
    project.delay("add", 0, 0)       # registers tasks.add from module tasks
    foreign(project.db, f"UPDATE registry SET module = {BAD} WHERE name = 'tasks.add'")


def paused_queue(project):
    project.delay("add", 0, 0)
    foreign(project.db, f"INSERT INTO paused VALUES ({BAD}, 0)")


def rate_limit_key(project):
    project.delay("add", 0, 0)
    foreign(project.db, f"INSERT INTO rate_limits (key, rate, interval) VALUES ({BAD}, '1/s', 1)")


CASES = {
    **{f"tasks.{c}": task_column(c)
       for c in ("payload", "id", "name", "parent_id", "waits", "queue", "state")},
    "tasks.worker (STARTED)": started_row_worker,
    "workers.id": worker_id,
    "schedules.name": schedule_name,
    "registry.module": registry_module,
    "paused.queue": paused_queue,
    "rate_limits.key": rate_limit_key,
}


@pytest.mark.worker
@pytest.mark.parametrize("case", list(CASES))
def test_text_that_is_not_utf8_never_stops_a_worker(project, workers, case):
    seq = CASES[case](project)
    worker = workers.start(project, concurrency=2)
    children = {c["pid"] for c in worker.live_children()}
    # A canary queued after the bad row runs within seconds.
    assert project.delay("add", 20, 22).get(timeout=20) == 42
    for command in (["status"], ["health", "--max-wait", "3600"], ["tasks"],
                    ["inspect", "active"]):
        done = lq(command[0], project.db, *command[1:], cwd=project.dir)
        out = done.stdout + done.stderr
        assert "Traceback" not in out and "UnicodeDecodeError" not in out, (command, out)
        # 0; health: 1 if a check fails (a schedule whose name held the text is disabled).
        assert done.returncode in ((0, 1) if command[0] == "health" else (0,)), \
            (command, done.returncode, out)
    if seq is not None:
        # The bad row ended FAILURE saying why (a row in no queue a worker serves, or in
        # no state, ended when a command read it).
        def ended():
            rows = sql(project.db, "SELECT state FROM tasks WHERE seq = ?", seq)
            return rows and rows[0][0] in (FAILURE, SUCCESS) and rows[0][0]
        state = wait_until(ended, 20, f"the row with bad text in {case} to end")
        (result,), = sql(project.db, "SELECT result FROM tasks WHERE seq = ?", seq)
        if state == FAILURE:
            assert b"not UTF-8" in result, result
    # No child died, none was replaced, and the supervisor still runs.
    assert worker.proc.poll() is None
    assert {c["pid"] for c in worker.live_children()} == children
    assert "ended with" not in worker.log_text()


@pytest.mark.parametrize("case", list(CASES))
def test_text_that_is_not_utf8_ends_its_row_saying_why(project, here, case):
    """The same rows met by a worker's child and the commands in this process: no error
    escapes the child's steps, the bad row is never run, a task row holding the text ends
    FAILURE naming its column, a task queued after it runs and no command answers with a
    traceback. (That no process dies of it: the test above.)"""
    seq = CASES[case](project)
    w = here(project)
    # Only the add(0, 0) the other cases queue first runs; a task row with the text never.
    assert w.work() == (0 if seq is not None else 1)
    canary = project.delay("add", 20, 22)
    assert w.work() == 1
    assert canary.get(timeout=5) == 42
    for command in (["status"], ["health", "--max-wait", "3600"], ["tasks"],
                    ["inspect", "active"]):
        done = lq_here(command[0], project.db, *command[1:], cwd=project.dir)
        out = done.stdout + done.stderr
        assert "Traceback" not in out and "UnicodeDecodeError" not in out, (command, out)
        if command[0] == "health":
            # No worker runs here; a schedule whose name held the text is disabled.
            failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
            expected = ["FAIL workers: no live worker supervisor"]
            if case == "schedules.name":
                expected.append("FAIL schedules: disabled: a\\xffb")
            assert (done.returncode, failed) == (1, expected), out
        else:
            assert done.returncode == 0, (command, done.returncode, out)
    if seq is not None:
        # A row in no state a worker claims is ended by the first command that read it.
        (state, result), = sql(project.db, "SELECT state, result FROM tasks WHERE seq = ?",
                               seq)
        column = case.split(".")[1].split()[0]
        assert state == FAILURE, (state, result)
        assert f"its {column} column held text that is not UTF-8".encode() in result, result


def test_a_read_only_reader_gets_one_clear_error(project, tmp_path):
    """A user who may read the file but not write it cannot repair it: it gets BadText,
    a LitequeueError that says what to do, not a decode error."""
    seq, task_id = queued_row(project)
    foreign(project.db, f"UPDATE tasks SET name = {BAD} WHERE seq = ?", seq)
    storage = litequeue._Storage(project.db, create=False)
    storage.conn.close()
    storage.conn = apsw.Connection(project.db, flags=apsw.SQLITE_OPEN_READONLY)
    storage.conn.create_scalar_function("lq_bad_text", litequeue._bad_utf8, 1)
    storage.conn.create_scalar_function("lq_fix_text", litequeue._fixed_utf8, 2)
    with pytest.raises(litequeue.BadText, match="owner"):
        storage.list_tasks(None, None, None, 10)


@pytest.mark.parametrize("lie", ["9223372036854775807", "-5", "'many'", "X'00ff'", "9e999"])
def test_a_counter_that_lies_is_read_as_zero_and_counted_on_from_zero(project, lie):
    """A stats counter another client spoiled, in the minute a worker is adding to: the
    worker's next addition succeeds (counting on from zero) and every sum that reads it
    (throughput, per task, per queue, /metrics) answers instead of overflowing."""
    project.delay("add", 0, 0)       # the file exists
    app, minute = project.app, int(time.time() // 60)
    storage = app._storage()
    counts = [0] * len(litequeue._STATS_COUNTS)
    storage.add_stats([(minute, "tasks.add", "default", 3, *counts[1:])])
    foreign(project.db, f"INSERT INTO stats (minute, name, queue, succeeded) "
            f"VALUES (?, 'fuzz.liar', 'default', {lie})", minute)
    foreign(project.db, f"UPDATE stats SET failed = {lie} WHERE name = 'tasks.add'")
    storage.add_stats([(minute, "tasks.add", "default", 1, 2, *counts[2:])])
    assert app.admin.throughput(2)[-1][1:3] == (4, 2)
    by_name = {t["name"]: t for t in app.admin.task_stats()}
    assert (by_name["tasks.add"]["succeeded"], by_name["tasks.add"]["failed"]) == (4, 2)
    assert by_name["fuzz.liar"]["succeeded"] == 0
    assert "litequeue_" in litequeue._metrics_text(app)


def insert_worker(db, worker_id, pid=999999, parent=None):
    """A workers row as a foreign writer (or an attacker with write access) would put
    there. pid_max is far below 999999 here, so the pid is dead."""
    sql(db, "INSERT INTO workers (id, parent, hostname, pid, queues, concurrency, started_at) "
            "VALUES (?, ?, 'x', ?, 'default', 1, 0)", worker_id, parent, pid)


def insert_started(db, worker_id, name="tasks.add", args=(20, 22)):
    """A STARTED row claimed by worker_id. Returns its id."""
    task_id = str(uuid.uuid4())
    sql(db, "INSERT INTO tasks (id, name, payload, state, attempt, worker, pid, started_at) "
            "VALUES (?, ?, ?, 'STARTED', 1, ?, 999999, 0)",
        task_id, name, pack({"args": list(args)}), worker_id)
    return task_id


def prove_rescue_passes(project, w, rounds=2):
    """Wait until the worker has run complete rescue passes over the workers table.

    Each round registers a dead worker with a well-formed id (12 hex digits, no lock
    file) holding a STARTED task, and waits until that task was requeued and SUCCEEDED.
    A pass handles every row of the table in one go, so once the task of round 2 has
    been rescued, the pass that rescued round 1 has finished: every row present before
    round 1 has been through a whole pass."""
    for _ in range(rounds):
        dead = secrets.token_hex(6)
        insert_worker(project.db, dead)
        task_id = insert_started(project.db, dead)
        wait_until(lambda: project.state(task_id) == SUCCESS, 20,
                   lambda: f"the task of dead worker {dead} rescued and run "
                           f"(state {project.state(task_id)})\nlog:\n{w.log_text()}")
    assert w.proc.poll() is None, w.log_text()


def error_text(row_result, traceback):
    """What a user reads about a failure: the stored error map and the traceback."""
    text = ""
    if isinstance(row_result, bytes):
        try:
            text += repr(msgpack.unpackb(row_result, raw=False, strict_map_key=False))
        except Exception:
            text += repr(row_result)
    return text + "\n" + (traceback or "")


def lq_ok(*args, cwd):
    done = lq(*args, cwd=cwd)
    assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done


BAD_RESULT_MODULE = task_source("badresult.py")


BAD_SCHEDULES = {
    "nan-next-fire": {"next_fire": "NaN"},
    "garbage-zone": {"tz": "Garbage/Zone"},
    "bad-cron": {"schedule": "cron:99 * * * *"},
    "every-zero": {"schedule": "every:0"},
    "year-9999": {"last_fire": 253402300799.0},
    # An interval so short that walking its missed fires would take the scheduler (and
    # the write lock it holds) for ever, with nothing raised.
    "every-10us": {"schedule": "every:0.00001", "last_fire": time.time() - 3600},
}


def assert_eta_promotion_works(project, w):
    """The supervisor still promotes ETA tasks, and the worker is alive."""
    r = project.app.tasks["tasks.add"].apply_async((3, 4), countdown=0.5)
    assert r.get(timeout=10) == 7
    assert w.proc.poll() is None, w.log_text()
    assert len(w.live_children()) == w.concurrency


def assert_schedules_disabled(project, names):
    def shown():
        done = lq("schedules", project.db, cwd=project.dir)
        if done.returncode == 0 and "Traceback" not in done.stderr and \
                done.stdout.count("DISABLED") >= len(names):
            return done
        return None
    done = wait_until(shown, 15, lambda: "`litequeue schedules` to show DISABLED for "
                      f"{names}:\n{lq('schedules', project.db, cwd=project.dir)}")
    for name in names:
        assert name in done.stdout, done.stdout
    status = lq_ok("status", project.db, cwd=project.dir)
    assert "DISABLED" in status.stdout, status.stdout


def plant_crashing_row(project, case):
    """A row of CRASHING_ROWS; returns its id and the word its error must hold."""
    if case == "text_expires":
        key = str(uuid.uuid4())
        sql(project.db, "INSERT INTO tasks (id, name, payload, expires) "
                        "VALUES (?, 'tasks.add', ?, 'soon')", key, pack({"args": [1, 2]}))
        return key, "expires"
    if case == "blob_id":
        key = b"\xffblob-id\x00"
        sql(project.db, "INSERT INTO tasks (id, name, payload) VALUES (?, 'tasks.add', ?)",
            key, pack({"args": [1, 2]}))
        return key, "id"
    (key,) = insert_raw(project.db, [("badresult.sneaky", pack({}))])
    return key, "result"


# Rows that once crashed the process that claimed them.
CRASHING_ROWS = ["text_expires", "blob_id", "unencodable_result"]


@pytest.mark.worker
class TestBadRows:

    def test_worker_ids_that_are_paths_never_delete_files(self, project, workers, tmp_path):
        victim = tmp_path / "victim"
        before = make_victim(victim, names=("poetry.lock", "dotdot.lock"))
        w = workers.start(project, concurrency=1)
        # The lock file of worker ID is <side dir>/locks/ID.lock.
        insert_worker(project.db, str(victim / "poetry"))
        side_locks = Path(project.db + "-lq") / "locks"
        dotdot = os.path.relpath(victim / "dotdot", side_locks)
        assert dotdot.startswith("..")
        insert_worker(project.db, dotdot)
        prove_rescue_passes(project, w)
        assert files_in(victim) == before
        assert_canary(project, w)

    @pytest.mark.parametrize("worker_id", ["a\x00b", "z" * 5000, "../" * 40 + "nowhere",
                                           "/", ""], ids=["nul", "long", "dotdot", "slash",
                                                          "empty"])
    def test_strange_worker_ids_do_not_crash_the_rescue(self, project, workers, worker_id):
        w = workers.start(project, concurrency=1)
        insert_worker(project.db, worker_id)
        prove_rescue_passes(project, w)
        assert_canary(project, w)

    def test_scheduled_task_with_a_text_eta_fails_and_the_supervisor_goes_on(self, project,
                                                                            workers):
        w = workers.start(project, concurrency=1)
        task_id = str(uuid.uuid4())
        sql(project.db, "INSERT INTO tasks (id, name, payload, state, eta) "
                        "VALUES (?, 'tasks.add', ?, 'SCHEDULED', 'soon')",
            task_id, pack({"args": [1, 2]}))
        wait_until(lambda: project.state(task_id) == FAILURE, 15,
                   lambda: f"the task with eta 'soon' to fail (state {project.state(task_id)})"
                           f"\n{w.log_text()}")
        row = project.row(task_id)
        assert "eta" in error_text(row["result"], row["traceback"]).lower(), row
        assert_eta_promotion_works(project, w)

    # Each bad schedule alone is disabled while the scheduler goes on: in process, in
    # test_supervisor_steps.py (the scheduler's own step); here, all of them at once
    # beside a running supervisor.
    def test_all_bad_rows_at_once(self, project, workers):
        w = workers.start(project, concurrency=1)
        for name, overrides in BAD_SCHEDULES.items():
            insert_schedule(project.db, name, **overrides)
        good_payload = pack({"args": [100, 1]})
        insert_schedule(project.db, "good", schedule="every:1.0", next_fire=time.time() + 0.5,
                        payload=good_payload)
        task_id = str(uuid.uuid4())
        sql(project.db, "INSERT INTO tasks (id, name, payload, state, eta) "
                        "VALUES (?, 'tasks.add', ?, 'SCHEDULED', 'soon')",
            task_id, pack({"args": [1, 2]}))
        insert_worker(project.db, "nul\x00id")
        wait_until(lambda: project.state(task_id) == FAILURE, 15,
                   lambda: f"the task with eta 'soon' to fail\n{w.log_text()}")
        assert_eta_promotion_works(project, w)
        prove_rescue_passes(project, w)
        assert_schedules_disabled(project, list(BAD_SCHEDULES))
        # The valid schedule keeps firing (each fire of tasks.add(1, 1) succeeds).
        fired = lambda: sql(project.db, "SELECT count(*) FROM tasks WHERE payload = ? "
                                        "AND state = ?", good_payload, SUCCESS)[0][0]
        first = fired()
        wait_until(lambda: fired() > first, 10, "the valid schedule to fire again")
        assert_eta_promotion_works(project, w)

    @pytest.mark.parametrize("case", CRASHING_ROWS)
    def test_row_that_crashes_its_process_ends_failure_without_a_loop(self, project, workers,
                                                                     case):
        if case == "unencodable_result":
            project.write_module("badresult", BAD_RESULT_MODULE)
            w = workers.start(project, concurrency=1, app=("tasks", "badresult"))
        else:
            w = workers.start(project, concurrency=1)
        key, why = plant_crashing_row(project, case)

        def row():
            rows = sql(project.db, "SELECT state, attempt, result, traceback FROM tasks "
                                   "WHERE id = ?", key)
            return rows[0]
        wait_until(lambda: row()[0] == FAILURE, 30,
                   lambda: f"the {case} row to end FAILURE (state, attempt = {row()[:2]})"
                           f"\n{w.log_text()[-3000:]}")
        state, attempt, result, tb = row()
        assert attempt <= 4, (attempt, w.log_text()[-3000:])
        text = error_text(result, tb)
        assert why in text.lower(), text
        assert_canary(project, w)
        assert row()[:2] == (FAILURE, attempt)        # not run again since


@pytest.mark.parametrize("case", CRASHING_ROWS)
def test_row_that_crashes_its_process_ends_failure_at_its_first_attempt(project, here, case):
    """The same rows met by a worker's child in this process: no error escapes its steps,
    the row ends FAILURE at its first attempt saying why, a task queued after it runs and
    the row is not run again. (That no process dies of it: TestBadRows.)"""
    project.write_module("badresult", BAD_RESULT_MODULE)
    w = here(project, ("tasks", "badresult"))
    project.delay("add", 0, 0)       # the file exists
    key, why = plant_crashing_row(project, case)

    def row():
        (found,) = sql(project.db, "SELECT state, attempt, result, traceback FROM tasks "
                                   "WHERE id = ?", key)
        return found
    w.work()
    state, attempt, result, tb = row()
    assert (state, attempt) == (FAILURE, 1), row()
    text = error_text(result, tb)
    assert why in text.lower(), text
    canary = project.delay("add", 40, 2)
    assert w.work() == 1
    assert canary.get(timeout=5) == 42
    assert w.work() == 0
    assert row() == (state, attempt, result, tb)        # not run again since


def test_scheduled_task_with_a_text_eta_ends_failure_at_the_quarantine(project, here):
    """The row of test_scheduled_task_with_a_text_eta_fails_and_the_supervisor_goes_on,
    met by a worker's child (which leaves it be) and then by the quarantine step a
    supervisor runs every 2 s, called here: it ends FAILURE saying its eta is not a time,
    and a task with a countdown still runs."""
    w = here(project)
    project.delay("add", 0, 0)       # the file exists
    task_id = str(uuid.uuid4())
    sql(project.db, "INSERT INTO tasks (id, name, payload, state, eta) "
                    "VALUES (?, 'tasks.add', ?, 'SCHEDULED', 'soon')",
        task_id, pack({"args": [1, 2]}))
    assert w.work() == 1                        # add(0, 0)
    assert project.state(task_id) == SCHEDULED
    storage = litequeue._Storage(project.db)
    try:
        failed, disabled, repaired, _ = storage.quarantine(time.time())
    finally:
        storage.close()
    assert (failed, disabled, repaired) == ([(task_id, "tasks.add")], [], [])
    row = project.row(task_id)
    assert row["state"] == FAILURE
    assert "eta" in error_text(row["result"], row["traceback"]).lower(), row
    r = project.app.tasks["tasks.add"].apply_async((3, 4), countdown=0.5)
    w.work_until(lambda: r.ready(), 10, "the task with a countdown to run")
    assert r.get(timeout=1) == 7
