"""Storage and SQL: the file format, migrations, query plans, bad files refused, clear
errors for rows that cannot be read, and the protocol a client without litequeue speaks.
"""

import json
import logging
import os
import re
import shutil
import sqlite3
import sys
import textwrap
import time

import apsw
import msgpack
import pytest

import litequeue
from litequeue import (
    FAILURE, SCHEDULED, SUCCESS, CorruptDatabase, ForeignDatabase, LiteQueue, LitequeueError,
    SchemaTooNew,
)

from .helpers import (
    LITEQUEUE_PY, assert_one_line_error, insert_finished, insert_raw, log_lines, lq_here,
    need_root, pack, python, run, sha256, sql, stand_in_app, wait_until,
)

pytestmark = pytest.mark.timeout(120)


# The layout of a file litequeue wrote at schema version 3 before commit c7ea920 (the
# versions from the first with pruning up to 557827e): a snapshot, taken from such a file,
# so that a later edit of an old migration cannot hide from the upgrade test.
SCHEMA_V3_SNAPSHOT = """
CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    queue TEXT NOT NULL DEFAULT 'default', priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'PENDING', payload BLOB NOT NULL, eta REAL, expires REAL,
    attempt INTEGER NOT NULL DEFAULT 0, retries INTEGER NOT NULL DEFAULT 0, max_retries INTEGER,
    worker TEXT, pid INTEGER,
    created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    started_at REAL, finished_at REAL, result BLOB, traceback TEXT, errors BLOB);
CREATE INDEX tasks_ready ON tasks (queue, priority DESC, seq) WHERE state = 'PENDING';
CREATE INDEX tasks_due ON tasks (eta) WHERE state IN ('SCHEDULED', 'RETRY');
CREATE INDEX tasks_running ON tasks (worker) WHERE state = 'STARTED';
CREATE TABLE workers (
    id TEXT PRIMARY KEY, parent TEXT, hostname TEXT NOT NULL, pid INTEGER NOT NULL,
    queues TEXT NOT NULL, concurrency INTEGER, started_at REAL NOT NULL);
CREATE TABLE registry (name TEXT PRIMARY KEY, module TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE schedules (
    name TEXT PRIMARY KEY, task TEXT NOT NULL, module TEXT NOT NULL, schedule TEXT NOT NULL,
    tz TEXT NOT NULL, payload BLOB NOT NULL, queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0, catch_up TEXT NOT NULL DEFAULT 'once',
    last_fire REAL, next_fire REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX schedules_next ON schedules (next_fire);
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
"""


class TestStorage:

    def test_new_file_is_ours_in_wal_mode(self, tmp_path):
        db = str(tmp_path / "new.sqlite")
        litequeue._Storage(db).close()
        conn = sqlite3.connect(db)
        try:
            pragma = lambda name: conn.execute(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
            assert pragma("application_id") == litequeue.APPLICATION_ID
            assert pragma("user_version") == litequeue.SCHEMA_VERSION == len(litequeue._MIGRATIONS)
            assert pragma("journal_mode") == "wal"
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
        finally:
            conn.close()
        assert {"tasks", "workers", "registry", "tasks_ready"} <= tables

    def test_reopening_changes_nothing(self, tmp_path):
        db = str(tmp_path / "again.sqlite")
        litequeue._Storage(db).close()
        before = sha256(db)
        litequeue._Storage(db).close()
        assert sha256(db) == before

    def test_migrations_run_in_order_and_once(self, tmp_path, monkeypatch):
        db = str(tmp_path / "old.sqlite")
        app = LiteQueue(db)
        app.task(name="m.t")(lambda: None).delay()
        app._storage().close()
        # A later version of litequeue with one more migration opens the old file.
        extra = "ALTER TABLE tasks ADD COLUMN note TEXT DEFAULT 'migrated'"
        monkeypatch.setattr(litequeue, "_MIGRATIONS", [*litequeue._MIGRATIONS, extra])
        monkeypatch.setattr(litequeue, "SCHEMA_VERSION", len(litequeue._MIGRATIONS))
        litequeue._Storage(db).close()
        migrated = sha256(db)
        litequeue._Storage(db).close()
        assert sha256(db) == migrated                 # each migration runs once
        assert sql(db, "PRAGMA user_version") == [(litequeue.SCHEMA_VERSION,)]
        assert sql(db, "SELECT name, note FROM tasks") == [("m.t", "migrated")]
        # And this version refuses the file that the newer one wrote.
        monkeypatch.undo()
        with pytest.raises(SchemaTooNew, match="upgrade litequeue"):
            litequeue._Storage(db)

    def test_a_schema_3_file_from_an_earlier_version_still_fires(self, tmp_path):
        """Upgrading litequeue keeps the user's file working: its schedules still fire."""
        db = str(tmp_path / "v3.sqlite")
        conn = apsw.Connection(db)
        try:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA journal_mode = WAL")
            with conn:
                conn.execute(SCHEMA_V3_SNAPSHOT)
                conn.execute(f"PRAGMA application_id = {litequeue.APPLICATION_ID}")
                conn.execute("PRAGMA user_version = 3")
        finally:
            conn.close()
        storage = litequeue._Storage(db)
        try:
            now = time.time()
            definition = {"name": "tick", "task": "tasks.record", "module": "beat",
                          "schedule": "every:1.0", "tz": "UTC", "queue": "default",
                          "payload": litequeue._pack_envelope("tasks.record", ["t"], {}),
                          "priority": 0, "catch_up": "once"}
            storage.sync_schedules([definition], ["beat"], now - 5, litequeue._plan_sync)
            assert storage.fire_due_schedules(now, litequeue._plan_fires) == 1
            assert [row["name"] for row in storage.schedules()] == ["tick"]
        finally:
            storage.close()

    def test_synchronous_setting(self, tmp_path):
        db = str(tmp_path / "sync.sqlite")
        assert LiteQueue(db)._storage()._pragma("synchronous") == 1                 # NORMAL
        assert LiteQueue(db, synchronous="FULL")._storage()._pragma("synchronous") == 2

    def test_claim_uses_the_partial_ready_index(self, tmp_path):
        """Internal invariant: the claim's cost must not depend on finished rows."""
        storage = litequeue._Storage(str(tmp_path / "plan.sqlite"))
        try:
            plan = storage.conn.execute("EXPLAIN QUERY PLAN " + litequeue._SQL_CLAIM,
                                        ("w", 1, 0.0, "default", 1)).fetchall()
        finally:
            storage.close()
        details = " | ".join(row[3] for row in plan)
        assert "INDEX tasks_ready" in details, details
        assert "SCAN tasks" not in details, details

    def test_the_supervisor_s_periodic_reads_seek_and_never_scan_tasks(self, tmp_path):
        """Internal invariant: the quarantine check (every 2 s) and the rescue's look at
        STARTED rows cost the same with a million scheduled or finished rows."""
        storage = litequeue._Storage(str(tmp_path / "plan.sqlite"))
        try:
            for query in (litequeue._SQL_NEEDS_QUARANTINE, litequeue._SQL_QUARANTINE_ETA,
                          litequeue._SQL_CLAIMING_WORKERS):
                plan = storage.conn.execute("EXPLAIN QUERY PLAN " + query,
                                            {"result": b"", "now": 0.0}).fetchall()
                # Only the index of STARTED rows (a few), the small schedules, rate-limit,
                # concurrency-limit and pause tables, and the distinct rate keys (k: one seek each) are
                # read from end to end; tasks never.
                scans = [row[3] for row in plan if row[3].startswith("SCAN")]
                assert all(scan in ("SCAN CONSTANT ROW", "SCAN schedules", "SCAN rate_limits",
                                    "SCAN paused", "SCAN k", "SCAN concurrency",
                                    "SCAN queue_limits")
                           or "tasks_running" in scan for scan in scans), plan
        finally:
            storage.close()

    def test_claim_plan_is_independent_of_scheduled_rows(self, tmp_path):
        """Issue 3: scheduled rows wait where the claim never looks. The claim searches the
        partial index tasks_ready (and never scans tasks) whether the table is empty or
        holds 50 000 SCHEDULED rows, before and after ANALYZE; promotion uses tasks_due."""
        db = str(tmp_path / "plan.sqlite")
        storage = litequeue._Storage(db)

        def plan(statement, bindings):
            rows = storage.conn.execute("EXPLAIN QUERY PLAN " + statement, bindings).fetchall()
            return " | ".join(row[3] for row in rows)

        def check():
            claim = plan(litequeue._SQL_CLAIM, ("w", 1, 0.0, "default", 16))
            assert "USING COVERING INDEX tasks_ready" in claim, claim
            assert "SCAN" not in claim, claim
            promote = plan(litequeue._SQL_PROMOTE_DUE, (time.time(), litequeue._PROMOTE_BATCH))
            assert re.search(r"USING (COVERING )?INDEX tasks_due", promote), promote
            assert "SCAN" not in promote, promote
            next_due = plan(litequeue._SQL_NEXT_DUE, ())
            assert "tasks_due" in next_due and "SCAN" not in next_due, next_due

        try:
            check()
            now = time.time()
            with storage.write() as conn:
                conn.executemany(
                    "INSERT INTO tasks (id, name, state, payload, eta, created_at) "
                    "VALUES (?, 'tasks.add', 'SCHEDULED', ?, ?, ?)",
                    ((f"later-{i}", pack({"args": [i, i]}), now + 3600 + i, now)
                     for i in range(50_000)))
            check()
            storage.conn.execute("ANALYZE")
            storage.close()
            storage = litequeue._Storage(db)
            check()
            # And the claim takes none of them.
            rows = storage.complete_and_claim([], "w", 1, time.time(), "default", 16).rows
            assert rows == []
            assert storage.counts() == [("default", SCHEDULED, 50_000)]
        finally:
            storage.close()

    @staticmethod
    def _make_bad_file(kind, path):
        if kind == "not-sqlite":
            path.write_bytes(b"id,name\n1,add\n" * 200)
            return CorruptDatabase
        if kind == "damaged-sqlite":
            good = path.with_name("good.sqlite")
            litequeue._Storage(str(good)).close()
            path.write_bytes(good.read_bytes()[:100] + bytes(range(256)) * 48)
            return CorruptDatabase
        if kind == "foreign":
            conn = sqlite3.connect(path)
            conn.execute("CREATE TABLE notes (body TEXT)")
            conn.execute("INSERT INTO notes VALUES ('mine')")
            conn.commit()
            conn.close()
            return ForeignDatabase
        if kind == "too-new":
            litequeue._Storage(str(path)).close()
            conn = sqlite3.connect(path)
            conn.execute("PRAGMA user_version = 99")
            conn.commit()
            conn.close()
            return SchemaTooNew
        raise AssertionError(kind)

    @pytest.mark.parametrize("kind", ["not-sqlite", "damaged-sqlite", "foreign", "too-new"])
    def test_refuses_bad_files_without_touching_them(self, tmp_path, kind):
        path = tmp_path / "file.sqlite"
        expected = self._make_bad_file(kind, path)
        siblings = sorted(p.name for p in tmp_path.iterdir())
        before = sha256(path)
        with pytest.raises(expected) as info:
            litequeue._Storage(str(path))
        assert str(path) in str(info.value)
        assert isinstance(info.value, litequeue.DatabaseError)
        # The public API refuses it the same way.
        with pytest.raises(expected):
            LiteQueue(str(path)).AsyncResult("some-id").state
        assert sha256(path) == before
        if kind != "too-new":
            # No -wal or -shm left behind: nothing was journalled.
            assert sorted(p.name for p in tmp_path.iterdir()) == siblings

    @pytest.mark.worker
    def test_concurrent_first_open_of_a_new_file(self, tmp_path):
        """Two supervisors, or a producer and a worker, may create the file at once."""
        script = textwrap.dedent("""
            import collections, json, multiprocessing, os, sys
            sys.path.insert(0, sys.argv[4])                 # the litequeue under test
            import litequeue

            def open_it(path, barrier, results):
                barrier.wait()
                try:
                    litequeue._Storage(path).close()
                    results.put("ok")
                except BaseException as exc:
                    results.put(f"{type(exc).__module__}.{type(exc).__name__}")

            if __name__ == "__main__":
                directory, trials, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
                ctx = multiprocessing.get_context("fork")   # nothing is open yet here
                outcomes = collections.Counter()
                for trial in range(trials):
                    path = os.path.join(directory, f"fresh{trial}.sqlite")
                    barrier, results = ctx.Barrier(n), ctx.Queue()
                    procs = [ctx.Process(target=open_it, args=(path, barrier, results))
                             for _ in range(n)]
                    for proc in procs:
                        proc.start()
                    for _ in range(n):
                        outcomes[results.get(timeout=60)] += 1
                    for proc in procs:
                        proc.join()
                print(json.dumps(outcomes))
        """)
        (tmp_path / "opener.py").write_text(script)
        done = run([sys.executable, str(tmp_path / "opener.py"), str(tmp_path), "40", "6",
                    str(LITEQUEUE_PY.parent)], cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"ok": 240}

    def test_directory_is_refused(self, tmp_path):
        with pytest.raises(CorruptDatabase, match="directory"):
            litequeue._Storage(str(tmp_path))

    def test_missing_file_when_create_is_off(self, tmp_path):
        with pytest.raises(litequeue.DatabaseError, match="no database"):
            litequeue._Storage(str(tmp_path / "absent.sqlite"), create=False)
        assert not (tmp_path / "absent.sqlite").exists()


def task_count(db):
    return sql(db, "SELECT count(*) FROM tasks")[0][0]


def run_without_dac(cmd, cwd, timeout=60):
    """run() as root without the capabilities that let root ignore file permissions:
    a directory mode 0o555 stops it as it stops any user."""
    return run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--", *cmd],
               cwd=cwd, timeout=timeout)


class TestClearErrors:

    def test_odd_columns_and_control_characters_never_break_the_cli(self, project):
        """Database text reaches a terminal: odd types give no traceback, and control
        characters (a window-title escape in a traceback) are shown escaped."""
        project.delay("add", 0, 0)                 # makes the file
        task_id = insert_finished(project.db, FAILURE, result=pack({"type": "x.Y"}),
                                  errors=pack([1, {"time": "soon", "message": "m"}]))
        sql(project.db, "UPDATE tasks SET traceback = ?, finished_at = 'later', queue = ? "
                        "WHERE id = ?", "Traceback\x1b]0;owned\x07 end", b"\xffq", task_id)
        for args in (("result", project.db, task_id), ("result", project.db, task_id, "--json"),
                     ("status", project.db)):
            done = lq_here(*args, cwd=project.dir)
            assert "Traceback (most recent call last)" not in done.stderr, (args, done.stderr)
            assert "\x1b" not in done.stdout + done.stderr, (args, done.stdout, done.stderr)
            assert done.returncode in (0, 1), (args, done.returncode, done.stderr)
        assert "\\x1b]0;owned" in lq_here("result", project.db, task_id, cwd=project.dir).stderr

    def test_result_that_is_not_msgpack_is_one_line_in_the_cli(self, project):
        project.delay("add", 0, 0)                 # makes the file
        task_id = insert_finished(project.db, SUCCESS, result=b"\xc1")
        done = lq_here("result", project.db, task_id, cwd=project.dir)
        assert_one_line_error(done, code=1)

    def test_result_that_is_not_msgpack_raises_a_litequeue_error(self, project):
        project.delay("add", 0, 0)                 # makes the file
        task_id = insert_finished(project.db, SUCCESS, result=b"\xc1")
        with pytest.raises(LitequeueError) as caught:
            project.app.AsyncResult(task_id).get(timeout=5)
        assert type(caught.value).__module__ == "litequeue", caught.value
        assert not isinstance(caught.value, msgpack.exceptions.UnpackException)

    def test_errors_that_are_not_msgpack_raise_a_litequeue_error(self, project):
        project.delay("add", 0, 0)                 # makes the file
        task_id = insert_finished(project.db, FAILURE, errors=b"\xc1")
        with pytest.raises(LitequeueError) as caught:
            project.app.AsyncResult(task_id).errors
        assert type(caught.value).__module__ == "litequeue", caught.value
        assert not isinstance(caught.value, msgpack.exceptions.UnpackException)

    @pytest.mark.parametrize("options, error", [
        ({"priority": 2**70}, ValueError),
        ({"priority": "high"}, ValueError),
        ({"priority": float("nan")}, ValueError),
        ({"args": (), "kwargs": {1: 2}}, TypeError),
        ({"queue": object()}, (TypeError, ValueError)),
    ], ids=["priority-huge", "priority-text", "priority-nan", "kwargs-int-key", "queue-object"])
    def test_bad_options_raise_and_write_no_row(self, project, options, error):
        project.delay("add", 0, 0)                 # makes the file
        before = task_count(project.db)
        with pytest.raises(error):
            project.app.tasks["tasks.add"].apply_async(**options)
        assert task_count(project.db) == before

    @pytest.mark.worker
    def test_read_only_directory_without_a_side_directory(self, tmp_path):
        """The database's directory became read-only after the database was made, and no
        side directory exists. (Run without CAP_DAC_OVERRIDE: root ignores modes.)"""
        need_root()
        if not shutil.which("setpriv"):
            pytest.skip("needs setpriv to drop root's capabilities")
        home = tmp_path / "ro"
        home.mkdir()
        db = str(home / "jobs.sqlite")
        app = stand_in_app(db)
        task_id = app.tasks["tasks.add"].delay(1, 2).id
        shutil.rmtree(db + "-lq", ignore_errors=True)
        # An open connection keeps -wal and -shm in place: a WAL database cannot be read
        # where they can be neither found nor created.
        holder = apsw.Connection(db)
        try:
            holder.execute("SELECT count(*) FROM tasks").fetchall()
            home.chmod(0o555)
            producer = run_without_dac([sys.executable, "-c", textwrap.dedent(f"""
                import sys
                sys.path.insert(0, {str(LITEQUEUE_PY.parent)!r})
                import litequeue
                r = litequeue.LiteQueue({db!r}).AsyncResult({task_id!r})
                print(r.state)
                try:
                    r.get(timeout=0.5)
                except litequeue.TimeoutError:
                    print("timeout")
            """)], cwd=home)
            assert (producer.returncode, producer.stdout) == (0, "PENDING\ntimeout\n"), \
                producer.stderr
            assert "PermissionError" not in producer.stderr, producer.stderr
            worker = run_without_dac([sys.executable, str(LITEQUEUE_PY), "worker", db, "-c", "1"],
                                     cwd=home, timeout=30)
            assert worker.returncode != 0
            text = worker.stdout + worker.stderr
            assert "Traceback" not in text, text
            assert len(log_lines(text)) == 1, text
            assert not os.path.exists(db + "-lq")
        finally:
            holder.close()
            home.chmod(0o755)

    def test_huge_result_does_not_flood_the_log(self, project, here, caplog):
        caplog.set_level(logging.INFO, logger="litequeue")
        big = "x" * 5_000_000
        r = project.delay("echo", big)
        assert here(project).work() == 1        # a worker child's steps, in this process
        assert r.get(timeout=30) == [[big], {}]
        size = len(caplog.text)
        assert size < 100_000, f"the worker logged {size} characters"
        assert r.id in caplog.text             # the task is still logged at INFO


# A client in "another language": stdlib sqlite3 and msgpack only. It inserts tasks with
# one INSERT each (rings nothing) and polls their rows until they are finished.
PROTOCOL_CLIENT = '''
import json, sqlite3, sys, time, uuid
import msgpack

db, calls = sys.argv[1], json.loads(sys.argv[2])
conn = sqlite3.connect(db, timeout=30, isolation_level=None)
out = []
for name, args, kwargs in calls:
    task_id = str(uuid.uuid4())
    payload = msgpack.packb({"args": args, "kwargs": kwargs})
    started = time.monotonic()
    conn.execute("INSERT INTO tasks (id, name, payload) VALUES (?, ?, ?)",
                 (task_id, name, payload))
    deadline = started + 30
    while True:
        state, result, tb = conn.execute(
            "SELECT state, result, traceback FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if state in ("SUCCESS", "FAILURE") or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    out.append({"id": task_id, "state": state, "traceback": tb,
                "result": None if result is None else msgpack.unpackb(result),
                "elapsed": time.monotonic() - started})
print(json.dumps({"litequeue_imported": "litequeue" in sys.modules, "calls": out}))
'''


class TestProtocol:

    @pytest.mark.worker
    def test_enqueue_and_read_without_litequeue(self, project, workers):
        workers.start(project, concurrency=1)
        calls = [["tasks.add", [2, 3], {}], ["tasks.add", [], {"x": "a", "y": "b"}],
                 ["tasks.fail", ["boom"], {}]]
        out = json.loads(python(PROTOCOL_CLIENT, project.dir, project.db, json.dumps(calls),
                                isolated=True))
        assert out["litequeue_imported"] is False
        ok, kwargs, failed = out["calls"]
        assert (ok["state"], ok["result"]) == (SUCCESS, 5)
        assert (kwargs["state"], kwargs["result"]) == (SUCCESS, "ab")
        assert failed["state"] == FAILURE
        assert failed["result"]["type"] == "tasks.TaskFailed"
        assert failed["result"]["message"] == "boom" and failed["result"]["args"] == ["boom"]
        assert "raise TaskFailed(message)" in failed["traceback"]
        # litequeue reads what the foreign client wrote, and the client's defaults held.
        row = project.row(ok["id"])
        assert (row["queue"], row["priority"], row["attempt"]) == ("default", 0, 1)
        assert project.app.AsyncResult(ok["id"]).get(timeout=5) == 5

    def test_writers_that_do_not_ring_are_picked_up(self, project, here):
        """The data_version fallback: an INSERT that rings nothing (insert_raw: its own
        connection, as the sqlite3 shell's) still runs, within the fallback's poll
        interval (0.05 s for a worker child run in this process), not only when something
        else wakes it."""
        here(project).start()                   # a worker child's loop on a thread
        assert project.delay("add", 0, 0).get(timeout=10) == 0   # worker idle after this
        for n in range(3):
            started = time.monotonic()
            task_id, = insert_raw(project.db, [("tasks.add", pack({"args": [n, n],
                                                                   "kwargs": {}}))])
            wait_until(lambda: project.state(task_id) in (SUCCESS, FAILURE), 30,
                       f"the worker to run {task_id}")
            elapsed = time.monotonic() - started
            assert project.app.AsyncResult(task_id).get(timeout=5) == 2 * n
            assert elapsed < 1.0, f"picked up after {elapsed:.3f} s with a 0.05 s fallback poll"
