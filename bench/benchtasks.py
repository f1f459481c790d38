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
from the environment (CELERYBENCH_URL).
"""

import os
import struct
import time

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


def make_celery(url):
    """A Celery app with `url` (redis://...) as broker and result backend, every other
    setting at Celery's defaults (prefetch multiplier 4, early acks, json). Returns
    (app, noop, endstamp, step, collect), named as the litequeue tasks."""
    from celery import Celery

    app = Celery("benchtasks", broker=url, backend=url)
    app.conf.broker_connection_retry_on_startup = True   # silences a deprecation warning

    @app.task(name="benchtasks.noop")
    def noop(i):
        return i

    endstamp, step, collect = make_litequeue_canvas(app)

    return app, noop, endstamp, step, collect


def make_huey(path, marks=None):
    """A SqliteHuey with every storage option at its default (fsync=None, i.e. SQLite's
    compiled-in synchronous=FULL; journal_mode='wal'; cache_mb=8; timeout=5).

    With ``marks`` (a directory), each worker process records the unix time of the first
    task it starts (start-<pid>) and of the last task it completed, after its result was
    stored (end-<pid>): the drain measurement's equivalent of litequeue's started_at and
    finished_at columns.
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
        files = {}

        def _fd(kind):
            key = (kind, os.getpid())
            fd = files.get(key)
            if fd is None:
                path = os.path.join(marks, f"{kind}-{os.getpid()}")
                fd = files[key] = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                if kind == "start":
                    os.pwrite(fd, _DOUBLE.pack(time.time()), 0)
            return fd

        @huey.signal(signals.SIGNAL_EXECUTING)
        def _executing(signal, task, *args, **kwargs):
            _fd("start")  # writes once per process

        # huey emits SIGNAL_COMPLETE after put_result(): the result is stored.
        @huey.signal(signals.SIGNAL_COMPLETE)
        def _complete(signal, task, *args, **kwargs):
            os.pwrite(_fd("end"), _DOUBLE.pack(time.time()), 0)

    return huey, noop, stamp


def read_mark(path):
    with open(path, "rb") as f:
        return _DOUBLE.unpack(f.read(_DOUBLE.size))[0]


# Module-level objects for the workers, which import this module by name.
if os.environ.get("LQBENCH_DB"):
    app, noop, stamp = make_litequeue(os.environ["LQBENCH_DB"],
                               os.environ.get("LQBENCH_SYNC", "NORMAL"))
    endstamp, step, collect = make_litequeue_canvas(app)
if os.environ.get("CELERYBENCH_URL"):
    celery_app, celery_noop, celery_endstamp, celery_step, celery_collect = make_celery(
        os.environ["CELERYBENCH_URL"])
if os.environ.get("HUEYBENCH_DB"):
    huey, huey_noop, huey_stamp = make_huey(os.environ["HUEYBENCH_DB"],
                                os.environ.get("HUEYBENCH_MARKS"))
