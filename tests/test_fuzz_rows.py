"""A hostile-row fuzzer: for every column of every table in the schema (read from the
file, so a new column is covered without editing this test), a foreign connection writes
each hostile value into a row beside a running worker. After each write: the worker and
its children live on, a canary task completes within seconds, no other row is charged,
and every reader (the dashboard's and the CLI's reads, results, metrics, health) answers
or raises a LitequeueError. One worker serves the whole run, so it stays short."""

import json
import math
import time

import apsw
import pytest

import litequeue
from litequeue import SUCCESS, LitequeueError, chord

from .helpers import lq, sql, task_source, wait_until

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow, pytest.mark.worker]

# name -> (SQL expression, parameters): what another client can store in any column.
HOSTILE = {
    "text not UTF-8": ("CAST(X'61ff62' AS TEXT)", ()),
    "blob": ("X'00ff01'", ()),
    "NULL": ("NULL", ()),
    "NaN": ("?", (math.nan,)),           # SQLite stores NaN as NULL
    "+Inf": ("9e999", ()),
    "-Inf": ("-9e999", ()),
    "negative": ("-5", ()),
    "huge": ("9223372036854775807", ()),
    "1 MB text": ("?", ("x" * (1 << 20),)),
    "wrong type": (None, ()),            # text in a number column, a number in a text one
}


def wrong_type(declared):
    return ("'not a number'", ()) if declared in ("INTEGER", "REAL") else ("12345", ())


class Victims:
    """Makes a fresh row of each table for the fuzzer to spoil, and returns its rowid
    (or its key, for tables without rowid)."""

    def __init__(self, project):
        self.project, self.db, self.n = project, project.db, 0

    def write(self, query, *params):
        conn = apsw.Connection(self.db)
        try:
            conn.set_busy_timeout(30_000)
            return conn.execute(query, params).fetchall()
        finally:
            conn.close()

    def make(self, table):
        self.n += 1
        n, now = self.n, time.time()
        if table == "tasks":
            task_id = self.project.delay("add", n, n).id
            self.task_id = task_id
            return ("seq", self.write("SELECT seq FROM tasks WHERE id = ?", task_id)[0][0])
        if table == "workers":
            self.write("INSERT INTO workers (id, parent, hostname, pid, queues, concurrency, "
                       "started_at) VALUES (?, NULL, 'fuzz', 1, 'default', 1, ?)",
                       f"fuzz-worker-{n}", now)
        elif table == "registry":
            self.write("INSERT INTO registry VALUES (?, 'fuzzmod', ?)", f"fuzz.task{n}", now)
        elif table == "schedules":
            payload = litequeue._pack_envelope("tasks.add", [1, 1], {})
            self.write("INSERT INTO schedules (name, task, module, schedule, tz, payload, "
                       "queue, next_fire, updated_at) VALUES (?, 'tasks.add', 'tasks', "
                       "'every:3600', 'UTC', ?, 'default', ?, ?)",
                       f"fuzz-schedule-{n}", payload, now + 3600, now)
        elif table in ("chords", "chord_slots"):
            # A chord whose first member has ended and whose second waits for a go: its
            # slot and its row are read again when the second ends.
            app = self.project.app
            self.chord_gate = f"chord{n}"
            result = chord([app.tasks["tasks.add"].s(n, n),
                            app.tasks["tasks.block"].s(self.chord_gate)])(
                app.tasks["tasks.echo"].s())
            self.task_id = result.id
            wait_until(lambda: self.write("SELECT count(*) FROM chord_slots s JOIN chords c "
                                          "ON s.chord = c.id WHERE c.fired = 0")[0][0] > 0
                       and self.project.started(self.chord_gate), 20, "the chord's first member")
            rowid, chord_id = self.write("SELECT rowid, id FROM chords ORDER BY rowid DESC "
                                         "LIMIT 1")[0]
            # chord_slots has no rowid; the chord has one slot so far.
            return ("rowid", rowid) if table == "chords" else ("chord", chord_id)
        elif table == "groups":
            self.write("INSERT INTO groups VALUES (?, ?, ?, ?)", f"fuzz-group-{n}",
                       litequeue._pack(["a", "b"]), "a", now)
            return ("id", f"fuzz-group-{n}")
        elif table == "stats":
            minute = int(now // 60)
            self.write("INSERT OR IGNORE INTO stats (minute, name, queue) VALUES (?, ?, 'q')",
                       minute, f"fuzz.stat{n}")
            return ("name", f"fuzz.stat{n}")
        elif table == "alerts":
            self.write("INSERT OR IGNORE INTO alerts (id, cursor) VALUES (1, ?)", now)
            return ("rowid", 1)
        elif table == "paused":
            self.write("INSERT INTO paused VALUES (?, ?)", f"fuzzq{n}", now)
            return ("queue", f"fuzzq{n}")
        elif table in ("steps", "events", "messages"):
            # A workflow waiting for its task step, with a message queued for its recv():
            # its replay, once the gate opens, reads all three.
            app = self.project.app
            self.flow_gate = f"flow{n}"
            self.task_id = app.send_task("flows.fuzz_flow", args=[n, self.flow_gate]).id
            wait_until(lambda: self.project.marked(f"hold.{self.flow_gate}"), 20,
                       "the workflow's task step started")
            app.send(self.task_id, n, topic="t")
            return ("workflow", self.task_id)
        elif table == "rate_limits":
            self.write("INSERT INTO rate_limits (key, rate, interval) VALUES (?, '5/s', 0.2)",
                       f"fuzz.limited{n}")
            return ("key", f"fuzz.limited{n}")
        elif table == "concurrency":         # every claim reads every row of it
            self.write("INSERT INTO concurrency (key, max, per_key) VALUES (?, 100, 10)",
                       f"fuzz.bound{n}")
            return ("key", f"fuzz.bound{n}")
        elif table == "queue_limits":        # the claims of the queue the canaries run in
            self.write("INSERT OR REPLACE INTO queue_limits (queue, max) VALUES ('default', "
                       "1000)")
            return ("queue", "default")
        else:
            return None
        return ("rowid", self.write(f'SELECT max(rowid) FROM "{table}"')[0][0])

    def clean(self, table, keep):
        """Drop the small tables' victims, so the run's cost stays flat: every reader
        would otherwise read all the rows made so far."""
        if table == "workers":
            marks = ",".join("?" * len(keep))
            self.write(f"DELETE FROM workers WHERE id NOT IN ({marks})", *keep)
        elif table in ("registry", "schedules", "groups", "stats", "paused", "rate_limits",
                       "concurrency", "queue_limits"):
            self.write(f'DELETE FROM "{table}"' + (" WHERE name NOT LIKE 'tasks.%'"
                                                    if table == "registry" else ""))

    def after(self, table):
        """Let a chord's second member end, so that its end reads the spoiled row."""
        if table in ("chords", "chord_slots"):
            self.project.go(self.chord_gate)
        if table in ("steps", "events", "messages"):
            self.project.go(self.flow_gate)


def read_everything(app, task_id):
    """What the dashboard, /metrics, health and the CLI read. Returns the first error
    that is not a LitequeueError, as text, or None."""
    admin = app.admin
    readers = [
        admin.state_counts, lambda: admin.throughput(24 * 60), admin.workers, admin.registry,
        admin.schedules, admin.paused, admin.rate_limits,
        lambda: app._storage().concurrency_limits(), lambda: app._storage().queue_limits(),
        lambda: [litequeue._schedule_view(row) for row in admin.schedules()],
        lambda: litequeue._health_checks(app, 300.0),
        lambda: litequeue._metrics_text(app),
        lambda: admin.page(None, None, None, None, None, 50),
        lambda: admin.page(None, None, None, None, "fuzz", 50),
        lambda: admin.page(None, "FAILURE", None, None, None, 10),
        lambda: admin.task_stats(),
    ]
    if task_id is not None:
        result = app.AsyncResult(task_id)
        readers += [lambda: admin.task(task_id), lambda: result.state,
                    lambda: (result.result, result.traceback, result.ready()),
                    lambda: result.get_event("e", timeout=0), admin.workflows]
    for i, read in enumerate(readers):
        try:
            json.dumps(litequeue._display(read()), default=str)
        except LitequeueError:
            pass                      # a clear error is an answer
        except Exception as exc:      # noqa: BLE001 (what the fuzzer looks for)
            return f"reader {i}: {type(exc).__name__}: {exc}"[:300]
    return None


def test_hostile_values_in_every_column_never_stop_a_worker(project, workers, capsys):
    project.write_module("flows", task_source("flows.py"))
    worker = workers.start(project, concurrency=2, app=("tasks", "flows"))
    children = {c["pid"] for c in worker.live_children()}
    victims = Victims(project)
    keep = [w for (w,) in sql(project.db, "SELECT id FROM workers")]
    app = project.app
    schema = apsw.Connection(project.db)
    tables = [t for (t,) in schema.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    columns = {t: [(row[1], row[2]) for row in schema.execute(f'PRAGMA table_info("{t}")')]
               for t in tables}
    schema.close()
    tried, refused, failures, canaries = 0, 0, [], []
    for table in tables:
        for column, declared in columns[table]:
            for value_name, (expr, params) in HOSTILE.items():
                if expr is None:
                    expr, params = wrong_type(declared)
                victim = victims.make(table)
                assert victim is not None, f"the fuzzer makes no row of table {table}: add one"
                key, rowid = victim
                tried += 1
                try:
                    victims.write(f'UPDATE "{table}" SET "{column}" = {expr} WHERE "{key}" = ?',
                                  *params, rowid)
                except (apsw.ConstraintError, apsw.MismatchError):
                    refused += 1      # the schema itself refuses it: nothing to read
                victims.after(table)
                where = f"{table}.{column} = {value_name}"
                canary = project.delay("add", tried, 1)
                canaries.append(canary)
                try:
                    assert canary.get(timeout=15) == tried + 1
                except Exception as exc:   # noqa: BLE001
                    failures.append(f"{where}: the canary did not complete: {exc}"[:300])
                error = read_everything(app, victims.task_id if table in
                                        ("tasks", "chords", "chord_slots", "steps", "events",
                                         "messages") else None)
                if error:
                    failures.append(f"{where}: a reader raised {error}")
                if worker.proc.poll() is not None:
                    failures.append(f"{where}: the worker exited {worker.proc.returncode}")
                    break
                victims.clean(table, keep)
                alive = {c["pid"] for c in worker.live_children()}
                if alive != children:
                    failures.append(f"{where}: children {sorted(children)} became "
                                    f"{sorted(alive)}")
                    children = alive
        # The commands a user runs, once per table.
        for command in (["status"], ["health", "--max-wait", "3600"], ["tasks"]):
            done = lq(*command, project.db, cwd=project.dir)
            out = done.stdout + done.stderr
            if "Traceback" in out or done.returncode not in (0, 1, 2, 3):
                failures.append(f"after {table}: `{' '.join(command)}` exited "
                                f"{done.returncode}: {out[-300:]}")
    # No canary was charged for a row it merely ran beside.
    charged = [c.id for c in canaries if c.state != SUCCESS]
    if charged:
        failures.append(f"{len(charged)} canaries did not succeed")
    with capsys.disabled():
        print(f"\nhostile-row fuzzer: {tried} (column, value) pairs over {len(tables)} "
              f"tables, {refused} refused by the schema, {tried - len(failures)} held")
    assert not failures, f"{len(failures)} of {tried} pairs did not hold:\n" + \
        "\n".join(failures[:60])
