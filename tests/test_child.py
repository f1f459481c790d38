"""The worker child: what it costs when idle, how it holds claimed rows beside a long
task, and when its counters reach the file. Real worker processes on real files, but for
a claim that needs no process (a child in the test process, here)."""

import os
import shutil
import subprocess
import time

import pytest

import litequeue
from litequeue import LiteQueue, group

from .helpers import lq, sql, task_source, wait_until

pytestmark = pytest.mark.timeout(300)

# Tasks that run off the child's main thread (coroutines, -P threads) and a slow one.
BURSTS = task_source("bursts.py")


def producer(db, module, *names):
    """An app in this process with stand-ins for module's tasks (a producer that does
    not import the module, as a web process often does not)."""
    app = LiteQueue(db)
    for name in names:
        def stand_in(*args, **kwargs):
            raise AssertionError("runs only in a worker")
        stand_in.__module__, stand_in.__qualname__ = module, name
        stand_in.__name__ = name
        app.task(stand_in)
    return app


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def trace_child(pid, seconds):
    """(write-lock requests, share of a core used) of a process over `seconds`. strace
    counts every fcntl that asks for a write lock (SQLite's write transaction takes one
    on the WAL index); `timeout` ends strace with SIGINT, and it detaches."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.fail("strace is needed to count a process's write locks (apt-get install strace)")
    before = cpu_seconds(pid)
    started = time.monotonic()
    proc = subprocess.Popen(["timeout", "-s", "INT", str(seconds), strace, "-f", "-qq",
                             "-e", "trace=fcntl", "-p", str(pid)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=seconds + 30)
    elapsed = time.monotonic() - started
    return out.count("F_WRLCK"), (cpu_seconds(pid) - before) / elapsed


@pytest.mark.worker
@pytest.mark.parametrize("pool", ["coroutines", "threads"])
def test_an_idle_worker_after_bursts_uses_no_cpu_and_takes_no_write_lock(
        project, workers, pool):
    """A worker idle all night after bursts of coroutine (or -P threads) tasks must sleep:
    no CPU to speak of and not one write transaction, over several seconds. (A lost
    hand-off between the runner threads and the main thread used to leave it spinning at
    a full core, taking the write lock hundreds of times a second.)"""
    project.write_module("bursts", BURSTS)
    if pool == "coroutines":
        worker = workers.start(project, "--async-concurrency", "500", app=("bursts",))
        task, n = "nap", 3000
    else:
        worker = workers.start(project, "-P", "threads", concurrency=20, app=("bursts",),
                               ready=False)
        wait_until(lambda: worker.supervisor_row(), 30, "the threads worker to register")
        worker.id = worker.supervisor_row()
        wait_until(lambda: worker.live_children(), 30, "its process to start")
        task, n = "tnap", 600
    app = producer(project.db, "bursts", task)
    for _ in range(3):
        results = group(app.tasks[f"bursts.{task}"].s(0.001 * (i % 7))
                        for i in range(n)).delay()
        results.get(timeout=120)
    child = worker.live_children()[0]["pid"]
    # Its counters reach the file within a second of the last task (its last write);
    # from then on it must be quiet.
    wait_until(lambda: sql(project.db, "SELECT sum(succeeded) FROM stats")[0][0] == 3 * n,
               10, "the child's counters to be written")
    locks, cpu = trace_child(child, 4)
    assert locks == 0, f"the idle child asked for the write lock {locks} times in 4 s"
    assert cpu < 0.02, f"the idle child used {cpu:.1%} of a core"


@pytest.mark.worker
def test_rows_claimed_beside_a_long_task_are_handed_back_while_it_runs(project, workers):
    """-c 2: fast tasks grow the claim batch, then a slow task is claimed among no-ops.
    The no-ops must not wait for the slow task: the idle sibling runs them while it runs.
    Meanwhile status, inspect and the Flower API tell running from reserved."""
    project.write_module("bursts", BURSTS)
    workers.start(project, concurrency=2, app=("bursts",))
    app = producer(project.db, "bursts", "noop", "slow")
    noop, slow = app.tasks["bursts.noop"], app.tasks["bursts.slow"]
    group(noop.s(i) for i in range(300)).delay().get(timeout=60)    # the batch grows
    gate = str(project.dir / "gate")
    before = [noop.delay(i) for i in range(200)]
    long = slow.delay(gate)
    after = [noop.delay(i) for i in range(200)]
    wait_until(lambda: os.path.exists(gate + ".started"), 30, "the slow task to start")
    # Every no-op ends while the slow one still runs (it waits for its gate file).
    wait_until(lambda: all(r.ready() for r in before + after), 20,
               lambda: f"{sum(not r.ready() for r in before + after)} no-ops still waiting "
                       f"beside the slow task")
    assert not long.ready()
    # Only the slow task is running now: nothing is claimed beside it.
    active = lq("inspect", project.db, "active", cwd=project.dir)
    assert active.returncode == 0, active.stderr
    assert long.id in active.stdout and "bursts.noop" not in active.stdout
    open(gate + ".go", "w").close()
    assert long.get(timeout=30) == "slow done"


@pytest.mark.worker
def test_reserved_rows_are_told_apart_from_running_ones(project, workers):
    """Rows a child has claimed but not begun are 'reserved' (Celery's inspect reserved),
    not 'running' or 'active': in inspect, status and the Flower API's workers."""
    project.write_module("bursts", BURSTS)
    # No worker yet: the rows are claimed by hand as a child would claim them, beside a
    # running row the child's lock file names.
    app = producer(project.db, "bursts", "noop")
    rows = [app.tasks["bursts.noop"].delay(i) for i in range(3)]
    storage = app._storage()
    side = litequeue._SideDir(project.db)
    worker_id = litequeue._new_worker_id()
    storage.register_worker({"id": "sup-x", "parent": None, "hostname": "h", "pid": os.getpid(),
                             "queues": "default", "concurrency": 1, "started_at": time.time()})
    storage.register_worker({"id": worker_id, "parent": "sup-x", "hostname": "h",
                             "pid": os.getpid(), "queues": "default", "concurrency": 1,
                             "started_at": time.time()})
    claimed, _, _ = storage.complete_and_claim([], worker_id, os.getpid(), time.time(),
                                            "default", 3)
    assert len(claimed) == 3
    lock = litequeue._WorkerLock(side, worker_id)
    try:
        lock.executing(claimed[0].seq)
        sup = app.admin.workers()[0]
        child = sup["children"][0]
        assert [t[0] for t in child["running"]] == [rows[0].id]
        assert sorted(t[0] for t in child["reserved"]) == sorted(r.id for r in rows[1:])
        # The CLI reads the lock file from another process.
        active = lq("inspect", project.db, "active", cwd=project.dir)
        reserved = lq("inspect", project.db, "reserved", cwd=project.dir)
        assert rows[0].id in active.stdout and rows[1].id not in active.stdout
        assert rows[1].id in reserved.stdout and rows[2].id in reserved.stdout
        assert rows[0].id not in reserved.stdout
        status = lq("status", project.db, cwd=project.dir)
        assert "2 reserved" in status.stdout, status.stdout
    finally:
        lock.release()


@pytest.mark.worker
def test_counters_reach_the_file_while_a_long_task_runs(project, workers):
    """Failures counted just before a long task are in the stats table within seconds,
    not when the long task ends."""
    project.write_module("bursts", BURSTS)
    worker = workers.start(project, concurrency=1, app=("bursts",))
    app = producer(project.db, "bursts", "fail", "slow")
    gate = str(project.dir / "gate")
    fails = [app.tasks["bursts.fail"].delay(i) for i in range(30)]
    long = app.tasks["bursts.slow"].delay(gate)
    wait_until(lambda: os.path.exists(gate + ".started"), 30, "the slow task to start")
    assert all(r.ready() for r in fails)

    def counted():
        rows = sql(project.db, "SELECT sum(failed) FROM stats WHERE name = 'bursts.fail'")
        return rows[0][0] == 30
    wait_until(counted, 5, lambda: "30 failures in the stats table while the slow task runs: "
               f"{sql(project.db, 'SELECT sum(failed) FROM stats')}")
    totals = sql(project.db, "SELECT failed FROM workers WHERE parent IS NOT NULL")
    assert totals == [(30,)]
    # With nothing left to write, the child's watch thread sleeps while the task runs on.
    child = worker.live_children()[0]["pid"]
    before, started = cpu_seconds(child), time.monotonic()
    wait_until(lambda: time.monotonic() - started > 2, 5, "two seconds to pass", interval=0.2)
    used = (cpu_seconds(child) - before) / (time.monotonic() - started)
    assert used < 0.05, f"the child used {used:.0%} of a core while its task slept"
    assert not long.ready()
    open(gate + ".go", "w").close()
    long.get(timeout=30)


def spawned_children(pid):
    """Pids of a supervisor's live worker children (multiprocessing's spawn_main)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] not in "ZX" and b"spawn_main" in cmdline:
                found.append(int(entry))
    return found


@pytest.mark.worker
def test_children_killed_as_they_start_never_hang_the_supervisor(project, workers):
    """A child SIGKILLed before it has read what its supervisor sends it at start must not
    leave the supervisor blocked writing to it: it goes on restarting children, runs
    tasks, and stops on SIGTERM."""
    project.write_module("bursts", BURSTS)
    worker = workers.start(project, concurrency=1, app=("bursts",))
    killed = set()
    deadline = time.monotonic() + 20
    while len(killed) < 5 and time.monotonic() < deadline:
        for pid in spawned_children(worker.pid):
            if pid not in killed:
                os.kill(pid, 9)
                killed.add(pid)
    assert len(killed) >= 5, \
        f"the supervisor started no child after {len(killed)} were killed as they started"
    app = producer(project.db, "bursts", "noop")
    assert app.tasks["bursts.noop"].delay(7).get(timeout=60) == 7
    worker.signal(15)
    assert worker.wait(30) == 0


@pytest.mark.worker
def test_coroutines_do_not_wait_behind_a_sync_row_that_waits_for_a_thread(project, workers):
    """-P threads with one thread: a long sync task takes it, a second sync row waits for
    it; coroutine tasks claimed behind that row run at once on the event loop."""
    project.write_module("bursts", BURSTS)
    workers.start(project, "-P", "threads", concurrency=1, app=("bursts",))
    app = producer(project.db, "bursts", "anap", "slow", "noop")
    anap, slow, noop = (app.tasks[f"bursts.{n}"] for n in ("anap", "slow", "noop"))
    anap.delay(0).get(timeout=30)        # the child has seen coroutines come
    gate = str(project.dir / "gate")
    app.admin.pause("default")
    long = slow.delay(gate)
    waiting = noop.delay(1)
    naps = [anap.delay(0.01) for _ in range(3)]
    app.admin.resume("default")
    wait_until(lambda: os.path.exists(gate + ".started"), 30, "the slow task to start")
    wait_until(lambda: all(r.ready() for r in naps), 10,
               "the coroutines to end while the slow sync task holds the only thread")
    assert not long.ready() and not waiting.ready()
    open(gate + ".go", "w").close()
    assert waiting.get(timeout=30) == 1 and long.get(timeout=30) == "slow done"


LIMITED = task_source("limited.py")


def test_a_rate_limited_name_is_claimed_when_another_limited_name_has_nothing_waiting(
        project, here):
    """A child of one process claims one row at a time (-c 1): a limited name with nothing
    waiting (a, first in key order) must not take that place from b's waiting row."""
    project.write_module("limited", LIMITED)
    w = here(project, ("limited",))
    limited = w.loaded[0]
    # A worker's supervisor registers the names it serves as it starts: a's limit is in
    # the file, though no a was ever queued.
    limited.app._storage().upsert_registry(
        [task._registry_row(time.time()) for task in limited.app.tasks.values()])
    # Queued by the worker's own declaration of b (a stand-in app in this process would
    # also be taken for the worker's code).
    result = limited.b.delay(7)
    w.work_until(result.ready, 15, "b's row to be claimed and run")
    assert result.get(timeout=15) == 7
