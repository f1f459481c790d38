"""What an operator tells a running worker, from the CLI, Flower's API and the dashboard:
a warm shutdown, a bigger or smaller pool, a rate limit; and the CLI's schedule actions.

The requests are rows (the admin surface writes them, the supervisor acts on them when
rung or at its next rescan), so the in-process tests check the surface with held lock
files standing in for live workers, and the worker-marked ones check that a real worker
obeys, loses nothing and refuses a request that makes no sense.
"""
import signal
import time

import pytest

import litequeue
from litequeue import LitequeueError, UnknownWorker
from litequeue import SUCCESS

from .helpers import insert_schedule, lq, lq_here, sql, wait_until

pytestmark = pytest.mark.timeout(120)


def register(project, worker_id, pool="prefork", concurrency=2, hostname="box"):
    """A supervisor row and its lock file held by this process: a live worker to the
    admin surface, with no process behind it."""
    project.app._storage().register_worker({
        "id": worker_id, "parent": None, "hostname": hostname, "pid": 1, "queues": "default",
        "concurrency": concurrency, "started_at": time.time(), "pool": pool})
    return litequeue._WorkerLock(project.app._side, worker_id)


def asked(project, worker_id):
    return sql(project.db, "SELECT wanted, stop_asked FROM workers WHERE id = ?", worker_id)[0]


def test_the_admin_surface_records_requests_for_live_workers_only(project):
    project.delay("add", 1, 1)                              # creates the file
    admin = project.app.admin
    a1, b2, c3, dead = (litequeue._new_worker_id() for _ in range(4))
    locks = [register(project, a1, concurrency=2), register(project, b2, pool="threads"),
             register(project, c3, hostname="other")]
    try:
        # A registered worker whose lock is free is dead: no request reaches it.
        project.app._storage().register_worker({
            "id": dead, "parent": None, "hostname": "box", "pid": 1, "queues": "default",
            "concurrency": 1, "started_at": time.time(), "pool": "prefork"})
        assert admin.resize_pool(a1, 3) == {a1: 5}
        assert admin.resize_pool(f"box-{a1}", 1) == {a1: 6}  # counts the pending request
        assert admin.resize_pool(a1, -100) == {a1: 1}  # never below one process
        assert admin.resize_pool(a1, 10_000) == {a1: litequeue._POOL_MAX}
        with pytest.raises(LitequeueError, match="threads pool"):
            admin.resize_pool(b2, 1)
        with pytest.raises(UnknownWorker):
            admin.resize_pool(dead, 1)
        with pytest.raises(litequeue.WrongType):
            admin.resize_pool(a1, "2")
        # Every live prefork worker, none of the others.
        assert admin.resize_pool(None, -1) == {a1: litequeue._POOL_MAX - 1, c3: 1}
        assert asked(project, b2) == (None, None) and asked(project, dead) == (None, None)

        assert admin.shutdown_worker("other") == [c3]  # a hostname names its workers
        assert asked(project, c3)[1] is not None and asked(project, a1)[1] is None
        assert sorted(admin.shutdown_worker()) == sorted([a1, b2, c3])
        assert asked(project, dead)[1] is None
        with pytest.raises(UnknownWorker, match="no live worker named 'nosuch'"):
            admin.shutdown_worker("nosuch")
    finally:
        for lock in locks:
            lock.release()


def test_the_cli_runs_disables_and_enables_a_schedule(project):
    project.delay("add", 1, 1)
    insert_schedule(project.db, "nightly", next_fire=time.time() + 3600)
    out = lq_here("schedules", project.db, "--disable", "nightly", cwd=project.dir)
    assert (out.returncode, out.stdout) == (0, "periodic task nightly disabled\n")
    out = lq_here("schedules", project.db, "--disable", "nightly", cwd=project.dir)
    assert out.stdout == "periodic task nightly was already disabled\n"
    assert "DISABLED  disabled by an operator" in lq_here("schedules", project.db, cwd=project.dir).stdout
    out = lq_here("schedules", project.db, "--enable", "nightly", cwd=project.dir)
    assert out.stdout == "periodic task nightly enabled\n"
    out = lq_here("schedules", project.db, "--run", "nightly", cwd=project.dir)
    task_id = out.stdout.rsplit(" ", 1)[1].strip()
    assert out.stdout.startswith("queued nightly now: task ") and \
        project.state(task_id) == "PENDING"
    out = lq_here("schedules", project.db, "--run", "nope", cwd=project.dir)
    assert out.returncode == 1 and out.stderr == \
        "Error: no periodic task named 'nope' (known: nightly)\n"
    out = lq_here("schedules", project.db, "--run", "nightly", "--enable", "nightly", cwd=project.dir)
    assert out.returncode == 2 and "give one of --run, --disable and --enable" in out.stderr


def test_the_cli_sets_a_rate_limit_and_refuses_what_makes_no_sense(project):
    project.delay("add", 1, 1)
    out = lq_here("control", project.db, "rate_limit", "tasks.add", "10/m", cwd=project.dir)
    assert out.stdout == "task tasks.add rate-limited to 10/m\n"
    assert [r["rate"] for r in project.app.admin.rate_limits()] == ["10/m"]
    out = lq_here("control", project.db, "rate-limit", "tasks.add", "0", cwd=project.dir)
    assert out.stdout == "task tasks.add is not rate-limited\n"
    for args, error in [
            (("pool_grow", "x"), "N must be a whole number, not 'x'"),
            (("pool_shrink", "0"), "N must be 1 or more"),
            (("shutdown", "now"), "shutdown takes 0 argument(s), not 1"),
            (("rate_limit", "tasks.add"), "rate_limit takes 2 argument(s), not 1"),
            (("rate_limit", "tasks.add", "fast"), "rate"),
            (("shutdown", "-d", "nosuch"), "no live worker named 'nosuch'")]:
        out = lq_here("control", project.db, *args, cwd=project.dir)
        assert out.returncode in (1, 2) and error in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()[-1]) < 300
    out = lq_here("control", project.db, "shutdown", cwd=project.dir)
    assert (out.returncode, out.stdout) == (0, "no live worker to shut down\n")


@pytest.mark.worker
def test_a_pool_grows_and_shrinks_and_the_running_task_finishes(project, workers):
    w = workers.start(project, concurrency=2)
    out = lq("control", project.db, "pool_grow", "2", cwd=project.dir)
    assert out.stdout == f"worker {w.id}: pool of 4 processes asked\n"
    wait_until(lambda: len(w.live_children()) == 4, 20, "four children")
    assert sql(project.db, "SELECT concurrency, wanted FROM workers WHERE id = ?", w.id) == \
        [(4, None)]
    busy = project.delay("block", "shrink")
    wait_until(lambda: project.started("shrink"), 20, "block() to start")
    busy_pid = project.started("shrink")[0][1]
    out = lq("control", project.db, "pool_shrink", "3", "-d", w.id, cwd=project.dir)
    assert out.stdout == f"worker {w.id}: pool of 1 process asked\n"
    # The idle children go; the busy one stays, and nothing replaces those that went.
    wait_until(lambda: [c["pid"] for c in w.live_children()] == [busy_pid], 20,
               lambda: f"only the busy child left: {w.live_children()}")
    project.go("shrink")
    assert busy.get(timeout=20) == "shrink"
    assert project.delay("add", 2, 3).get(timeout=20) == 5
    assert [c["pid"] for c in w.live_children()] == [busy_pid]
    assert w.proc.poll() is None


@pytest.mark.worker
def test_a_shutdown_asked_from_flowers_api_is_warm(project, workers, dashboards):
    w = workers.start(project, concurrency=1)
    d = dashboards(project)
    busy = project.delay("block", "warm")
    wait_until(lambda: project.started("warm"), 20, "block() to start")
    workers_api = d.json("/api/workers")
    (name,) = workers_api
    assert d.json("/api/worker/pool/grow/nosuch", "POST", status=404)["error"]
    assert d.json(f"/api/worker/pool/grow/{name}?n=x", "POST", status=400)["error"]
    assert d.json(f"/api/worker/pool/grow/{name}?n=1", "POST")["workers"] == {w.id: 2}
    wait_until(lambda: len(w.live_children()) == 2, 20, "two children")
    assert d.json(f"/api/worker/shutdown/{name}", "POST")["workers"] == [w.id]
    wait_until(lambda: "an operator asked this worker to shut down" in w.log_text(), 20,
               "the worker to take the request")
    assert w.proc.poll() is None                      # the running task is not cut short
    project.go("warm")
    assert w.wait(30) == 0
    assert project.state(busy.id) == SUCCESS
    assert sql(project.db, "SELECT count(*) FROM workers") == [(0,)]


@pytest.mark.worker
def test_a_threads_pool_refuses_to_resize_and_a_bad_request_row_is_set_aside(project, workers):
    w = workers.start(project, "-P", "threads", concurrency=2, ready=False)
    wait_until(lambda: w.supervisor_row(), 20, "the worker to register")
    w.id = w.supervisor_row()
    out = lq("control", project.db, "pool_grow", "-d", w.id, cwd=project.dir)
    assert out.returncode == 1 and "threads pool, whose size is fixed" in out.stderr
    # Any client can write any value: the worker logs it, clears it and goes on.
    sql(project.db, "UPDATE workers SET wanted = 'lots' WHERE id = ?", w.id)
    project.app._sched_bell.ring()
    wait_until(lambda: sql(project.db, "SELECT wanted FROM workers WHERE id = ?", w.id) ==
               [(None,)], 20, "the bad request to be cleared")
    assert "ignored a pool size of 'lots' asked for a threads pool" in w.log_text()
    assert project.delay("add", 1, 2).get(timeout=20) == 3
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0


def test_app_control_and_inspect_answer_in_celerys_shape(project):
    """app.control and app.control.inspect(), as Celery programs call them: one answer
    per live worker, keyed by its name; None from inspect when no worker lives."""
    control = project.app.control
    assert control.inspect().ping() is None and control.ping() == []
    later = project.app.tasks["tasks.add"].apply_async([1, 2], countdown=60)
    worker_id = litequeue._new_worker_id()
    lock = register(project, worker_id, hostname="box")
    try:
        name = f"celery@box-{worker_id}"
        inspect = control.inspect()
        assert control.ping() == [{name: {"ok": "pong"}}] and inspect.ping() == {name: {"ok": "pong"}}
        assert inspect.active() == {name: []} and inspect.reserved() == {name: []}
        (scheduled,) = inspect.scheduled()[name]
        assert scheduled["request"]["id"] == later.id and scheduled["request"]["args"] == [1, 2]
        assert "tasks.add" in inspect.registered()[name]
        assert inspect.stats()[name]["pool"]["max-concurrency"] == 2
        assert control.inspect(destination=["celery@elsewhere"]).ping() is None
        assert control.rate_limit("tasks.add", "5/s") == [
            {name: {"ok": "new rate limit set successfully"}}]
        assert {r["name"]: r["rate"] for r in project.app.admin.rate_limits()} == \
            {"tasks.add": "5/s"}
        control.revoke([later.id])
        assert later.state == "REVOKED"
        assert control.shutdown() == [{name: {"ok": "shutdown requested"}}]
        assert asked(project, worker_id)[1] is not None
    finally:
        lock.release()


@pytest.mark.parametrize("spoiled", [None, "lots", 2**63 - 1])
def test_a_worker_keeps_the_counts_of_children_that_ended(project, spoiled):
    """A shrunk pool or a replaced child takes its row away; its counts go to its
    supervisor's row, so the worker's processed and failed never fall (and a counter
    another client spoiled is counted as 0, never an error)."""
    project.delay("add", 1, 1)                              # creates the file
    storage = project.app._storage()
    sup, child, other = (litequeue._new_worker_id() for _ in range(3))
    lock = register(project, sup)
    try:
        for worker_id in (child, other):
            storage.register_worker({
                "id": worker_id, "parent": sup, "hostname": "box", "pid": 1,
                "queues": "default", "concurrency": 1, "started_at": time.time(),
                "pool": None})
        sql(project.db, "UPDATE workers SET processed = 38, failed = 5 WHERE id = ?", child)
        sql(project.db, "UPDATE workers SET processed = 2, failed = 1 WHERE id = ?", other)
        if spoiled is not None:
            sql(project.db, "UPDATE workers SET processed = ? WHERE id = ?", spoiled, sup)
        storage.unregister_worker(child)                    # a shrunk pool's child ends
        storage.rescue(other, [], lambda *a: None, time.time())    # a dead child
        (row,) = [w for w in project.app.admin.workers() if w["id"] == sup]
        assert (row["processed"], row["failed"]) == (40, 6)
        assert row["children"] == []
    finally:
        lock.release()
