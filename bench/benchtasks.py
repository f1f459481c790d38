"""Task modules for bench.py: the same two tasks for litequeue and for huey's SqliteHuey.

bench.py imports this module in its own process and calls make_litequeue() / make_huey()
once per database. A worker imports it as ``-A benchtasks`` (litequeue) or
``benchtasks.huey`` (huey_consumer); the database path then comes from the environment.

- noop(i) returns its argument, so both systems store a result for every task (huey
  stores nothing for a task that returns None).
- stamp(i) returns time.time() read as its first statement: the moment the task started
  executing, measured alike in both systems (the ETA lateness measurement).

The canvas rows (chord, chain) compare litequeue with Celery on a real Redis broker and
result backend. make_litequeue_canvas() and make_celery() define the same tasks on both:

- endstamp(i), a chord's member: a no-op that returns time.time() read as its last
  statement, the moment its work ended (the result is stored after that).
- collect(values), a chord's body: reads time.time() as its first statement and returns
  [that start, max(values), len(values)]; start - max(values) is the gap between the last
  member's end and the body's start, measured by the tasks themselves in both systems.
- step(x), a chain's link: returns its input.
- noop(i), as above (Celery: the round trip and the chain's first task).

A Celery worker imports this module as ``-A benchtasks:celery_app``; the Redis URL comes
from the environment (CELERYBENCH_URL), and the drain row's mark directory from
CELERYBENCH_MARKS.

DBOS Transact (the peers' columns): make_dbos() registers noop(i) and chain(x, n) (a
workflow of n steps) as DBOS workflows, and the workflow rows' wf_tasks(x, n, poll) (n child
workflows, each enqueued and awaited) and wf_sleep(seconds) (DBOS.sleep);
bench/dbos_worker.py calls it and runs the queues, and the bench enqueues them by name
through a DBOSClient.

The concurrency rows (async, threads, ratelimit) add, on request only (make_litequeue_more,
make_huey_more, and on Celery make_celery(..., more=True)):

- asleep(i, seconds), a coroutine (litequeue): ``await asyncio.sleep(seconds)``, returns i.
- anoop(i), a coroutine (litequeue) that returns i at once: the claim + commit cost.
- block(i, seconds), a sync task: ``time.sleep(seconds)``, returns i. On huey's greenlet
  consumer time.sleep is gevent's (bench/huey_gevent.py monkey-patches first), so it
  yields as asleep does; on threads it blocks its thread.
- limited(i), rate_limit=RATE_LIMIT (litequeue and Celery): returns time.time() read as
  its first statement (its start, by the task's own clock).

A worker registers them only when LQBENCH_MORE (litequeue: which kinds, e.g. "async" or
"block,limited") or HUEYBENCH_MORE (huey) is set in its environment, so that the other
rows' workers run exactly the tasks they always ran: one coroutine task in a litequeue
worker puts its children on the path for coroutines, and one rate-limited task name in the
file makes every claim look at rate_limits.
"""

import os
import struct
import threading
import time

# The rate limit of limited() on litequeue and on Celery (the ratelimit rows).
RATE_LIMIT = "20/s"

_DOUBLE = struct.Struct("<d")


def make_litequeue(path, synchronous="NORMAL"):
    from litequeue import LiteQueue

    app = LiteQueue(path, synchronous=synchronous)

    @app.task(name="benchtasks.noop")
    def noop(i):
        return i

    @app.task(name="benchtasks.stamp")
    def stamp(i):
        return time.time()

    return app, noop, stamp


def make_litequeue_canvas(app):
    """Register the canvas tasks (endstamp, step, collect) on an app: a litequeue app made
    by make_litequeue(), or the Celery app of make_celery() (same decorator); returns them."""

    @app.task(name="benchtasks.endstamp")
    def endstamp(i):
        return time.time()

    @app.task(name="benchtasks.step")
    def step(x):
        return x

    @app.task(name="benchtasks.collect")
    def collect(values):
        started = time.time()
        return [started, max(values), len(values)]

    return endstamp, step, collect


def make_litequeue_more(app, kinds):
    """Register some of the concurrency rows' tasks on a litequeue app: kinds holds
    "async" (asleep, anoop), "block" and/or "limited". Returns {name: task}.

    Each row registers only its own kinds, on the producer and in the worker: a worker
    registers every task it serves in the file, so limited() anywhere would give the file
    a rate limit (every claim then looks at rate_limits), and one coroutine task puts a
    child's claims on the path for coroutines."""
    import asyncio
    kinds = set(kinds)
    unknown = kinds - {"async", "block", "limited"}
    if unknown:
        raise ValueError(f"unknown kinds of bench tasks: {sorted(unknown)}")
    made = {}
    if "async" in kinds:
        @app.task(name="benchtasks.asleep")
        async def asleep(i, seconds):
            await asyncio.sleep(seconds)
            return i

        @app.task(name="benchtasks.anoop")
        async def anoop(i):
            return i

        made.update(asleep=asleep, anoop=anoop)
    if "block" in kinds:
        @app.task(name="benchtasks.block")
        def block(i, seconds):
            time.sleep(seconds)
            return i

        made["block"] = block
    if "limited" in kinds:
        @app.task(name="benchtasks.limited", rate_limit=RATE_LIMIT)
        def limited(i):
            return time.time()

        made["limited"] = limited
    return made


def make_celery(url, more=False, marks=None):
    """A Celery app with `url` (redis://...) as broker and result backend, every other
    setting at Celery's defaults (prefetch multiplier 4, early acks, json). Returns
    (app, noop, endstamp, step, collect), named as the litequeue tasks; with more=True,
    (app, noop, stamp, limited) instead (the ratelimit rows: stamp as on litequeue,
    limited with rate_limit=RATE_LIMIT, which Celery enforces per worker).

    With ``marks`` (a directory; the drain row's worker only), each worker process
    records the unix time of the first task it starts (start-<pid>, from the task_prerun
    signal) and of the last task it finished (end-<pid>-<thread id>, from task_postrun,
    which Celery sends after mark_as_done has stored the result), as huey's marks below.
    Signal receivers change no setting."""
    from celery import Celery

    app = Celery("benchtasks", broker=url, backend=url)
    app.conf.broker_connection_retry_on_startup = True   # silences a deprecation warning
    if marks:
        from celery import signals
        mark = _marker(marks)

        def _prerun(*args, **kwargs):
            mark("start")

        def _postrun(*args, **kwargs):
            mark("end")

        # weak=False: the receivers are local functions, kept alive by the signal.
        signals.task_prerun.connect(_prerun, weak=False)
        signals.task_postrun.connect(_postrun, weak=False)

    @app.task(name="benchtasks.noop")
    def noop(i):
        return i

    if more:
        @app.task(name="benchtasks.stamp")
        def stamp(i):
            return time.time()

        @app.task(name="benchtasks.limited", rate_limit=RATE_LIMIT)
        def limited(i):
            return time.time()

        return app, noop, stamp, limited

    endstamp, step, collect = make_litequeue_canvas(app)

    return app, noop, endstamp, step, collect


def _marker(marks):
    """mark(kind) for the drain rows' per-process files in the directory ``marks``:
    mark("start") writes the time once per process (start-<pid>); mark("end") writes it
    every time, one file per thread or greenlet (end-<pid>-<thread id>), so that no thread
    overwrites another's later end. The bench takes the earliest start and the latest
    end."""
    files = {}
    lock = threading.Lock()     # threads: two may start their first task at once

    def _fd(kind):
        key = (kind, os.getpid()) if kind == "start" else \
            (kind, os.getpid(), threading.get_ident())
        fd = files.get(key)
        if fd is None:
            with lock:
                fd = files.get(key)
                if fd is None:
                    name = "-".join(str(k) for k in key)
                    fd = os.open(os.path.join(marks, name), os.O_RDWR | os.O_CREAT, 0o644)
                    if kind == "start":
                        os.pwrite(fd, _DOUBLE.pack(time.time()), 0)
                    files[key] = fd
        return fd

    def mark(kind):
        fd = _fd(kind)
        if kind == "end":
            os.pwrite(fd, _DOUBLE.pack(time.time()), 0)

    return mark


def make_huey(path, marks=None):
    """A SqliteHuey with every storage option at its default (fsync=None, i.e. SQLite's
    compiled-in synchronous=FULL; journal_mode='wal'; cache_mb=8; timeout=5).

    With ``marks`` (a directory), each worker process records the unix time of the first
    task it starts (start-<pid>) and each worker thread or greenlet the time of the last
    task it completed, after its result was stored (end-<pid>-<thread id>): the drain
    measurement's equivalent of litequeue's started_at and finished_at columns (the bench
    takes the earliest start and the latest end).
    """
    from huey import SqliteHuey, signals

    huey = SqliteHuey(name="bench", filename=path)

    @huey.task()
    def noop(i):
        return i

    @huey.task()
    def stamp(i):
        return time.time()

    if marks:
        mark = _marker(marks)

        @huey.signal(signals.SIGNAL_EXECUTING)
        def _executing(signal, task, *args, **kwargs):
            mark("start")  # writes once per process

        # huey emits SIGNAL_COMPLETE after put_result(): the result is stored.
        @huey.signal(signals.SIGNAL_COMPLETE)
        def _complete(signal, task, *args, **kwargs):
            mark("end")

    return huey, noop, stamp


def make_huey_more(huey):
    """Register block(i, seconds) on a huey instance made by make_huey(); returns it."""

    @huey.task()
    def block(i, seconds):
        time.sleep(seconds)
        return i

    return block


# DBOS Transact (the peers' rows): the workflows the bench enqueues, by these names, through
# a DBOSClient; bench/dbos_worker.py registers them with make_dbos() and runs the queue.
DBOS_APP = "lqbench"
DBOS_QUEUE = "lqbench"
DBOS_NOOP = "benchtasks.noop"
DBOS_CHAIN = "benchtasks.chain"
# The workflows rows' DBOS side: the task steps' queue (worker_concurrency=2, as the -c 2 of
# litequeue's step tasks) and the sleepers' queue (no worker_concurrency: a DBOS.sleep holds
# its workflow's thread and queue slot), which the bench registers only for those rows.
DBOS_STEPS_QUEUE = "lqbench_steps"
DBOS_SLEEP_QUEUE = "lqbench_sleep"
DBOS_WF_TASKS = "benchtasks.wf_tasks"
DBOS_WF_TASK_STEP = "benchtasks.wf_task_step"
DBOS_WF_SLEEP = "benchtasks.wf_sleep"


def make_litequeue_workflows(app, step):
    """The workflow rows (litequeue only; the bench queues them by name):

    - wf_steps(x, n): a workflow of n calls of wf_step(x), an @app.step that returns its
      input (DBOS's chain workflow, step for step: each step's output recorded before the
      next one runs);
    - wf_tasks(x, n): a workflow of n task steps, ``x = step.delay(x).get()``: each one
      queued, run by a worker process, and awaited durably (the run ends and the step's
      end queues the workflow again);
    - wf_sleep(seconds): ``app.sleep(seconds)`` (durable: no process is held), then
      returns time.time(), the moment the workflow ran again after the sleep."""

    @app.step(name="benchtasks.wf_step")
    def wf_step(x):
        return x

    @app.workflow(name="benchtasks.wf_steps")
    def wf_steps(x, n):
        for _ in range(n):
            x = wf_step(x)
        return x

    @app.workflow(name="benchtasks.wf_tasks")
    def wf_tasks(x, n):
        for _ in range(n):
            x = step.delay(x).get()
        return x

    @app.workflow(name="benchtasks.wf_sleep")
    def wf_sleep(seconds):
        app.sleep(seconds)
        return time.time()

    return wf_steps, wf_tasks, wf_sleep


def make_dbos(marks=None):
    """Register on DBOS's (process-global) registry, before DBOS() is made:

    - noop(i), a workflow that returns i: the queue's task, as noop is on the others.
    - chain(x, n), a workflow of n steps, each ``step(x)``, a @DBOS.step that returns its
      input: the chain row's counterpart of litequeue's chain of n tasks. The n steps run
      one after the other in the workflow's own thread; DBOS checkpoints each step's output
      in the system database before the next one starts.

    and the workflow rows' DBOS side (make_dbos_workflows).

    With ``marks`` (a directory), noop writes start-<pid> (the first noop's start, once)
    and end-<pid>-<thread id> (its end, every time) as huey's and Celery's marks; DBOS
    stores the workflow's result after its body returns. Returns (noop, chain)."""
    from dbos import DBOS

    mark = _marker(marks) if marks else None

    @DBOS.step(name="benchtasks.step")
    def step(x):
        return x

    @DBOS.workflow(name=DBOS_NOOP)
    def noop(i):
        if mark is not None:
            mark("start")
            mark("end")
        return i

    @DBOS.workflow(name=DBOS_CHAIN)
    def chain(x, n):
        for _ in range(n):
            x = step(x)
        return x

    make_dbos_workflows()
    return noop, chain


def make_dbos_workflows():
    """The workflow rows' DBOS side, registered by make_dbos() (run only by that
    measurement, which registers the two queues they use). Returns (wf_tasks, wf_sleep):

    - wf_tasks(x, n, poll): n task steps, DBOS's counterpart of litequeue's
      ``x = step.delay(x).get()``: each step a child workflow wf_task_step(x) (returns x)
      enqueued on DBOS_STEPS_QUEUE from the workflow (``DBOS.enqueue_workflow``, i.e.
      ``queue.enqueue(wf_task_step, x)``) and awaited with ``handle.get_result()``
      (polling every `poll` s; None: DBOS's default, 1 s), so that the queue's poller
      claims it and it runs on another thread of the worker;
    - wf_sleep(seconds): ``DBOS.sleep(seconds)`` (durable: its end, time.time() +
      seconds, is recorded in operation_outputs before the thread sleeps), then returns
      time.time(), the moment the workflow ran on after the sleep."""
    from dbos import DBOS

    @DBOS.workflow(name=DBOS_WF_TASK_STEP)
    def wf_task_step(x):
        return x

    @DBOS.workflow(name=DBOS_WF_TASKS)
    def wf_tasks(x, n, poll=None):
        wait = {} if poll is None else {"polling_interval_sec": poll}
        for _ in range(n):
            handle = DBOS.enqueue_workflow(DBOS_STEPS_QUEUE, wf_task_step, x)
            x = handle.get_result(**wait)
        return x

    @DBOS.workflow(name=DBOS_WF_SLEEP)
    def wf_sleep(seconds):
        DBOS.sleep(seconds)
        return time.time()

    return wf_tasks, wf_sleep


def read_mark(path):
    with open(path, "rb") as f:
        return _DOUBLE.unpack(f.read(_DOUBLE.size))[0]


# Module-level objects for the workers, which import this module by name.
if os.environ.get("LQBENCH_DB"):
    app, noop, stamp = make_litequeue(os.environ["LQBENCH_DB"],
                               os.environ.get("LQBENCH_SYNC", "NORMAL"))
    endstamp, step, collect = make_litequeue_canvas(app)
    wf_steps, wf_tasks, wf_sleep = make_litequeue_workflows(app, step)
    if os.environ.get("LQBENCH_MORE"):
        globals().update(make_litequeue_more(app, os.environ["LQBENCH_MORE"].split(",")))
if os.environ.get("CELERYBENCH_URL"):
    if os.environ.get("CELERYBENCH_MORE"):
        celery_app, celery_noop, celery_stamp, celery_limited = make_celery(
            os.environ["CELERYBENCH_URL"], more=True)
    else:
        celery_app, celery_noop, celery_endstamp, celery_step, celery_collect = make_celery(
            os.environ["CELERYBENCH_URL"], marks=os.environ.get("CELERYBENCH_MARKS"))
if os.environ.get("HUEYBENCH_DB"):
    huey, huey_noop, huey_stamp = make_huey(os.environ["HUEYBENCH_DB"],
                                os.environ.get("HUEYBENCH_MARKS"))
    if os.environ.get("HUEYBENCH_MORE"):
        huey_block = make_huey_more(huey)
