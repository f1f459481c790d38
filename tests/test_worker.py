"""The worker end to end: the child loop one step at a time, claims and priorities,
shutdowns, and SIGKILL of children and supervisors.
"""

import collections
import json
import os
import signal
import sys
import time
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

import litequeue
from litequeue import (
    FAILURE, PENDING, SCHEDULED, STARTED, SUCCESS, LiteQueue, RemoteError, SerializationError,
    UnknownTask, WorkerLostError, group,
)

from .helpers import (
    Project, alive, group_members, insert_raw, lq, lq_here, msgpack_values, pack, python, same,
    sql, wait_until,
)

pytestmark = pytest.mark.timeout(120)


# The supervisor logs this when the first SIGTERM/SIGINT starts a warm shutdown.
WARM_SHUTDOWN_LOG = "warm shutdown"


def envelope_problem(payload):
    """What is wrong with a payload as a task envelope, decoded independently of
    litequeue, or None if it is a valid envelope."""
    if not isinstance(payload, bytes):
        return f"payload is {type(payload).__name__}, not msgpack bytes"
    try:
        envelope = msgpack.unpackb(payload, raw=False, strict_map_key=False, timestamp=3)
    except Exception:
        return "payload is not valid msgpack"
    if not isinstance(envelope, dict):
        return "not a map"
    if not isinstance(envelope.get("args", []), list):
        return "'args' is not an array"
    kwargs = envelope.get("kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        return "'kwargs' is not a map with string keys"
    return None


def collect(strategy, max_examples):
    """Draw examples of a strategy with hypothesis (no I/O per example): tests that need
    a worker insert them all at once."""
    drawn = []

    @hsettings(max_examples=max_examples, deadline=None, database=None,
               suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(value):
        drawn.append(value)
    draw()
    return drawn


def fuzzed_payloads():
    """Payloads for a task row: arbitrary bytes, msgpack values (envelope-like maps among
    them), truncated msgpack, and SQLite values that are not bytes."""
    values = msgpack_values()
    envelope_like = st.dictionaries(st.sampled_from(["args", "kwargs", "other"]),
                                    values | st.lists(values, max_size=3), max_size=3)

    def packb(value):
        return msgpack.packb(value, use_bin_type=True, datetime=True)
    payloads = collect(st.binary(max_size=64), 150)
    payloads += [packb(v) for v in collect(values | envelope_like, 150)]
    payloads += [packb(v)[:cut] for v, cut in
                 collect(st.tuples(values | envelope_like, st.integers(0, 200)), 50)
                 if cut < len(packb(v))]
    payloads += collect(st.text(max_size=20) | st.integers(-2**63, 2**63 - 1)
                        | st.floats(allow_nan=False), 30)
    return payloads


QUICKSTART_CHECK = '''
import json
import litequeue
from tasks import add, fail, TaskFailed

out = {"litequeue_file": litequeue.__file__}
r = add.delay(4, 4)
out["get"] = r.get(timeout=20)
out["result"], out["successful"], out["failed"], out["state"] = \\
    r.result, r.successful(), r.failed(), r.state
f = fail.delay("boom")
try:
    f.get(timeout=20)
    out["raised"] = None
except TaskFailed as exc:
    out["raised"] = str(exc)
out["f_successful"], out["f_failed"], out["f_state"] = f.successful(), f.failed(), f.state
out["f_result_type"] = type(f.result).__name__
out["f_result_is_task_failed"] = isinstance(f.result, TaskFailed)
out["f_traceback"] = f.traceback
out["f_no_propagate"] = repr(f.get(timeout=20, propagate=False))
print(json.dumps(out))
'''


def read_errors(app, ids):
    """What failed tasks' exceptions read as through app, in this process: their types,
    a stand-in's exc_type and exc_message, and whether the remote traceback is noted."""
    out = {}
    for task_id in ids:
        exc = app.AsyncResult(task_id).result
        notes = getattr(exc, "__notes__", [])
        out[task_id] = {"type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                        "exc_type": getattr(exc, "exc_type", None),
                        "exc_message": getattr(exc, "exc_message", None),
                        "traceback": any("Traceback" in note for note in notes)}
    return out


# Task rows a producer could not have written (or a task that cannot succeed) and how
# each ends: (name, payload, exception type, words of its message).
BAD_ROWS = [
    ("tasks.nope", pack({"args": [], "kwargs": {}}), UnknownTask, "unknown task 'tasks.nope'"),
    ("tasks.add", b"\xc1\xc1", ValueError, "payload is not valid msgpack"),
    ("tasks.add", pack({"args": [1, 2]})[:-1], ValueError, "payload is not valid msgpack"),
    ("tasks.add", pack([4, 4]), ValueError, "envelope is list, not a map"),
    ("tasks.add", pack({"args": 4}), ValueError, "'args' is not an array"),
    ("tasks.add", pack({"args": [], "kwargs": [1]}), ValueError, "'kwargs' is not a map"),
    ("tasks.add", pack({"kwargs": {1: 2}}), ValueError, "string keys"),
    ("tasks.add", '{"args": [4, 4]}', ValueError, "payload is str, not msgpack bytes"),
    ("tasks.add", pack({"args": [1]}), TypeError, "missing 1 required positional"),
    ("tasks.bad_result", pack({}), SerializationError, "cannot be encoded as msgpack"),
    # Types the reading process has not imported come back as a stand-in naming them.
    ("tasks.fail", pack({"args": ["x"]}), RemoteError, "tasks.TaskFailed: x"),
    ("tasks.picky", pack({}), RemoteError, "tasks.Picky: 1-2"),
]


class TestWorker:

    def test_group_results_come_back_in_order(self, project, here):
        w = here(project)
        add = project.app.tasks["tasks.add"]
        fail = project.app.tasks["tasks.fail"]
        # Priorities make the members run in another order than the group's (as two
        # children finishing in turn would): the results still come back in its order.
        g = group(add.s(i, i).set(priority=i % 10) for i in range(200)).apply_async()
        assert w.work() == 200
        finished = dict(sql(project.db, "SELECT id, finished_at FROM tasks"))
        assert finished[g.results[0].id] > finished[g.results[-1].id]
        assert g.get(timeout=30) == [2 * i for i in range(200)]
        assert g.ready() and g.successful() and g.completed_count() == 200
        mixed = group(add.s(1, 2), fail.s("boom"), add.s(3, 4)).apply_async()
        assert w.work() == 3
        values = mixed.get(timeout=30, propagate=False)
        assert values[0] == 3 and values[2] == 7 and str(values[1]).endswith("boom")
        assert mixed.failed() and not mixed.successful() and mixed.completed_count() == 2
        with pytest.raises(Exception, match="boom"):
            mixed.get(timeout=5)

    @pytest.mark.worker
    @pytest.mark.parametrize("mode", ["vendored", "installed"])
    def test_quickstart(self, tmp_path, workers, mode):
        proj = Project(tmp_path / "quickstart", vendored=mode == "vendored")
        if mode == "vendored":
            # `python litequeue.py worker jobs.sqlite`, no -A: the worker imports the
            # modules that producers registered.
            cmd = [sys.executable, "litequeue.py", "worker", "jobs.sqlite"]
        else:
            script = Path(sys.executable).with_name("litequeue")
            cmd = [str(script)] if script.exists() else [sys.executable, "-m", "litequeue"]
            cmd += ["worker", "jobs.sqlite", "-A", "tasks"]
        concurrency = os.cpu_count() or 1
        producer = "from tasks import add; r = add.delay(4, 4); print(r.get(timeout=20))"
        if mode == "vendored":
            # The tutorial's order: the worker starts first, with no database yet and
            # nothing registered, and still finds tasks.py once a producer uses it.
            first_worker = workers.start(proj, cmd=cmd, concurrency=concurrency)
            assert python(producer, proj.dir) == "8\n"
            first_worker.signal(signal.SIGTERM)
            assert first_worker.wait(20) == 0
        # With no worker running, the row is committed and not ready.
        first_id, ready, state = python(
            "from tasks import add; r = add.delay(4, 4); print(r.id, r.ready(), r.state)",
            proj.dir).split()
        assert (ready, state) == ("False", PENDING)
        workers.start(proj, cmd=cmd, concurrency=concurrency)
        assert python(producer, proj.dir) == "8\n"

        first = LiteQueue(proj.db).AsyncResult(first_id)
        assert first.get(timeout=20) == 8
        assert (first.result, first.successful(), first.state) == (8, True, SUCCESS)
        assert first.date_done is not None

        checks = json.loads(python(QUICKSTART_CHECK, proj.dir))
        if mode == "vendored":
            assert checks["litequeue_file"] == str(proj.dir / "litequeue.py")
        else:
            assert Path(checks["litequeue_file"]).parent != proj.dir
        assert checks["get"] == 8 and checks["result"] == 8
        assert (checks["successful"], checks["failed"], checks["state"]) == \
            (True, False, SUCCESS)
        assert checks["raised"] == "boom"
        assert (checks["f_successful"], checks["f_failed"], checks["f_state"]) == \
            (False, True, FAILURE)
        assert checks["f_result_is_task_failed"], checks["f_result_type"]
        assert "raise TaskFailed(message)" in checks["f_traceback"]
        assert "tasks.py" in checks["f_traceback"]
        assert checks["f_no_propagate"] == "TaskFailed('boom')"

    @pytest.mark.worker
    def test_exactly_once_over_two_supervisors(self, project, workers):
        a = workers.start(project, concurrency=2, loglevel="WARNING", ready=False)
        b = workers.start(project, concurrency=2, loglevel="WARNING", ready=False)
        a.wait_ready()
        b.wait_ready()
        children = {c["id"]: "a" for c in a.children()} | {c["id"]: "b" for c in b.children()}
        record = project.app.tasks["tasks.record"]
        expected = {record.delay(n).id: n for n in range(2000)}

        def done():
            return sql(project.db, "SELECT count(*) FROM tasks WHERE state = ?", SUCCESS)[0][0]
        wait_until(lambda: done() == 2000, 120,
                   lambda: f"2000 SUCCESS rows (have {done()})")

        rows = sql(project.db, "SELECT id, state, result, attempt, worker, retries FROM tasks")
        assert len(rows) == 2000
        # Every execution, as the tasks themselves recorded it.
        runs = collections.Counter()
        for ledger in project.marks.glob("ledger.*"):
            for line in ledger.read_text().splitlines():
                task_id, n = line.split()
                assert expected[task_id] == int(n)
                runs[task_id] += 1
        assert set(runs) == set(expected)
        for task_id, state, result, attempt, worker, retries in rows:
            assert state == SUCCESS and msgpack.unpackb(result) == expected[task_id]
        # Each task ran exactly once and was never charged a failed attempt. (The attempt
        # column counts claims: a child may hand prefetched rows back unrun.)
        again = [(task_id, attempt, retries, worker, runs[task_id])
                 for task_id, _, _, attempt, worker, retries in rows
                 if retries != 0 or runs[task_id] != 1]
        assert again == [], f"{len(again)} task(s) run more than once: {again[:5]}"
        # Both supervisors took part.
        by_supervisor = collections.Counter(children[row[4]] for row in rows)
        assert set(by_supervisor) == {"a", "b"}, by_supervisor
        assert a.proc.poll() is None and b.proc.poll() is None

    @pytest.mark.worker
    def test_sigkill_of_a_child_mid_task(self, project, workers):
        w = workers.start(project, concurrency=2)
        r = project.delay("block", "k")
        (attempt, pid), = wait_until(lambda: project.started("k"), 10, "block('k') to start")
        assert attempt == 1 and pid in {c["pid"] for c in w.children()}
        assert (project.row(r.id)["state"], project.row(r.id)["pid"]) == (STARTED, pid)

        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        runs = wait_until(lambda: len(project.started("k")) == 2 and project.started("k"), 10,
                          "block('k') to run again")
        requeue_latency = time.monotonic() - killed_at
        assert runs[1][0] == 2 and runs[1][1] != pid
        assert requeue_latency < 5, f"requeued after {requeue_latency:.1f} s"
        project.go("k")
        assert r.get(timeout=20) == "k"
        assert (r.state, r.retries) == (SUCCESS, 1)
        assert project.row(r.id)["attempt"] >= 2     # the fencing token moved on
        assert sql(project.db, "SELECT count(*) FROM tasks") == [(1,)]

        # The supervisor replaced the dead child.
        def replaced():
            pids = [c["pid"] for c in w.live_children()]
            return len(pids) == 2 and pid not in pids
        wait_until(replaced, 15, "a replacement child")
        status = lq("status", project.db, cwd=project.dir)
        assert status.returncode == 0, status.stderr
        assert status.stdout.count("    child ") == 2, status.stdout
        assert w.proc.poll() is None

    @pytest.mark.worker
    def test_a_restarted_child_runs_its_supervisors_code_not_the_edited_file(
            self, tmp_path, workers):
        """The supervisor hands each child the code it was started with: a child that
        replaces a dead one neither reads nor compiles litequeue.py again, so an edit of
        the file (here, one that would not even import) does not reach a running
        worker until it is restarted."""
        proj = Project(tmp_path / "vendored", vendored=True)
        a = workers.start(proj, cmd=[sys.executable, "litequeue.py", "worker", proj.db,
                                     "-A", "tasks", "-c", "1", "-l", "INFO"])
        assert proj.delay("add", 2, 3).get(timeout=20) == 5
        (proj.dir / "litequeue.py").write_text("raise SystemExit('an edited litequeue.py')\n")
        (child,) = a.live_children()
        os.kill(child["pid"], signal.SIGKILL)
        wait_until(lambda: [c for c in a.live_children() if c["pid"] != child["pid"]], 20,
                   "a new child to replace the killed one")
        assert proj.delay("add", 4, 5).get(timeout=20) == 9
        assert "an edited litequeue.py" not in a.log.read_text()

    @pytest.mark.worker
    def test_sigkill_of_the_whole_supervisor_mid_task(self, project, workers):
        a = workers.start(project, concurrency=2)
        results = [project.delay("block", name) for name in ("s1", "s2")]
        wait_until(lambda: project.started("s1") and project.started("s2"), 10,
                   "both block tasks to start")
        a.killpg(signal.SIGKILL)
        assert a.wait(10) == -signal.SIGKILL
        wait_until(lambda: not group_members(a.pgid), 10, "the killed workers to be gone")
        assert [project.state(r.id) for r in results] == [STARTED, STARTED]  # orphaned
        status = lq("status", project.db, cwd=project.dir)
        assert f"{a.id} pid {a.pid}" in status.stdout and "DEAD" in status.stdout, status.stdout

        for name in ("s1", "s2"):
            project.go(name)
        restarted_at = time.monotonic()
        workers.start(project, concurrency=2)
        for r in results:
            r.get(timeout=30)
        latency = time.monotonic() - restarted_at
        assert latency < 15, f"rescued after {latency:.1f} s (the lease is 300 s)"
        for r in results:
            assert (r.state, r.retries) == (SUCCESS, 1)
        assert [len(project.started(name)) for name in ("s1", "s2")] == [2, 2]
        # The dead supervisor and its children are no longer listed.
        ids = {row[0] for row in sql(project.db, "SELECT id FROM workers")}
        assert a.id not in ids and not ({c["id"] for c in a.children()} & ids)

    @pytest.mark.worker
    def test_a_live_worker_is_never_rescued_however_long_its_task_runs(self, project, workers):
        """A held lock always means a live worker: there is no lease to run out (the
        retired worker_lease setting is accepted and ignored)."""
        settings = {"worker_lease": 1.0}
        a = workers.start(project, concurrency=1, settings=settings)
        r = project.delay("block", "long")
        wait_until(lambda: project.started("long"), 10, "block to start")
        b = workers.start(project, concurrency=1, settings=settings)
        # A negative check needs a window: several rescue rounds (every 2 s).
        window = time.monotonic() + 5
        wait_until(lambda: len(project.started("long")) > 1 or time.monotonic() > window,
                   10, "the window to pass")
        assert len(project.started("long")) == 1, "a live worker's running task was rescued"
        assert len(a.live_children()) == 1 and len(b.live_children()) == 1
        project.go("long")
        assert r.get(timeout=20) == "long"
        assert r.retries == 0

    @pytest.mark.worker
    def test_sigkill_of_the_supervisor_only(self, project, workers):
        a = workers.start(project, concurrency=2)
        r = project.delay("block", "orphan")
        (_, busy_pid), = wait_until(lambda: project.started("orphan"), 10, "block to start")
        (idle_pid,) = [c["pid"] for c in a.children() if c["pid"] != busy_pid]
        queued = [project.delay("add", n, n) for n in range(5)]
        wait_until(lambda: all(project.state(q.id) == SUCCESS for q in queued), 10,
                   "the idle child to run the adds")
        queued += [project.delay("add", n, n) for n in range(5, 8)]
        a.signal(signal.SIGKILL)
        assert a.wait(10) == -signal.SIGKILL
        # The idle orphan exits at once; the busy one keeps running its task.
        wait_until(lambda: not alive(idle_pid), 5, "the idle orphaned child to exit")
        assert alive(busy_pid)

        workers.start(project, concurrency=1)
        assert project.state(r.id) == STARTED        # its owner lives: nobody steals it
        project.go("orphan")
        assert r.get(timeout=20) == "orphan"
        assert project.started("orphan") == [(1, busy_pid)]  # finished by the orphan, once
        assert r.retries == 0
        wait_until(lambda: not alive(busy_pid), 15, "the orphaned child to exit")
        assert [q.get(timeout=20) for q in queued] == [0, 2, 4, 6, 8, 10, 12, 14]
        assert all(q.retries == 0 for q in queued)
        # The new supervisor notices the dead one (its lock is free) and drops it.
        wait_until(lambda: not sql(project.db, "SELECT 1 FROM workers WHERE id = ?", a.id), 15,
                   "the dead supervisor to leave the workers table")
        assert sql(project.db, "SELECT count(*) FROM tasks WHERE state != ?", SUCCESS) == [(0,)]

    @pytest.mark.worker
    @pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
    def test_warm_shutdown(self, project, workers, how):
        w = workers.start(project, concurrency=1)
        r = project.delay("block", "warm")
        wait_until(lambda: project.started("warm"), 10, "block to start")
        queued = [project.delay("add", n, 1) for n in range(3)]
        if how == "SIGTERM":
            w.signal(signal.SIGTERM)                 # kill PID
        else:
            w.killpg(signal.SIGINT)                  # Ctrl-C reaches the whole group
        wait_until(lambda: WARM_SHUTDOWN_LOG in w.log_text(), 10, "the warm shutdown to begin")
        assert w.proc.poll() is None                 # waiting for the running task
        project.go("warm")
        assert w.wait(20) == 0
        assert (r.state, r.result) == (SUCCESS, "warm")
        assert [project.state(q.id) for q in queued] == [PENDING] * 3   # never started
        assert sql(project.db, "SELECT count(*) FROM workers") == [(0,)]
        wait_until(lambda: not group_members(w.pgid), 10, "no process left")

    @pytest.mark.worker
    def test_cold_shutdown_requeues_the_running_task(self, project, workers):
        w = workers.start(project, concurrency=1)
        r = project.delay("block", "cold")
        wait_until(lambda: project.started("cold"), 10, "block to start")
        queued = project.delay("add", 2, 3)
        w.signal(signal.SIGTERM)
        wait_until(lambda: WARM_SHUTDOWN_LOG in w.log_text(), 10, "the warm shutdown to begin")
        second = time.monotonic()
        w.signal(signal.SIGTERM)
        assert w.wait(10) == 1
        assert time.monotonic() - second < 5
        wait_until(lambda: not group_members(w.pgid), 10, "the killed children to be gone")
        row = project.row(r.id)
        # Requeued, and not charged to the task: the shutdown was not its fault.
        assert (row["state"], row["retries"], row["worker"]) == (PENDING, 0, None)
        assert project.state(queued.id) == PENDING

        project.go("cold")
        workers.start(project, concurrency=1)
        assert r.get(timeout=20) == "cold"
        assert len(project.started("cold")) == 2
        assert queued.get(timeout=20) == 5

    @pytest.mark.worker
    def test_grace_period_over_turns_cold(self, project, workers):
        w = workers.start(project, "--grace", "0.5", concurrency=1)
        r = project.delay("block", "grace")
        wait_until(lambda: project.started("grace"), 10, "block to start")
        w.signal(signal.SIGTERM)
        assert w.wait(15) == 1
        wait_until(lambda: not group_members(w.pgid), 10, "the killed child to be gone")
        row = project.row(r.id)
        assert (row["state"], row["retries"]) == (PENDING, 0)

    def test_priority_and_queues(self, project, here):
        w = here(project)
        record = project.app.tasks["tasks.record"]
        low = [record.apply_async([n]) for n in range(3)]
        high = [record.apply_async([10 + n], priority=5) for n in range(3)]
        mail = record.apply_async([20], queue="mail")
        elsewhere = record.apply_async([30], queue="elsewhere")
        # All are queued before the worker (of -Q default,mail) claims any.
        assert w.work(queues=("default", "mail")) == 7
        assert [r.get(timeout=20) for r in low + high + [mail]] == [0, 1, 2, 10, 11, 12, 20]
        (ledger,) = project.marks.glob("ledger.*")   # one child ran them, in this order:
        order = [int(line.split()[1]) for line in ledger.read_text().splitlines()]
        assert [n for n in order if n != 20] == [10, 11, 12, 0, 1, 2]
        assert project.state(elsewhere.id) == PENDING  # a queue nobody serves

    def test_the_child_loop_one_step_at_a_time(self, project, here, monkeypatch):
        """The child's one-iteration seam: each step() claims a batch or runs one row,
        outcomes wait for the next commit, and the batch doubles while tasks are fast.
        Driven in this process: opening a child installs no signal handler."""
        monkeypatch.setattr(litequeue, "_GROUP_COMMIT_WINDOW", 60.0)  # no timed commit
        w = here(project)
        tasks = w.loaded[0]
        results = [tasks.add.delay(n, n) for n in range(3)]
        child = w.child()
        child._open()
        try:
            trace = []
            for _ in range(5):
                going = child.step()
                trace.append([going, len(child.pending.claimed), len(child.pending.outcomes)])
            child.stopping = True
            trace.append([child.step(), len(child.pending.claimed),
                          len(child.pending.outcomes)])
        finally:
            child.close()
        assert trace == [[True, 1, 0],     # claimed a batch of 1
                         [True, 0, 1],     # ran it; its outcome waits
                         [True, 2, 0],     # committed it, claimed 2 (the batch doubled)
                         [True, 1, 1],     # ran one
                         [True, 0, 2],     # ran the other
                         [False, 0, 0]], trace   # stopping: committed both, and out
        assert [r.get(timeout=5) for r in results] == [0, 2, 4]
        assert sql(project.db, "SELECT count(*) FROM workers") == [(0,)]

    @staticmethod
    def _claimers(storage, *names):
        now = time.time()
        for pid, worker in enumerate(names, 100):     # only registered workers claim
            storage.register_worker({"id": worker, "parent": None, "hostname": "h",
                                     "pid": pid, "queues": "default", "concurrency": 1,
                                     "started_at": now})

    def test_a_claim_takes_a_fair_share_of_the_ready_rows(self, project):
        """One of a worker's 2 processes takes ceil(ready / 2) rows, however large its
        batch, so the first process a burst wakes leaves the other its half."""
        results = [project.delay("add", i, i) for i in range(10)]
        storage = litequeue._Storage(project.db)
        try:
            self._claimers(storage, "first", "second")
            storage.claim_share = 2
            taken = [len(storage.complete_and_claim([], worker, 1, time.time(), "default",
                                                    64)[0])
                     for worker in ("first", "second", "first", "second", "first")]
            assert taken == [5, 3, 1, 1, 0]
            storage.claim_share = 1       # a worker of one process takes what it asks for
            assert sql(project.db, "SELECT count(*) FROM tasks WHERE state = 'STARTED'") \
                == [(10,)]
        finally:
            storage.close()
        assert len(results) == 10

    def test_a_due_eta_row_is_claimed_as_it_stands(self, project):
        """A child claims a SCHEDULED row whose eta has come without waiting for the
        supervisor to promote it; not one that is still ahead, nor one in a paused
        queue."""
        due = project.app.tasks["tasks.add"].apply_async((1, 2), countdown=0.05)
        ahead = project.app.tasks["tasks.add"].apply_async((3, 4), countdown=3600)
        (eta,), = sql(project.db, "SELECT eta FROM tasks WHERE id = ?", due.id)
        wait_until(lambda: time.time() > eta, 5, "the eta to pass")
        assert project.state(due.id) == SCHEDULED
        storage = litequeue._Storage(project.db)
        try:
            self._claimers(storage, "w")
            lq_here("pause", project.db, "default", cwd=project.dir)
            rows = storage.complete_and_claim([], "w", 1, time.time(), "default", 16).rows
            assert rows == []
            lq_here("resume", project.db, "default", cwd=project.dir)
            rows = storage.complete_and_claim([], "w", 1, time.time(), "default", 16).rows
            assert [(r.id, r.attempt) for r in rows] == [(due.id, 1)]
            assert (project.state(due.id), project.state(ahead.id)) == (STARTED, SCHEDULED)
        finally:
            storage.close()

    def test_fencing_rejects_a_stale_completion(self, project):
        """Internal invariant: a rescued task's zombie cannot overwrite the real result."""
        result = project.delay("add", 1, 1)
        storage = litequeue._Storage(project.db)
        try:
            now = time.time()
            for worker, pid in (("zombie", 111), ("heir", 222)):   # only registered ones claim
                storage.register_worker({"id": worker, "parent": None, "hostname": "h",
                                         "pid": pid, "queues": "default", "concurrency": 1,
                                         "started_at": now})
            def commit(outcomes, worker, pid, n=0):
                return storage.complete_and_claim(outcomes, worker, pid, now, "default", n)
            (first,), rejected, _ = commit([], "zombie", 111, 1)
            seq, task_id, _, _, attempt, *_ = first
            assert (task_id, attempt, rejected) == (result.id, 1, 0)
            # The zombie's worker is found dead: its row goes back to the queue.
            assert storage.rescue("zombie", None, None, now)[:2] == (1, 0)
            (second,) = commit([], "heir", 222, 1).rows
            assert (second[0], second[4]) == (seq, 2)

            zombie = litequeue._Outcome(SUCCESS, pack("zombie"), seq=seq, attempt=attempt, tag="")
            assert commit([zombie], "zombie", 111).rejected == 1
            # Right attempt number, wrong worker: rejected too.
            forged = litequeue._Outcome(SUCCESS, pack("forged"), seq=seq, attempt=2, tag="")
            assert commit([forged], "zombie", 111).rejected == 1
            row = project.row(result.id)
            assert (row["state"], row["result"], row["worker"]) == (STARTED, None, "heir")

            heir = litequeue._Outcome(SUCCESS, pack(2), seq=seq, attempt=2, tag="")
            assert commit([heir], "heir", 222).rejected == 0
            rejected = commit([zombie], "zombie", 111).rejected
            assert rejected == 1                     # still rejected after the result
        finally:
            storage.close()
        assert (result.get(timeout=5), result.state) == (2, SUCCESS)

    @pytest.mark.worker
    def test_wake_up_without_the_fallback(self, project, workers):
        w = workers.start(project, "--poll-interval", "60", concurrency=1)
        assert project.delay("add", 1, 1).get(timeout=10) == 2   # it has been busy, now idle
        latencies = []
        for n in range(3):
            started = time.monotonic()
            assert project.delay("add", n, n).get(timeout=10) == 2 * n
            latencies.append(time.monotonic() - started)
        # The issue asks for "a few seconds"; 1 s is stricter on purpose: the supervisor
        # also rings every child every 2 s, which would satisfy 3 s with no doorbell at all.
        assert max(latencies) < 1.0, latencies
        assert w.proc.poll() is None

    @pytest.mark.worker
    def test_one_ring_for_two_rows_starts_both_children(self, project, workers):
        """A producer rings the pool socket the children share, once: a group queued in
        one commit starts on both children at once, with no fallback poll to help. The
        one datagram wakes whichever child reads it first; a sibling that wakes after it
        was read finds nothing and sleeps on, so the child that claims passes the ring on
        when rows are left. Before it did, the second child joined a burst only at its
        next poll or the supervisor's periodic ring, up to 2 s later."""
        w = workers.start(project, "--poll-interval", "60", concurrency=2)
        for n in range(4):           # alternately one idle child, then two, then one
            names = [f"g{n}a", f"g{n}b"]
            if n == 3:
                # A quiet second first: the children's fallback poll has backed off to
                # about a second, so only a ring can start the second task in time.
                quiet = time.monotonic() + 1.2
                wait_until(lambda: time.monotonic() > quiet, timeout=5, message="quiet")
            result = group(project.app.tasks["tasks.block"].s(name) for name in names).delay()
            wait_until(lambda: all(project.started(name) for name in names), timeout=0.5,
                       message="both tasks of a group started, one per child")
            assert {pid for name in names for _, pid in project.started(name)} == \
                {c["pid"] for c in w.children()}
            for name in names:
                project.go(name)
            assert result.get(timeout=10) == names

    @pytest.mark.worker
    def test_a_busy_child_does_not_take_the_ring_meant_for_its_idle_sibling(
            self, project, workers):
        w = workers.start(project, "--poll-interval", "60", concurrency=2)
        busy = project.delay("block", "busy")
        wait_until(lambda: project.started("busy"), message="the first child busy")
        for n in range(3):
            started = time.monotonic()
            assert project.delay("add", n, n).get(timeout=10) == 2 * n
            assert time.monotonic() - started < 1.0       # the sibling took it at once
        project.go("busy")
        assert busy.get(timeout=10) == "busy"
        assert w.proc.poll() is None

    def test_bad_task_rows_fail_saying_what_is_wrong(self, project, here):
        w = here(project)
        assert w.work() == 0        # it creates the file, as a worker process starting does
        ids = insert_raw(project.db, [(name, payload) for name, payload, _, _ in BAD_ROWS])
        (good_id,) = insert_raw(project.db, [("tasks.add", pack({"args": [4, 4]}))])
        assert w.work() == len(BAD_ROWS) + 1
        w.close()               # this process reads them as one that never imported tasks.py
        assert "tasks" not in sys.modules
        good = project.app.AsyncResult(good_id)
        assert good.get(timeout=20) == 8
        for task_id, (name, _, exc_type, message) in zip(ids, BAD_ROWS):
            result = project.app.AsyncResult(task_id)
            assert result.state == FAILURE, (name, message)
            assert isinstance(result.result, exc_type), (message, result.result)
            assert message in str(result.result)
            with pytest.raises(exc_type):
                result.get(timeout=5)

    @pytest.mark.worker
    def test_bad_task_rows_fail_and_the_worker_keeps_serving(self, project, workers):
        """The rows of test_bad_task_rows_fail_saying_what_is_wrong, served by a worker
        process: they all fail, and none of them crashes its child."""
        w = workers.start(project, concurrency=1)
        ids = insert_raw(project.db, [(name, payload) for name, payload, _, _ in BAD_ROWS])
        (good_id,) = insert_raw(project.db, [("tasks.add", pack({"args": [4, 4]}))])
        assert project.app.AsyncResult(good_id).get(timeout=20) == 8
        assert [project.state(i) for i in ids] == [FAILURE] * len(ids)
        # One child served them all: none of these crashed it.
        (child,) = w.children()
        assert {project.row(i)["pid"] for i in ids + [good_id]} == {child["pid"]}
        assert w.proc.poll() is None

    @pytest.mark.worker
    @pytest.mark.parametrize("how, ended", [("sigkill", "signal 9"), ("exit", "exit code 1"),
                                            ("segfault", "signal 11")])
    def test_task_that_kills_its_process_fails_after_its_retry_budget(self, project, workers,
                                                                      how, ended):
        w = workers.start(project, concurrency=1)
        project.delay("block", "gate")
        wait_until(lambda: project.started("gate"), 10, "block to start")
        # Fast tasks around it, so it sits in a prefetched batch: only it is charged.
        record = project.app.tasks["tasks.record"]
        before = [record.delay(n) for n in range(20)]
        r = project.delay("die", how)
        after = [record.delay(n) for n in range(20, 40)]
        project.go("gate")
        exc = r.get(timeout=60, propagate=False)
        assert isinstance(exc, WorkerLostError), exc
        assert "died" in str(exc) and ended in str(exc), str(exc)
        assert (r.state, r.retries) == (FAILURE, 3)
        with pytest.raises(WorkerLostError):
            r.get(timeout=5)
        runs = list(project.marks.glob(f"die.{r.id}.*"))
        assert len(runs) == 4                        # task_max_retries=3: four runs at most
        # Each death is a failed attempt in the error history, with a clear message.
        assert len(r.errors) == 4
        for error in r.errors:
            assert error["type"] == "litequeue.WorkerLostError", error
            assert "died" in error["message"] and ended in error["message"], error
        # The worker kept serving, and the tasks around it were neither charged nor rerun
        # (results finished before a task of unknown duration are committed before it).
        assert [q.get(timeout=20) for q in before + after] == list(range(40))
        assert all(q.retries == 0 for q in before + after)
        ledger = collections.Counter(line.split()[0] for path in project.marks.glob("ledger.*")
                                     for line in path.read_text().splitlines())
        assert all(ledger[q.id] == 1 for q in before + after), ledger
        wait_until(lambda: len(w.live_children()) == 1, 15, "one live child")
        assert w.proc.poll() is None

    @pytest.mark.worker
    def test_a_dying_task_s_own_retry_budget_applies(self, project, workers):
        """die_once has max_retries=1: two runs, then FAILURE."""
        w = workers.start(project, concurrency=1)
        r = project.delay("die_once", "segfault")
        assert isinstance(r.get(timeout=30, propagate=False), WorkerLostError)
        assert (r.state, r.retries, len(r.errors)) == (FAILURE, 1, 2)
        assert len(list(project.marks.glob(f"die.{r.id}.*"))) == 2
        assert project.delay("add", 1, 1).get(timeout=20) == 2
        assert w.proc.poll() is None

    def test_task_raising_a_base_exception_does_not_loop(self, project, here):
        w = here(project)
        r = project.delay("interrupt")
        after = project.delay("add", 3, 3)

        def runs():
            return len(list(project.marks.glob(f"interrupt.{r.id}.*")))
        try:
            w.work()
        except KeyboardInterrupt:       # the task's, let out: it would end this test run
            pytest.fail("the task's KeyboardInterrupt escaped the worker child")
        assert runs() <= 4, f"ran {runs()} times and is {r.state}"
        assert r.state == FAILURE
        assert after.get(timeout=20) == 6

    # -- bad input and round trips (issue 4) ------------------------------------------------

    def test_arguments_of_every_supported_type_round_trip_through_a_worker(self, project,
                                                                           here):
        w = here(project)
        echo = project.app.tasks["tasks.echo"]
        checked = []

        @hsettings(max_examples=100, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))
        @given(args=st.lists(msgpack_values(), max_size=4),
               kwargs=st.dictionaries(st.text(), msgpack_values(), max_size=3))
        def round_trip(args, kwargs):
            result = echo.apply_async(args, kwargs)
            assert w.work() == 1
            got_args, got_kwargs = result.get(timeout=20)
            assert same(args, got_args), (args, got_args)
            assert same(kwargs, got_kwargs), (kwargs, got_kwargs)
            checked.append(args)
        round_trip()
        assert len(checked) >= 50

    def test_fuzzed_envelopes_fail_cleanly(self, project, here):
        """Arbitrary bytes, msgpack values and SQLite values as the payload of a registered
        task (fail(message), which fails on any good call too): each row ends FAILURE with
        a message that says what is wrong."""
        w = here(project)
        assert w.work() == 0        # it creates the file, as a worker process starting does
        payloads = fuzzed_payloads()
        ids = insert_raw(project.db, [("tasks.fail", p) for p in payloads])  # one transaction
        good = project.delay("add", 20, 22)                       # queued after them all
        assert w.work() == len(ids) + 1
        w.close()               # this process reads them as one that never imported tasks.py
        assert "tasks" not in sys.modules
        assert good.get(timeout=60) == 42
        states = dict(sql(project.db, "SELECT id, state FROM tasks"))
        assert collections.Counter(states[i] for i in ids) == {FAILURE: len(ids)}
        wrong, problems = [], collections.Counter()
        for task_id, payload in zip(ids, payloads):
            exc = project.app.AsyncResult(task_id).result
            problem = envelope_problem(payload)
            problems[problem or "valid envelope"] += 1
            if problem:
                ok = type(exc) is ValueError and \
                    str(exc).startswith("invalid task payload: ") and problem in str(exc)
            else:                                 # a bad call, or fail() raising as it should
                ok = isinstance(exc, TypeError) or \
                    (isinstance(exc, RemoteError) and exc.exc_type == "tasks.TaskFailed")
            if not ok:
                wrong.append((payload, problem, exc))
        print(f"{len(payloads)} fuzzed payloads: {dict(problems)}")
        assert not wrong, f"{len(wrong)} unclear failure(s), e.g. {wrong[:3]}"

    @pytest.mark.worker
    def test_fuzzed_envelopes_leave_the_worker_serving(self, project, workers):
        """Payloads as test_fuzzed_envelopes_fail_cleanly's, served by a worker process:
        they all fail, and its processes all survive them."""
        w = workers.start(project, concurrency=1)
        (child,) = w.children()
        payloads = fuzzed_payloads()
        ids = insert_raw(project.db, [("tasks.fail", p) for p in payloads])  # one transaction
        good = project.delay("add", 20, 22)                       # queued after them all
        assert good.get(timeout=60) == 42
        states = dict(sql(project.db, "SELECT id, state FROM tasks"))
        assert collections.Counter(states[i] for i in ids) == {FAILURE: len(ids)}
        # Nothing died: the same supervisor and child, serving.
        assert w.proc.poll() is None and w.live_children() == [child]
        assert project.row(good.id)["pid"] == child["pid"]

    def test_exceptions_that_cannot_be_rebuilt_come_back_as_remote_errors(self, project,
                                                                         here):
        w = here(project)
        cases = {
            project.delay("picky"): ("tasks.Picky", "1-2", "raise Picky(1, 2)"),
            project.delay("fail", "boom"): ("tasks.TaskFailed", "boom",
                                            "raise TaskFailed(message)"),
            project.delay("unprintable"): ("tasks.Unprintable", "<unprintable Unprintable>",
                                           'raise Unprintable("hidden")'),
            project.delay("unencodable_error"): ("tasks.TaskFailed", "{1, 2}",
                                                 "raise TaskFailed({1, 2})"),
        }
        assert w.work() == 4
        # A reader that has imported tasks.py (this process, while the worker's modules
        # are loaded in it) rebuilds the types it can, and only those.
        ids = [r.id for r in cases]
        out = read_errors(w.loaded[0].app, ids)
        assert [out[i]["type"] for i in ids] == [
            "litequeue.RemoteError", "tasks.TaskFailed", "tasks.Unprintable",
            "litequeue.RemoteError"]
        assert out[ids[0]]["exc_type"] == "tasks.Picky"              # constructor refused
        assert out[ids[3]]["exc_message"] == "{1, 2}"                # args not stored
        assert all(out[i]["traceback"] for i in ids)
        # Without tasks.py imported (it leaves this process with the worker), a reader
        # rebuilds none of them.
        w.close()
        assert "tasks" not in sys.modules
        for r, (exc_type, message, line) in cases.items():
            exc = r.get(timeout=20, propagate=False)
            assert isinstance(exc, RemoteError), exc
            assert (exc.exc_type, exc.exc_message) == (exc_type, message)
            assert str(exc) == f"{exc_type}: {message}"
            assert "Traceback" in exc.remote_traceback and line in exc.remote_traceback
            assert r.state == FAILURE and r.traceback == exc.remote_traceback
            with pytest.raises(RemoteError):                     # never hidden
                r.get(timeout=5)


class TestPriorityOrder:

    def test_every_higher_priority_task_runs_before_any_lower_one(self, project, here):
        record = project.app.tasks["tasks.record"]
        low = [record.apply_async([n], priority=0) for n in range(6)]
        high = [record.apply_async([100 + n], priority=9) for n in range(6)]
        assert here(project).work() == 12       # all 12 are queued before it starts
        assert [r.get(timeout=20) for r in low + high] == \
            list(range(6)) + list(range(100, 106))
        (ledger,) = project.marks.glob("ledger.*")  # one child ran them, in this order
        order = [int(line.split()[1]) for line in ledger.read_text().splitlines()]
        assert sorted(order[:6]) == list(range(100, 106)), f"run order: {order}"
        assert sorted(order[6:]) == list(range(6)), f"run order: {order}"
