"""Rows another client wrote: text that is not UTF-8 in any column a worker or a command
reads. Each must end FAILURE (or be set aside) saying why, and never stop a worker, crash
its children or reach a user as a traceback. Real workers, real files, a foreign
connection writing beside them."""

import time

import apsw
import pytest

import litequeue
from litequeue import FAILURE, SUCCESS

from .helpers import foreign, lq, sql, wait_until

pytestmark = [pytest.mark.timeout(180), pytest.mark.worker]

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


@pytest.mark.parametrize("case", list(CASES))
def test_text_that_is_not_utf8_never_stops_a_worker(project, workers, case):
    seq = CASES[case](project)
    worker = workers.start(project, concurrency=2)
    children = {c["pid"] for c in worker.live_children()}
    # A canary queued after the bad row runs within seconds.
    assert project.delay("add", 20, 22).get(timeout=20) == 42
    for command in (["status"], ["health", "--max-wait", "3600"], ["tasks"],
                    ["inspect", "active"]):
        done = lq(*command, project.db, cwd=project.dir)
        out = done.stdout + done.stderr
        assert "Traceback" not in out and "UnicodeDecodeError" not in out, (command, out)
        assert done.returncode in (0, 2), (command, done.returncode, out)
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
