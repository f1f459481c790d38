#!/usr/bin/env python
"""litequeue against huey's SqliteHuey, Celery on Redis and DBOS Transact on SQLite, in one
run on one machine (Celery and DBOS where the operation exists: delay(), drain, round
trip, chain, launch; Celery also for the chord and the rate limit).

    python bench/bench.py              # full run: 3 repeats, about 14.5 minutes on 2 cores
    python bench/bench.py --quick      # 1 repeat, smaller sizes, about 4 minutes
    python bench/bench.py --only eta,future        # just the scheduling rows (issue 3)
    python bench/bench.py --only chord,chain --repeat 5   # canvas rows, against Celery+Redis
    python bench/bench.py --only dashboard          # the web dashboard on 1M rows, in Chromium
                                                    # (the 1M-row file is built once, then cached)
    python bench/bench.py --only async,threads,ratelimit   # concurrency and rate limits:
                                                    # vs huey (gevent, threads) and Celery
    python bench/bench.py --only insert,producers,launch,memory   # issue 13: delay() vs a
                                                    # bare INSERT, 4 producers at once,
                                                    # launch time, memory over 1M tasks
    python bench/bench.py --only drain,roundtrip --no-celery --no-dbos   # without the peers
    python bench/bench.py --repeat 5 --out bench/results/run.json

Prints a Markdown table (medians, with min-max over the repeats) to stdout; progress goes
to stderr. See bench/README.md for what each figure means and how it is measured.
"""

import argparse
import array
import collections
import contextlib
import datetime as _dt
import http.client
import importlib.util
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

sys.dont_write_bytecode = True  # keep bench/ free of __pycache__

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
LITEQUEUE_PY = os.path.join(REPO, "litequeue.py")
sys.path.insert(0, REPO)       # the litequeue.py of this checkout, installed or not
sys.path.insert(0, BENCH_DIR)

import apsw  # noqa: E402
import huey as huey_pkg  # noqa: E402
import litequeue  # noqa: E402

import benchtasks  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Measurements, in the order a repeat runs them; --only picks a subset.
MEASUREMENTS = ("drain", "roundtrip", "idle", "load", "eta", "future", "chord", "chain",
                "workflows", "async", "threads", "ratelimit", "insert", "producers", "launch",
                "memory", "dashboard")
# The groups whose figures issue 13's target table shows.
ISSUE13_GROUPS = {"drain", "roundtrip", "eta", "insert", "producers", "launch", "memory"}
FUTURE = "litequeue NORMAL, future rows"   # results label of the 'future' drain
CELERY = "Celery + Redis"                  # results label of every Celery figure
DBOS_DEF = "DBOS"                          # results label of DBOS Transact at its defaults
DBOS_FAST = "DBOS 1ms poll"                # and with its two polls at 1 ms (information)
DBOS_WORKER_PY = os.path.join(BENCH_DIR, "dbos_worker.py")
DASH = "litequeue dashboard"               # results label of the dashboard rows
CONC = "concurrency"                       # results label of the async/threads/ratelimit rows
ISSUE13 = "issue 13"                       # results label of insert, producers, launch, memory
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
# The dashboard rows drive a real headless Chromium through selenium and chromedriver.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
# The dashboard's database is built once per row count and schema version, then reused.
CACHE_DIR = os.path.join(os.environ.get("XDG_CACHE_HOME") or
                         os.path.join(os.path.expanduser("~"), ".cache"), "litequeue-bench")

# Every worker this run started. Cleanup kills their process groups.
_PROCS = []
# SIGTERM/SIGINT/SIGHUP become SystemExit/KeyboardInterrupt, except while a worker is being
# started and registered: then they wait until it is in _PROCS, so cleanup can find it.
_critical = 0
_pending_signal = None
_stop_signal = None     # set for good by the first signal: no worker starts after it


def _raise_for(signum):
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _on_signal(signum, frame):
    global _pending_signal, _stop_signal
    _stop_signal = _stop_signal or signum
    if _critical:
        _pending_signal = signum
        return
    _raise_for(signum)


@contextlib.contextmanager
def _uninterrupted():
    global _critical, _pending_signal
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1
        if not _critical and _pending_signal is not None:
            signum, _pending_signal = _pending_signal, None
            _raise_for(signum)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

def _worker_env(extra, bytecode=False):
    """The environment of a process the bench starts: bench/ and the checkout first on
    PYTHONPATH, no bench variable of another row, and PYTHONDONTWRITEBYTECODE=1 so that
    nothing writes __pycache__ (bytecode=True: the variable unset, for the launch row's
    runs with .pyc files)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [BENCH_DIR, REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    for key in ("LQBENCH_DB", "LQBENCH_SYNC", "LQBENCH_MORE", "HUEYBENCH_DB",
                "HUEYBENCH_MARKS", "HUEYBENCH_MORE", "CELERYBENCH_URL", "CELERYBENCH_MORE",
                "CELERYBENCH_MARKS", "DBOSBENCH_MARKS"):
        env.pop(key, None)
    env.update(extra)
    return env


class Worker:
    """A worker (litequeue supervisor or huey consumer) in its own session, so that its
    whole process tree can be found (by session id) and killed (by process group)."""

    def __init__(self, kind, argv, env, cwd, logfile, stop_signal, stdin=subprocess.DEVNULL):
        if _stop_signal is not None:
            # An exception raised by the handler can be swallowed (e.g. inside a __del__).
            _raise_for(_stop_signal)
        self.kind = kind
        self.stop_signal = stop_signal
        self.started = time.time()
        with _uninterrupted():
            self.log = open(logfile, "ab")
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=stdin,
                                         stdout=self.log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            self.pid = self.proc.pid
            _PROCS.append(self)

    def check_alive(self):
        if self.proc.poll() is not None:
            self.log.flush()
            with open(self.log.name, errors="replace") as f:
                tail = f.read()[-2000:]
            raise RuntimeError(f"{self.kind} worker exited early with code "
                               f"{self.proc.returncode}; the end of {self.log.name}:\n{tail}")

    def stop(self, timeout=15.0):
        """Graceful signal to the leader; then SIGKILL to whatever is left of the group."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, self.stop_signal)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log(f"{self.kind} worker did not stop in {timeout:.0f} s: killing it")
            self._kill_group()
            self.proc.wait(10)
        finally:
            self.log.close()
            if self.proc.stdin is not None:       # a producer's pipe (the producers rows)
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
            if self in _PROCS:
                _PROCS.remove(self)

    def _kill_group(self):
        # The group outlives its leader while any member lives; kill stragglers.
        if session_pids(self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while session_pids(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def cleanup_all():
    # Newest first: a Celery worker stops before the redis-server it talks to.
    for w in reversed(list(_PROCS)):
        with contextlib.suppress(Exception):
            w.stop(timeout=5)


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read().decode("ascii", "replace")
    # The command name (field 2) may hold spaces; fields after it follow the last ')'.
    return data[data.rindex(")") + 2:].split()


def session_pids(sid):
    """Live pids whose session id is sid (zombies excluded)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = _stat_fields(name)
        except (OSError, ValueError):
            continue
        # fields[0] is state (field 3), fields[3] is session (field 6)
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(name))
    return pids


def session_wakeups(sid):
    """Voluntary context switches (times a thread went to sleep, so about as many
    wake-ups) summed over every thread of every live process of the session."""
    total = 0
    for pid in session_pids(sid):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches"):
                            total += int(line.split()[1])
            except OSError:
                pass
    return total


def session_threads(sid):
    """Threads of every live process of the session (the entries of /proc/PID/task)."""
    total = 0
    for pid in session_pids(sid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/task"))
    return total


def session_cpu_ticks(sid):
    """{pid: utime+stime in clock ticks} for every live process of the session."""
    ticks = {}
    for pid in session_pids(sid):
        try:
            fields = _stat_fields(pid)
        except (OSError, ValueError):
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime
    return ticks


# ---------------------------------------------------------------------------
# Systems under test
# ---------------------------------------------------------------------------

# The bench's polls of a litequeue file, written so SQLite answers them from litequeue's
# partial indexes (tasks_ready and tasks_limited split PENDING rows on rate_key; a bare
# "state = 'PENDING'" matches neither and reads the whole table: 0.1 s at 1M rows, every
# 20 ms, a core of the 2 the measured worker needs). poll_plans_indexed() checks them.
LQ_PENDING_COUNT = ("(SELECT count(*) FROM tasks WHERE state = 'PENDING' AND rate_key IS NULL)"
                    " + (SELECT count(*) FROM tasks WHERE state = 'PENDING'"
                    " AND rate_key IS NOT NULL)")
LQ_STARTED_COUNT = "(SELECT count(*) FROM tasks WHERE state = 'STARTED')"
LQ_BUSY = ("EXISTS(SELECT 1 FROM tasks WHERE state = 'PENDING' AND rate_key IS NULL)"
           " OR EXISTS(SELECT 1 FROM tasks WHERE state = 'PENDING' AND rate_key IS NOT NULL)"
           " OR EXISTS(SELECT 1 FROM tasks WHERE state = 'STARTED')")


def poll_plans_indexed(conn):
    """Raise if one of the bench's polls would read the whole tasks table."""
    for expr in (LQ_PENDING_COUNT, LQ_STARTED_COUNT, LQ_BUSY):
        for row in conn.execute("EXPLAIN QUERY PLAN SELECT " + expr):
            if row[3].startswith("SCAN tasks") and "INDEX" not in row[3]:
                raise RuntimeError(f"the bench's poll reads the whole table ({row[3]}): "
                                   f"SELECT {expr}")


def _apsw_reader(db):
    """A read-only connection to a litequeue file from this process. It must be apsw, the
    SQLite that litequeue's own connections use: a stdlib sqlite3 connection is a second
    copy of SQLite, and closing it drops the POSIX locks apsw holds on the same files.
    That corrupted a database here once, mid-drain."""
    conn = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(30_000)
    return conn


class LiteQueueSystem:
    def __init__(self, label, synchronous):
        self.label = label
        self.synchronous = synchronous
        self.app = None

    canvas = litequeue          # chain, chord (the canvas rows)

    def open(self, db):
        self.db = db
        self.app, self.noop, self.stamp = benchtasks.make_litequeue(db, self.synchronous)
        self.endstamp, self.step, self.collect = benchtasks.make_litequeue_canvas(self.app)
        self.wf_steps, self.wf_tasks, self.wf_sleep = benchtasks.make_litequeue_workflows(
            self.app, self.step)
        # Create the schema and open this thread's connection before any timing.
        warm = self.app.AsyncResult("warm-up")
        assert getattr(warm, "detailed_state", warm.state) == litequeue.UNKNOWN
        return self._pragma_synchronous()

    def _pragma_synchronous(self):
        # Reads the producer connection's pragma through a private attribute; if that
        # changes, the check reports "?" instead of failing the run.
        try:
            conn = self.app._storage().conn
            return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
                conn.execute("PRAGMA synchronous").fetchall()[0][0]]
        except Exception:
            return "?"

    def close(self):
        # Close this thread's connection and drop the app from litequeue's registry of
        # apps (private details; harmless if they change, the temp dir goes anyway).
        if self.app is None:
            return
        with contextlib.suppress(Exception):
            storage = getattr(self.app._local, "storage", None)
            if storage is not None:
                storage.close()
                self.app._local.storage = None
        with contextlib.suppress(Exception):
            apps = litequeue._apps
            (apps.discard if hasattr(apps, "discard") else apps.remove)(self.app)
        self.app = None

    def enqueue(self, i):
        return self.noop.delay(i)

    def enqueue_group(self, first, size):
        """group(noop.s(i) ...) of `size` tasks: one transaction, one commit."""
        return litequeue.group(self.noop.s(i) for i in range(first, first + size)).apply_async()

    def prefill(self, n):
        for first in range(0, n, 1000):
            self.enqueue_group(first, min(1000, n - first))

    def backlog(self):
        conn = _apsw_reader(self.db)      # not stdlib sqlite3: see _apsw_reader
        try:
            return conn.execute("SELECT " + LQ_PENDING_COUNT).fetchall()[0][0]
        finally:
            conn.close()

    def roundtrip(self, i):
        return self.noop.delay(i).get(timeout=30)

    def schedule_stamp(self, i, due):
        """Queue stamp(i) due at the unix time `due` (an aware datetime: that instant)."""
        return self.stamp.apply_async((i,), eta=_dt.datetime.fromtimestamp(due, _dt.timezone.utc))

    def stamp_result(self, handle, timeout):
        return handle.get(timeout=timeout)

    def chord_db_gap(self, result, members):
        """From the tasks table, after the chord: the body row's started_at (its claim)
        minus the latest finished_at of the header's member rows (stamped in the
        transaction that stores each result; the last one's commit queues the body)."""
        conn = _apsw_reader(self.db)
        try:
            (body_started,), = conn.execute("SELECT started_at FROM tasks WHERE id = ?",
                                            (result.id,)).fetchall()
            last, count, ok = conn.execute(
                "SELECT max(finished_at), count(*), sum(state = 'SUCCESS') FROM tasks "
                "WHERE group_id = ?", (result.parent.id,)).fetchone()
        finally:
            conn.close()
        if count != members or ok != members:
            raise RuntimeError(f"{self.label}: chord header {result.parent.id} has {count} "
                               f"member rows, {ok} SUCCESS; wanted {members}")
        return body_started - last

    def start_worker(self, tmp, logname, bytecode=False, entry=None):
        """`python litequeue.py worker DB -c 2 -A benchtasks`; entry: what replaces
        `litequeue.py` on the command line (the launch rows' console-script variant)."""
        argv = [sys.executable] + (entry or [LITEQUEUE_PY]) + [
            "worker", self.db, "-c", "2", "-A", "benchtasks", "-l", "WARNING",
            "--synchronous", self.synchronous]
        env = _worker_env({"LQBENCH_DB": self.db, "LQBENCH_SYNC": self.synchronous},
                          bytecode=bytecode)
        return Worker(self.label, argv, env, tmp, os.path.join(tmp, logname), signal.SIGTERM)

    def wait_drained(self, n, worker, timeout):
        """Poll (cheap index probes, every 20 ms) until nothing is PENDING or STARTED;
        return (first started_at, last finished_at, SUCCESS count)."""
        conn = _apsw_reader(self.db)
        try:
            poll_plans_indexed(conn)
            deadline = time.monotonic() + timeout
            while True:
                worker.check_alive()
                busy = conn.execute("SELECT " + LQ_BUSY).fetchone()[0]
                if not busy:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.label}: drain not finished after {timeout} s")
                time.sleep(0.02)
            observed = time.time()
            first, last, done = conn.execute(
                "SELECT min(started_at), max(finished_at), count(*) FROM tasks "
                "WHERE state = 'SUCCESS'").fetchone()
        finally:
            conn.close()
        if done != n:
            raise RuntimeError(f"{self.label}: {done} of {n} tasks succeeded")
        return first, last, observed


class HueySystem:
    def __init__(self, label, consumer_args=(), get_kwargs=None):
        self.label = label
        self.consumer_args = list(consumer_args)
        self.get_kwargs = dict(get_kwargs or {})
        self.huey = None

    def open(self, db):
        self.db = db
        self.huey, self.noop, self.stamp = benchtasks.make_huey(db)
        self.huey.pending_count()  # opens the connection before any timing
        conn = self.huey.storage.conn
        return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
            conn.execute("pragma synchronous").fetchone()[0]]

    def close(self):
        if self.huey is not None:
            self.huey.storage.close()
        self.huey = None

    def enqueue(self, i):
        return self.noop(i)

    def prefill(self, n):
        for i in range(n):
            self.noop(i)

    def backlog(self):
        return self.huey.pending_count()

    def roundtrip(self, i):
        return self.noop(i).get(blocking=True, timeout=30, **self.get_kwargs)

    def schedule_stamp(self, i, due):
        """Queue stamp(i) due at the unix time `due`. huey turns an aware eta into naive
        UTC (its default utc=True) and compares it with utcnow(), to the microsecond."""
        return self.stamp.schedule((i,), eta=_dt.datetime.fromtimestamp(due, _dt.timezone.utc))

    def stamp_result(self, handle, timeout):
        return handle.get(blocking=True, timeout=timeout)

    def start_worker(self, tmp, logname):
        self.marks = os.path.join(tmp, logname + "-marks")
        os.makedirs(self.marks, exist_ok=True)
        # -q: warnings only, like litequeue's -l WARNING (huey logs two INFO lines per task
        # by default).
        argv = [sys.executable, "-m", "huey.bin.huey_consumer", "benchtasks.huey",
                "-w", "2", "-k", "process", "-q"] + self.consumer_args
        env = _worker_env({"HUEYBENCH_DB": self.db, "HUEYBENCH_MARKS": self.marks})
        # SIGINT is huey's graceful signal by default.
        return Worker(self.label, argv, env, tmp, os.path.join(tmp, logname), signal.SIGINT)

    def wait_drained(self, n, worker, timeout):
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            deadline = time.monotonic() + timeout
            while True:
                worker.check_alive()
                if not conn.execute("SELECT EXISTS(SELECT 1 FROM task)").fetchone()[0]:
                    # Everything dequeued: wait for the last results to be stored.
                    if conn.execute("SELECT count(*) FROM kv").fetchone()[0] >= n:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.label}: drain not finished after {timeout} s")
                time.sleep(0.02)
            observed = time.time()
            done = conn.execute("SELECT count(*) FROM kv").fetchone()[0]
        finally:
            conn.close()
        if done != n:
            raise RuntimeError(f"{self.label}: {done} results stored for {n} tasks")
        names = os.listdir(self.marks)
        starts = [benchtasks.read_mark(os.path.join(self.marks, f))
                  for f in names if f.startswith("start-")]
        ends = [benchtasks.read_mark(os.path.join(self.marks, f))
                for f in names if f.startswith("end-")]
        return min(starts), max(ends), observed


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CelerySystem:
    """Celery on a real Redis broker and result backend, for the canvas rows: a
    redis-server on a free loopback port with no persistence, and
    `celery -A benchtasks:celery_app worker -P prefork -c 2`. Every Celery setting is at its
    default except that the worker skips gossip, mingle and heartbeats (start-up and
    cluster chatter; none of them is on a task's path)."""

    def __init__(self, label):
        self.label = label
        self.app = None
        import celery
        self.canvas = celery

    @contextlib.contextmanager
    def redis(self, tmp, tag):
        """A redis-server of this run's own on a free loopback port (no persistence) that
        answers a ping; yields its URL. Stopped and its files removed afterwards, however
        the measurement ends."""
        import redis as redis_py
        port = _free_port()
        url = f"redis://127.0.0.1:{port}/0"
        rdir = os.path.join(tmp, f"{tag}-redis")
        os.makedirs(rdir, exist_ok=True)
        server = None
        try:
            server = Worker("redis-server", [
                REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                "--appendonly", "no", "--dir", rdir, "--loglevel", "warning"],
                _worker_env({}), rdir, os.path.join(tmp, f"{tag}-redis.log"), signal.SIGTERM)
            client = redis_py.Redis(host="127.0.0.1", port=port)
            try:
                deadline = time.monotonic() + 15
                while True:
                    server.check_alive()
                    try:
                        client.ping()
                        break
                    except redis_py.ConnectionError:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"redis-server on port {port} did not answer")
                        time.sleep(0.02)
                self.redis_version = client.info("server")["redis_version"]
            finally:
                client.close()
            yield url
        finally:
            if server is not None:
                server.stop()
            shutil.rmtree(rdir, ignore_errors=True)

    def start_worker(self, tmp, tag, url, more=False, suffix="", marks=None):
        """`celery -A benchtasks:celery_app worker -P prefork -c 2` on the Redis at url, in
        its own session (stopped with SIGTERM, its warm shutdown). marks: a directory for
        the drain row's start and end marks (see benchtasks.make_celery)."""
        env = {"CELERYBENCH_URL": url}
        if more:
            env["CELERYBENCH_MORE"] = "1"
        if marks:
            env["CELERYBENCH_MARKS"] = marks
        return Worker(self.label, [
            sys.executable, "-m", "celery", "-A", "benchtasks:celery_app", "worker",
            "-P", "prefork", "-c", "2", "-l", "WARNING", "--without-gossip",
            "--without-mingle", "--without-heartbeat", "-n", f"lqbench-{tag}{suffix}@%h"],
            _worker_env(env), tmp, os.path.join(tmp, f"{tag}-celery{suffix}.log"),
            signal.SIGTERM)

    @contextlib.contextmanager
    def session(self, tmp, tag, workers=1, more=False):
        """redis-server and `workers` Celery workers, each -c 2, that have run one task
        (and, with more than one, all answered a ping); all stopped (the workers first)
        and their files removed afterwards, however the measurement ends. more=True: the
        app of make_celery(url, more=True) (noop, stamp, limited), for the ratelimit
        rows."""
        with self.redis(tmp, tag) as url:
            started = []
            try:
                if more:
                    self.app, self.noop, self.stamp, self.limited = \
                        benchtasks.make_celery(url, more=True)
                else:
                    self.app, self.noop, self.endstamp, self.step, self.collect = \
                        benchtasks.make_celery(url)
                for k in range(workers):
                    suffix = "" if workers == 1 else f"-{k}"
                    started.append(self.start_worker(tmp, tag, url, more, suffix))
                first = self.noop.delay(-1)     # waits out the worker's start-up
                deadline = time.monotonic() + 60
                while not first.ready():
                    for worker in started:
                        worker.check_alive()
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{self.label}: the worker ran nothing in 60 s")
                    time.sleep(0.05)
                assert first.get(timeout=5) == -1
                while workers > 1:              # every worker answers (remote control)
                    replies = self.app.control.ping(timeout=0.5)
                    if len(replies) >= workers:
                        break
                    for worker in started:
                        worker.check_alive()
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{self.label}: {len(replies)} of {workers} "
                                           f"workers answered a ping in 60 s")
                yield started[0] if workers == 1 else started
            finally:
                for worker in reversed(started):
                    worker.stop()
                self.close()

    def close(self):
        if self.app is None:
            return
        with contextlib.suppress(Exception):
            self.app.backend.result_consumer.stop()
        with contextlib.suppress(Exception):
            self.app.close()
        self.app = None

    def roundtrip(self, i):
        return self.noop.delay(i).get(timeout=30)

    def chord_db_gap(self, result, members):
        return None


@contextlib.contextmanager
def _deadline(seconds, what):
    """TimeoutError if the block lasts over `seconds` (SIGALRM, so the main thread only).
    DBOS's get_result() has no timeout: a worker that died would leave it polling."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"{what}: no answer in {seconds:.0f} s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class DBOSSystem:
    """DBOS Transact on its default system database, a SQLite file (a fresh one per
    measurement, in the run's temporary directory, shared by the bench process and the
    worker it starts: the file is the queue).

    The bench process is DBOS's producer and caller: a `DBOSClient` (DBOS's API for code
    outside the application; it runs no workflow) enqueues `noop(i)` by name on the queue
    and waits with `handle.get_result()`. The worker is bench/dbos_worker.py: one process,
    the queue at `worker_concurrency=2`. poll=None keeps DBOS's defaults: the queue is
    polled every 1 s (polling_interval_sec) and get_result() polls every 1 s; poll=0.001
    sets both to 1 ms (not a default; like huey's 1 ms poll, it shows what the polls
    cost). Every other setting is DBOS's default: rollback journal (no WAL), SQLite's
    compiled-in synchronous (FULL here), a 30 s busy timeout."""

    min_rate = 100      # tasks/s: the drain's timeout (at 1 s polls DBOS drains 2 a second)

    def __init__(self, label, poll=None):
        self.label = label
        self.poll = poll
        self.client = None
        self.get_kwargs = {} if poll is None else {"polling_interval_sec": poll}
        self.queue_kwargs = {} if poll is None else {"polling_interval_sec": poll}
        if poll is None:
            self.min_rate = 1
        self.noop_options = {"workflow_name": benchtasks.DBOS_NOOP,
                             "queue_name": benchtasks.DBOS_QUEUE}
        self.chain_options = {"workflow_name": benchtasks.DBOS_CHAIN,
                              "queue_name": benchtasks.DBOS_QUEUE}

    def open(self, db):
        """Create the system database as a DBOS application's launch does (DBOS.migrate:
        a client never migrates), open the client and register the queue (the worker
        registers it again at its start, as an application does). Returns the file's
        journal mode and synchronous setting, as DBOS's connections leave them."""
        from dbos import DBOS, DBOSClient
        self.db = db
        url = f"sqlite:///{db}"
        DBOS.migrate(url)
        self.client = DBOSClient(system_database_url=url,
                                 application_name=benchtasks.DBOS_APP)
        self.client.register_queue(benchtasks.DBOS_QUEUE, worker_concurrency=2,
                                   application_name=benchtasks.DBOS_APP,
                                   **self.queue_kwargs)
        conn = sqlite3.connect(db)      # the stdlib module, the SQLite DBOS itself uses
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        finally:
            conn.close()
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return f"{names[sync]} ({mode} journal)"

    def close(self):
        if self.client is not None:
            self.client.destroy()
        self.client = None

    def enqueue(self, i):
        return self.client.enqueue(self.noop_options, i)

    def result(self, handle, timeout=60.0):
        with _deadline(timeout, f"{self.label}: get_result"):
            return handle.get_result(**self.get_kwargs)

    def roundtrip(self, i):
        return self.result(self.enqueue(i))

    def run_chain(self, length):
        """chain(0, length) (a workflow of `length` steps), enqueued and awaited."""
        return self.result(self.client.enqueue(self.chain_options, 0, length))

    def register_workflow_queues(self):
        """The workflow rows' two extra queues, registered through the client before the
        worker starts (its queue thread polls every queue of the application in the file,
        at the run's interval): the task steps' queue at worker_concurrency=2, and the
        sleepers' queue with no worker_concurrency (DBOS's default)."""
        for name, limit in ((benchtasks.DBOS_STEPS_QUEUE, 2),
                            (benchtasks.DBOS_SLEEP_QUEUE, None)):
            self.client.register_queue(name, worker_concurrency=limit,
                                       application_name=benchtasks.DBOS_APP,
                                       **self.queue_kwargs)

    def wf_start(self, name, *args, queue=benchtasks.DBOS_QUEUE):
        """Enqueue the workflow `name`(*args) on `queue` through the client: its handle."""
        return self.client.enqueue({"workflow_name": name, "queue_name": queue}, *args)

    def wf_results(self, handles, timeout):
        """The handles' results, in order, all within `timeout` s (one SIGALRM deadline)."""
        with _deadline(timeout, f"{self.label}: get_result of {len(handles)} workflows"):
            return [h.get_result(**self.get_kwargs) for h in handles]

    def sleep_ends(self):
        """{workflow id: the end of its DBOS.sleep as DBOS recorded it}: the output of the
        sleep's operation_outputs row, time.time() + seconds read when the sleep began."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("SELECT workflow_uuid, output, serialization FROM "
                                "operation_outputs WHERE function_name = 'DBOS.sleep'").fetchall()
        finally:
            conn.close()
        odd = [r for r in rows if r[2] != "portable_json"]
        if odd:
            raise RuntimeError(f"{self.label}: a DBOS.sleep row in an unexpected serialization "
                               f"{odd[0][2]!r} (expected portable_json)")
        return {wid: float(json.loads(out)) for wid, out, _ in rows}

    def count_sleeps(self):
        """How many DBOS.sleep rows operation_outputs holds (each written as its sleep
        begins, before the workflow's thread sleeps)."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute("SELECT count(*) FROM operation_outputs WHERE "
                                "function_name = 'DBOS.sleep'").fetchone()[0]
        finally:
            conn.close()

    def start_worker(self, tmp, logname):
        self.marks = os.path.join(tmp, logname + "-marks")
        os.makedirs(self.marks, exist_ok=True)
        argv = [sys.executable, DBOS_WORKER_PY, self.db,
                "default" if self.poll is None else repr(self.poll)]
        env = _worker_env({"DBOSBENCH_MARKS": self.marks})
        return Worker(self.label, argv, env, tmp, os.path.join(tmp, logname), signal.SIGTERM)

    def wait_drained(self, n, worker, timeout):
        """Poll (every 20 ms) until n workflows are SUCCESS; return (the first noop's
        start, from the worker's mark; the time this poll saw the last result, which
        stands for the last result's store: DBOS's own stamps, updated_at and completed_at,
        are whole seconds on Python < 3.12; that time again)."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            deadline = time.monotonic() + timeout
            while True:
                worker.check_alive()
                done = conn.execute("SELECT count(*) FROM workflow_status "
                                    "WHERE status = 'SUCCESS'").fetchone()[0]
                if done >= n:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.label}: drain not finished after {timeout} s "
                                       f"({done} of {n} done)")
                time.sleep(0.02)
            observed = time.time()
            total = conn.execute("SELECT count(*) FROM workflow_status").fetchone()[0]
        finally:
            conn.close()
        if done != n or total != n:
            raise RuntimeError(f"{self.label}: {done} of {total} workflows succeeded, for "
                               f"{n} tasks")
        starts = [benchtasks.read_mark(os.path.join(self.marks, f))
                  for f in os.listdir(self.marks) if f.startswith("start-")]
        return min(starts), observed, observed


class LiteQueueMore(LiteQueueSystem):
    """litequeue NORMAL with some of the concurrency rows' tasks on both sides (kinds:
    "async" for asleep and anoop, "block", "limited"; see make_litequeue_more), and a worker
    with extra arguments (-c, -P, --async-concurrency)."""

    def __init__(self, label, kinds, worker_args):
        super().__init__(label, "NORMAL")
        self.kinds = list(kinds)
        self.worker_args = list(worker_args)

    def open(self, db):
        sync = super().open(db)
        for name, task in benchtasks.make_litequeue_more(self.app, self.kinds).items():
            setattr(self, name, task)
        return sync

    def start_worker(self, tmp, logname):
        argv = [sys.executable, LITEQUEUE_PY, "worker", self.db, "-A", "benchtasks", "-l",
                "WARNING", "--synchronous", self.synchronous] + self.worker_args
        env = _worker_env({"LQBENCH_DB": self.db, "LQBENCH_SYNC": self.synchronous,
                           "LQBENCH_MORE": ",".join(self.kinds)})
        return Worker(self.label, argv, env, tmp, os.path.join(tmp, logname), signal.SIGTERM)


class HueyMore(HueySystem):
    """huey with block(i, seconds) on both sides, and a consumer started as `entry` (huey's
    own module, or bench/huey_gevent.py: gevent's monkey-patch first) with `args`."""

    def __init__(self, label, entry, args):
        super().__init__(label)
        self.entry, self.args = list(entry), list(args)

    def open(self, db):
        sync = super().open(db)
        self.block = benchtasks.make_huey_more(self.huey)
        return sync

    def start_worker(self, tmp, logname):
        self.marks = os.path.join(tmp, logname + "-marks")
        os.makedirs(self.marks, exist_ok=True)
        argv = [sys.executable] + self.entry + ["benchtasks.huey", "-q"] + self.args
        env = _worker_env({"HUEYBENCH_DB": self.db, "HUEYBENCH_MARKS": self.marks,
                           "HUEYBENCH_MORE": "1"})
        return Worker(self.label, argv, env, tmp, os.path.join(tmp, logname), signal.SIGINT)


def _log_problems(worker, errors_only=False):
    """Lines of a worker's log that name an error, a traceback or a warning (the workers
    run at -l WARNING / -q, so a clean run logs only its shutdown). errors_only: only
    lines that name an error or a traceback (Celery prints its banner, and a warning about
    running as root, whatever the log level)."""
    with open(worker.log.name, errors="replace") as f:
        lines = f.read().splitlines()
    if errors_only:
        return [line for line in lines if re.search(r"ERROR|CRITICAL|Traceback", line)]
    quiet = ("warm shutdown", "Worker exiting", "Received SIGINT", "Shutting down")
    return [line for line in lines if line.strip() and not any(q in line for q in quiet)]


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------

def remove_db(db):
    for path in (db, db + "-wal", db + "-shm", db + "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    shutil.rmtree(db + "-lq", ignore_errors=True)


class _Session:
    """One measurement's fresh database, opened by `system`, and the worker it starts."""

    def __init__(self, system, tmp, tag, synchronous):
        self.system, self.tmp, self.tag = system, tmp, tag
        self.synchronous = synchronous
        self.worker = None
        self.workers = []          # every worker started, in order (the ratelimit rows: 2)

    def start_worker(self, suffix, **kwargs):
        self.worker = self.system.start_worker(self.tmp, f"{self.tag}-{suffix}.log", **kwargs)
        self.workers.append(self.worker)
        return self.worker


@contextlib.contextmanager
def fresh_database(system, tmp, tag):
    """A new database for one measurement. Afterwards its worker is stopped, the system
    closed and the files removed, however the measurement ends."""
    db = os.path.join(tmp, f"{tag}.sqlite")
    remove_db(db)
    session = _Session(system, tmp, tag, system.open(db))
    try:
        yield session
    finally:
        try:
            for worker in reversed(session.workers):
                worker.stop()
        finally:
            system.close()
            remove_db(db)


def measure_delay_and_drain(system, tmp, tag, n, results):
    """delay() n no-op tasks with no worker running, then drain exactly those n tasks with a
    2-process worker. Appends to results[label]."""
    with fresh_database(system, tmp, tag) as session:
        sync = session.synchronous
        t0 = time.perf_counter()
        for i in range(n):
            system.enqueue(i)
        elapsed = time.perf_counter() - t0
        results["delay"].append(n / elapsed)
        results.setdefault("pragma_synchronous", sync)
        log(f"  {system.label:<18} delay(): {n / elapsed:9.0f} tasks/s  (synchronous={sync})")

        launched = time.time()
        worker = session.start_worker("drain")
        first, last, observed = system.wait_drained(
            n, worker, timeout=max(120, n / getattr(system, "min_rate", 100)))
        rate = n / (last - first)
        results["drain"].append(rate)
        results["drain_count"].append(n)
        results["drain_incl_startup"].append(n / (observed - launched))
        log(f"  {system.label:<18} drain:   {rate:9.0f} tasks/s  "
            f"(first start -> last result {last - first:.2f} s; "
            f"launch -> observed done {observed - launched:.2f} s)")


def measure_group(system, tmp, tag, n, size, results):
    """Queue n no-op tasks as groups of `size` (litequeue only; huey has no batch enqueue),
    no worker running. Appends the rate to results["group"]."""
    with fresh_database(system, tmp, f"{tag}-group"):
        t0 = time.perf_counter()
        for first in range(0, n, size):
            system.enqueue_group(first, min(size, n - first))
        elapsed = time.perf_counter() - t0
        results["group"].append(n / elapsed)
        log(f"  {system.label:<18} group(): {n / elapsed:9.0f} tasks/s  (groups of {size})")


def measure_delay_under_load(system, tmp, tag, prefill, n, seconds, results):
    """delay() latency while a 2-process worker drains a backlog: `prefill` no-op tasks
    are queued first, the worker starts, and once the backlog shrinks the producer times n
    delay() calls, 1 ms apart, or as many as fit in `seconds`. The backlog must outlast
    them, or the figure is refused."""
    with fresh_database(system, tmp, f"{tag}-load") as session:
        system.prefill(prefill)
        worker = session.start_worker("load")
        deadline = time.monotonic() + 60
        while system.backlog() > prefill - 200:       # the worker is draining
            worker.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{system.label}: the worker did not start draining")
            time.sleep(0.01)
        latencies = []
        began = time.monotonic()
        for i in range(n):
            if time.monotonic() - began > seconds:
                break
            t0 = time.perf_counter()
            system.enqueue(10**9 + i)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            time.sleep(0.001)
        worker.check_alive()
        left = system.backlog()
        if left < 200:
            raise RuntimeError(f"{system.label}: the backlog ran out ({left} left) before the "
                               f"{n} delay() calls ended ({time.monotonic() - began:.1f} s; "
                               f"{len(latencies)} calls); prefill more")
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        results["load_p50"].append(p50)
        results["load_p99"].append(p99)
        results["load_max"].append(max(latencies))
        results["load_calls"].append(len(latencies))
        log(f"  {system.label:<18} delay() under load: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
            f"max {max(latencies):7.2f} ms  ({len(latencies)} calls in "
            f"{time.monotonic() - began:.1f} s; {left} of {prefill} still queued at the end)")


@contextlib.contextmanager
def idle_worker(system, tmp, tag, suffix):
    """A fresh database with a started worker that has run one task; both are stopped
    and removed afterwards, however the measurement ends."""
    with fresh_database(system, tmp, tag) as session:
        worker = session.start_worker(suffix)
        assert system.roundtrip(-1) == -1   # waits out the worker's start-up
        yield worker


def timed_roundtrip(system, i):
    """Milliseconds of one delay()+get() of noop(i), checking it returned i."""
    t0 = time.perf_counter()
    value = system.roundtrip(i)
    elapsed = (time.perf_counter() - t0) * 1000.0
    if value != i:
        raise RuntimeError(f"{system.label}: round trip {i} returned {value!r}")
    return elapsed


def measure_roundtrip(system, tmp, tag, repeats, gap, results):
    with idle_worker(system, tmp, tag, "rt") as worker:
        _timed_roundtrips(system, worker, repeats, gap, results)


def _timed_roundtrips(system, worker, repeats, gap, results):
    """On a worker that has run one task: 5 warm-up round trips, 0.2 s idle, then
    `repeats` timed ones, `gap` s of idleness after each; appends p50 and p99."""
    for i in range(5):                  # warm-up, not counted
        system.roundtrip(-2 - i)
    time.sleep(0.2)
    samples = []
    for i in range(repeats):
        samples.append(timed_roundtrip(system, i))
        time.sleep(gap)
    worker.check_alive()
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    results["rt_p50"].append(p50)
    results["rt_p99"].append(p99)
    results["rt_count"].append(repeats)
    log(f"  {system.label:<18} round trip: p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  "
        f"({repeats} round trips)")


def measure_celery_roundtrip(cel, tmp, tag, repeats, gap, results):
    """As measure_roundtrip, on a fresh redis-server and a prefork -c 2 worker that has
    run one task: noop.delay(i).get(timeout=30) (the result through Redis pub/sub)."""
    with cel.session(tmp, f"{tag}-rt") as worker:
        _timed_roundtrips(cel, worker, repeats, gap, results)


def _celery_wait_drained(url, ids, worker, timeout):
    """Poll Redis (every 20 ms) until the queue is empty and every task's result key
    exists; return the time that poll saw it, after checking every result: SUCCESS, the
    task's own argument."""
    import redis as redis_py
    client = redis_py.Redis.from_url(url)
    keys = [f"celery-task-meta-{i}" for i in ids]
    try:
        deadline = time.monotonic() + timeout
        while True:
            worker.check_alive()
            if client.llen("celery") == 0 and client.exists(*keys) == len(keys):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Celery: drain not finished after {timeout} s")
            time.sleep(0.02)
        observed = time.time()
        bad = 0
        for first in range(0, len(keys), 1000):
            for k, raw in enumerate(client.mget(keys[first:first + 1000])):
                meta = json.loads(raw)
                bad += meta.get("status") != "SUCCESS" or meta.get("result") != first + k
        if bad:
            raise RuntimeError(f"Celery: {bad} of {len(keys)} results are not noop(i)'s "
                               f"SUCCESS")
        return observed
    finally:
        client.close()


def measure_celery_delay_and_drain(cel, tmp, tag, n, results):
    """As measure_delay_and_drain, on a fresh redis-server: n noop.delay(i) with no worker
    running (after one untimed call onto a queue no worker reads: the connection, the
    producer and the result consumer are ready before the clock starts), then `celery
    worker -P prefork -c 2` drains them. Rate = n ÷ (the first task_prerun → the last
    task_postrun, which Celery sends after storing the result), from the worker's marks."""
    with cel.redis(tmp, f"{tag}-drain") as url:
        marks = os.path.join(tmp, f"{tag}-celery-marks")
        os.makedirs(marks, exist_ok=True)
        cel.app, cel.noop, *_ = benchtasks.make_celery(url)
        worker = None
        try:
            cel.noop.apply_async((-1,), queue="lqbench-warmup")
            t0 = time.perf_counter()
            handles = [cel.noop.delay(i) for i in range(n)]
            elapsed = time.perf_counter() - t0
            results["delay"].append(n / elapsed)
            log(f"  {cel.label:<18} delay(): {n / elapsed:9.0f} tasks/s")
            launched = time.time()
            worker = cel.start_worker(tmp, f"{tag}-drain", url, marks=marks)
            observed = _celery_wait_drained(url, [h.id for h in handles], worker,
                                            timeout=max(120, n / 100))
            worker.check_alive()
            # Each AsyncResult unsubscribes from its result when it is collected: let them go
            # while redis-server still runs.
            del handles
            _report_worker_logs([worker], "drain (Celery)", results, errors_only=True)
        finally:
            if worker is not None:
                worker.stop()
            cel.close()
    names = os.listdir(marks)
    first = min(benchtasks.read_mark(os.path.join(marks, f))
                for f in names if f.startswith("start-"))
    last = max(benchtasks.read_mark(os.path.join(marks, f))
               for f in names if f.startswith("end-"))
    shutil.rmtree(marks, ignore_errors=True)
    results["drain"].append(n / (last - first))
    results["drain_incl_startup"].append(n / (observed - launched))
    log(f"  {cel.label:<18} drain:   {n / (last - first):9.0f} tasks/s  "
        f"(first start -> last result {last - first:.2f} s; "
        f"launch -> observed done {observed - launched:.2f} s)")


def measure_idle(system, tmp, tag, settle, window, results):
    with idle_worker(system, tmp, tag, "idle") as worker:
        time.sleep(settle)
        worker.check_alive()
        t0, before, wake0 = time.monotonic(), session_cpu_ticks(worker.pid), \
            session_wakeups(worker.pid)
        time.sleep(window)
        t1, after, wake1 = time.monotonic(), session_cpu_ticks(worker.pid), \
            session_wakeups(worker.pid)
        worker.check_alive()
        used = sum(after[pid] - before.get(pid, 0) for pid in after)
        pct = used / CLK_TCK / (t1 - t0) * 100.0
        wakeups = (wake1 - wake0) / (t1 - t0)
        results["idle_cpu"].append(pct)
        results["idle_wakeups"].append(wakeups)
        results.setdefault("idle_processes", len(after))
        log(f"  {system.label:<18} idle CPU: {pct:6.2f}% of one core over {t1 - t0:.1f} s "
            f"({len(after)} processes, {used} ticks of 1/{CLK_TCK} s, {wakeups:.1f} wake-ups/s)")


class _SlowEnqueue(Exception):
    pass


def measure_eta_retrying(system, tmp, tag, mode, cfg, results, tries=3):
    for attempt in range(1, tries + 1):
        try:
            return measure_eta(system, tmp, f"{tag}-{attempt}", mode, cfg, results)
        except _SlowEnqueue as exc:
            log(f"  {exc}: {'trying again' if attempt < tries else 'giving up on this sample'}")
            results["eta_retries"].append(1)


def measure_eta(system, tmp, tag, mode, cfg, results):
    """ETA lateness: an idle 2-process worker; `eta_tasks` stamp() tasks due `eta_ahead`
    seconds from now, all at one instant (mode 'burst') or `eta_spacing_ms` apart
    (mode 'spaced'). Lateness = the time.time() the task read as its first statement
    minus its due time. Appends p50/p99/max (ms) and the count started early."""
    with idle_worker(system, tmp, tag, f"eta-{mode}") as worker:
        time.sleep(cfg["eta_settle"])       # then the worker idles
        worker.check_alive()
        n, ahead = cfg["eta_tasks"], cfg["eta_ahead"]
        spacing = cfg["eta_spacing_ms"] / 1000.0 if mode == "spaced" else 0.0
        base = time.time() + ahead
        dues = [base + i * spacing for i in range(n)]
        handles = [system.schedule_stamp(i, due) for i, due in enumerate(dues)]
        enqueued = time.time()
        if enqueued > base - 0.2:
            # A busy disk (another process's fsyncs) can slow huey's 200 synchronous
            # commits to seconds; a task queued after it fell due would not measure the
            # scheduler. The caller runs the measurement again.
            raise _SlowEnqueue(f"{system.label}: queuing {n} tasks ended "
                               f"{enqueued - base + ahead:.2f} s after the first due time "
                               f"was set ({ahead:g} s ahead)")
        time.sleep(max(0.0, dues[-1] - time.time()))
        started = [system.stamp_result(h, timeout=60) for h in handles]
        worker.check_alive()
        late = [(s - d) * 1000.0 for s, d in zip(started, dues)]
        key = f"eta_{mode}"
        p50, p99 = percentile(late, 50), percentile(late, 99)
        early = sum(1 for x in late if x < 0)
        results[key + "_p50"].append(p50)
        results[key + "_p99"].append(p99)
        results[key + "_max"].append(max(late))
        results[key + "_early"].append(early)
        log(f"  {system.label:<18} ETA {mode:<6}: lateness p50 {p50:8.2f} ms  p99 {p99:8.2f} ms"
            f"  max {max(late):8.2f} ms  min {min(late):7.2f} ms  (early: {early}; enqueued "
            f"{n} in {(enqueued - (base - ahead)) * 1000:.0f} ms)")


# The prefilled rows look like apply_async(eta=...) rows: same columns, a random uuid4 id,
# the payload litequeue writes for noop(i), state SCHEDULED and an eta a year or more ahead.
_SQL_PREFILL = """
    INSERT INTO tasks (id, name, queue, priority, state, payload, eta, created_at)
    VALUES (?, 'benchtasks.noop', 'default', 0, 'SCHEDULED', ?, ?, ?)
"""


def build_future_template(tmp, rows):
    """A litequeue database holding `rows` SCHEDULED rows due a year or more ahead, and
    nothing else. Built once per run; every repeat works on a byte copy of it.

    The first row goes through the public API (apply_async(eta=...)); the bench checks
    that its own msgpack payload is byte-identical to that row's before inserting the
    other rows directly with apsw, 100 000 per transaction (synchronous=OFF and a 256 MB
    cache while building: the random uuid ids make the UNIQUE index insert-bound).
    """
    import msgpack
    db = os.path.join(tmp, "future-template.sqlite")
    remove_db(db)
    t0 = time.perf_counter()
    app, noop, _ = benchtasks.make_litequeue(db)
    far = time.time() + 365 * 86400.0
    try:
        first = noop.apply_async((0,), eta=_dt.datetime.fromtimestamp(far, _dt.timezone.utc))
        if first.detailed_state != litequeue.SCHEDULED:
            raise RuntimeError(f"template row is {first.detailed_state}, not SCHEDULED")
    finally:
        with contextlib.suppress(Exception):
            app._local.storage.close()
        with contextlib.suppress(Exception):
            apps = litequeue._apps
            (apps.discard if hasattr(apps, "discard") else apps.remove)(app)
    pack = msgpack.Packer(use_bin_type=True).pack
    conn = apsw.Connection(db)
    try:
        conn.set_busy_timeout(30000)
        (payload,), = conn.execute("SELECT payload FROM tasks").fetchall()
        envelope = msgpack.unpackb(bytes(payload), raw=False)
        # The template row carries its eta among its options (self.request.eta); the
        # prefilled rows need only what the worker reads: their args and kwargs.
        if not isinstance(envelope, dict) or \
                (envelope.get("args"), envelope.get("kwargs")) != ([0], {}) or \
                set(envelope) - {"args", "kwargs", "options"}:
            raise RuntimeError("litequeue's payload format changed: update build_future_template")
        conn.execute("PRAGMA cache_size = -262144")
        conn.execute("PRAGMA synchronous = OFF")
        now = time.time()
        batch = 100_000
        for start in range(1, rows, batch):
            with conn:
                conn.executemany(_SQL_PREFILL, (
                    (str(uuid.uuid4()), pack({"args": [i], "kwargs": {}}), far + i * 0.01, now)
                    for i in range(start, min(rows, start + batch))))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (count,), = conn.execute(
            "SELECT count(*) FROM tasks WHERE state = 'SCHEDULED'").fetchall()
    finally:
        conn.close()
    shutil.rmtree(db + "-lq", ignore_errors=True)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(db + suffix)
    if count != rows:
        raise RuntimeError(f"template holds {count} SCHEDULED rows, not {rows}")
    log(f"  built the template: {rows:,} SCHEDULED rows, "
        f"{os.path.getsize(db) / 2**20:.0f} MB, in {time.perf_counter() - t0:.1f} s")
    return db


def _stmt_steps(conn, sql, binds, times):
    """VM steps of each of `times` runs of sql (in the caller's transaction)."""
    seen = []

    def on_profile(event):
        if (event.get("sql") or "").strip() == sql.strip() and not event.get("trigger"):
            seen.append(event["stmt_status"].get("SQLITE_STMTSTATUS_VM_STEP"))

    conn.trace_v2(apsw.SQLITE_TRACE_PROFILE, on_profile, id="lqbench")
    try:
        for _ in range(times):
            conn.execute(sql, binds).fetchall()
    finally:
        conn.trace_v2(0, None, id="lqbench")
    return seen


def claim_counts(cfg):
    """Claims timed with n=1 and with n=16: together they use at most about half of the
    ready rows, so every timed claim finds a full batch."""
    return (min(cfg["claim_samples"], cfg["tasks"] // 4),
            min(cfg["claim_samples"] // 4, cfg["tasks"] // 2 // 16))


def claim_cost(db, cfg):
    """EXPLAIN QUERY PLAN of litequeue's claim statement, and its cost per execution
    (VM steps, and wall time) with the ready rows in place and no worker running.
    Runs inside BEGIN IMMEDIATE ... ROLLBACK, so the database is left as it was.
    Uses litequeue's private statement texts; if they move, reports nothing."""
    claim = getattr(litequeue, "_SQL_CLAIM", None)
    if claim is None:
        log("  litequeue._SQL_CLAIM not found: claim cost not measured")
        return None
    sched = {name: getattr(litequeue, name, None) for name in ("_SQL_NEXT_DUE",
                                                              "_SQL_PROMOTE_DUE")}
    conn = apsw.Connection(db)
    out = {}
    try:
        conn.set_busy_timeout(30000)
        # As litequeue's own connections: a stable plan, so the statement stays prepared.
        with contextlib.suppress(Exception):
            conn.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, 1)
        binds = {"worker": "bench-claim", "pid": os.getpid(), "now": time.time(),
                 "queue": "default", "n": 1}
        out["plan"] = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + claim, binds)]
        for name, sql in sched.items():
            if sql:
                out["plan" + name.lower()[4:]] = [
                    row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, binds)]
        conn.execute("BEGIN IMMEDIATE")
        try:
            # A claim takes rows only for a registered worker (a process declared dead
            # claims nothing); this row goes with the ROLLBACK.
            conn.execute("INSERT INTO workers (id, parent, hostname, pid, queues, concurrency, "
                         "started_at) VALUES (:worker, NULL, 'bench', :pid, :queue, 1, :now)",
                         {k: binds[k] for k in ("worker", "pid", "queue", "now")})
            k1, k16 = claim_counts(cfg)
            for n, k in ((1, k1), (16, k16)):
                binds["n"] = n
                samples = []
                for _ in range(k):
                    t0 = time.perf_counter()
                    rows = conn.execute(claim, binds).fetchall()
                    samples.append((time.perf_counter() - t0) * 1e6)
                    if len(rows) != n:
                        raise RuntimeError(f"claim returned {len(rows)} rows, wanted {n}")
                out[f"us_n{n}"] = statistics.median(samples)
                steps = _stmt_steps(conn, claim, binds, 20)
                out[f"steps_n{n}"] = statistics.median(steps) if steps else None
            for name, sql in sched.items():
                if sql:
                    binds["n"] = 1000   # _PROMOTE_BATCH; nothing is due
                    steps = _stmt_steps(conn, sql, binds, 5)
                    out["steps" + name.lower()[4:]] = statistics.median(steps) if steps else None
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()
    return out


def measure_future_drain(tmp, tag, template, n, cfg, results):
    """The drain measurement (litequeue NORMAL, -c 2) on a copy of the 1M-row template
    (template given) or on an empty table (template None). Appends to results."""
    system = LiteQueueSystem("litequeue NORMAL", "NORMAL")
    kind = "1m" if template else "0"
    db = os.path.join(tmp, f"{tag}.sqlite")
    remove_db(db)
    if template:
        shutil.copyfile(template, db)
    scheduled_before = cfg["future_rows"] if template else 0
    system.open(db)
    worker = None
    try:
        t0 = time.perf_counter()
        for i in range(n):
            system.enqueue(i)
        elapsed = time.perf_counter() - t0
        results[f"future_delay_{kind}"].append(n / elapsed)
        cost = claim_cost(db, cfg)
        if cost:
            for key in ("us_n1", "us_n16", "steps_n1", "steps_n16", "steps_next_due",
                        "steps_promote_due"):
                if cost.get(key) is not None:
                    results[f"claim_{key}_{kind}"].append(cost[key])
            results.setdefault(f"plans_{kind}", {k: v for k, v in cost.items()
                                                 if k.startswith("plan")})
        launched = time.time()
        worker = system.start_worker(tmp, f"{tag}-drain.log")
        first, last, observed = system.wait_drained(n, worker, timeout=max(120, n / 100))
        rate = n / (last - first)
        results[f"future_drain_{kind}"].append(rate)
        worker.stop()
        worker = None
        conn = _apsw_reader(db)
        try:
            (left,), = conn.execute(
                "SELECT count(*) FROM tasks WHERE state = 'SCHEDULED'").fetchall()
        finally:
            conn.close()
        if left != scheduled_before:
            raise RuntimeError(f"{left} SCHEDULED rows after the drain, not {scheduled_before}")
        log(f"  {'litequeue NORMAL':<18} {scheduled_before:>9,} scheduled: drain {rate:9.0f} "
            f"tasks/s ({last - first:.2f} s); delay() {n / elapsed:7.0f}/s; claim n=1 "
            f"{cost and cost.get('us_n1') or float('nan'):.1f} µs, "
            f"{cost and cost.get('steps_n1')} VM steps")
    finally:
        if worker is not None:
            worker.stop()
        system.close()
        remove_db(db)


@contextlib.contextmanager
def canvas_worker(system, tmp, tag):
    """litequeue: a fresh database and an idle -c 2 worker that has run one task; Celery:
    a fresh redis-server and a prefork -c 2 worker that has run one task."""
    if isinstance(system, CelerySystem):
        with system.session(tmp, tag) as worker:
            yield worker
    else:
        with idle_worker(system, tmp, tag, "canvas") as worker:
            yield worker


def run_chord(system, members):
    """chord([endstamp.s(i) for i in range(members)])(collect.s()) and its body's result.
    Returns (wall s from the chord(header)(body) call to the body's result, gap s between
    the last member's end and the body's start as the tasks read time.time(), database gap
    s or None)."""
    header = [system.endstamp.s(i) for i in range(members)]
    body = system.collect.s()
    t0 = time.perf_counter()
    result = system.canvas.chord(header)(body)
    started, last_end, count = result.get(timeout=120)
    wall = time.perf_counter() - t0
    if count != members:
        raise RuntimeError(f"{system.label}: the chord's body got {count} results, not "
                           f"{members}")
    return wall, started - last_end, system.chord_db_gap(result, members)


def measure_chord(system, worker, cfg, results):
    """One warm-up chord, 0.2 s idle, then one timed chord (the repeat's sample)."""
    members = cfg["chord_members"]
    run_chord(system, members)
    time.sleep(0.2)
    wall, gap, db_gap = run_chord(system, members)
    worker.check_alive()
    results["chord_wall"].append(wall * 1000.0)
    results["chord_gap"].append(gap * 1000.0)
    if db_gap is not None:
        results["chord_gap_db"].append(db_gap * 1000.0)
    db = f"; started_at - max(finished_at) {db_gap * 1000:.2f} ms" if db_gap is not None else ""
    log(f"  {system.label:<18} chord of {members}: body start - last member end "
        f"{gap * 1000:7.2f} ms (task clocks{db}); apply -> body result {wall * 1000:7.1f} ms")


def measure_chain(system, worker, cfg, results, runs=None):
    """`chain_runs` (or `runs`) chains of `chain_length` tasks (noop.s(0), then step.s()
    each), each timed from apply_async() to the last task's result and divided by the
    length; and as many noop.delay(i).get() round trips on the same worker, interleaved
    with the chains, `roundtrip_gap_s` of idleness after each. Appends the p50s and their
    ratio. DBOS (a system with run_chain): one workflow of `chain_length` steps, enqueued
    by the client and awaited with get_result()."""
    length, gap = cfg["chain_length"], cfg["roundtrip_gap_s"]
    runs = runs or cfg["chain_runs"]

    def one_chain():
        if hasattr(system, "run_chain"):
            t0 = time.perf_counter()
            value = system.run_chain(length)
            elapsed = time.perf_counter() - t0
        else:
            sig = system.canvas.chain(system.noop.s(0),
                                      *[system.step.s() for _ in range(length - 1)])
            t0 = time.perf_counter()
            value = sig.apply_async().get(timeout=60)
            elapsed = time.perf_counter() - t0
        if value != 0:
            raise RuntimeError(f"{system.label}: the chain returned {value!r}")
        return elapsed

    for i in range(3):                      # warm-up, not counted
        one_chain()
        system.roundtrip(-2 - i)
    time.sleep(0.2)
    hops, trips = [], []
    for i in range(runs):
        hops.append(one_chain() / length * 1000.0)
        time.sleep(gap)
        trips.append(timed_roundtrip(system, i))
        time.sleep(gap)
    worker.check_alive()
    hop, trip = percentile(hops, 50), percentile(trips, 50)
    results["chain_hop_p50"].append(hop)
    results["chain_rt_p50"].append(trip)
    results["chain_count"].append(runs)
    results["chain_ratio"].append(hop / trip)
    # The first hop starts from apply_async and the last ends in get(), as a round trip
    # does; the other length - 1 hops happen inside the worker. An estimate from the p50s.
    inner = (hop * length - trip) / (length - 1) if length > 1 else None
    if inner is not None:
        results["chain_inner_hop"].append(inner)
    log(f"  {system.label:<18} chain of {length}: per hop p50 {hop:6.2f} ms (max "
        f"{max(hops):6.2f}); round trip p50 {trip:6.2f} ms; hop / round trip "
        f"{hop / trip:.2f}")


def measure_workflows(system, tmp, tag, cfg, results):
    """Durable workflows, litequeue NORMAL, an idle `-c 2` worker:

    - per step: `chain_runs` workflows of `chain_length` steps, each timed from delay()
      to get() and divided by the length: step functions (wf_steps, DBOS's chain row's
      shape), then task steps (wf_tasks), `roundtrip_gap_s` idle after each;
    - a durable sleep's lateness: `wf_sleeps` workflows each sleeping `wf_sleep_s`,
      queued 50 ms apart; lateness = the time.time() the workflow read when it ran again
      minus the sleep's end as its step recorded it (steps.until);
    - `wf_sleepers` workflows asleep at once (each `wf_sleepers_s`): the worker's process
      count and CPU over a 2 s window while all of them sleep, then the time from their
      common due time to the last one's result."""
    with idle_worker(system, tmp, tag, "wf") as worker:
        n, gap = cfg["chain_length"], cfg["roundtrip_gap_s"]
        for key, flow in (("wf_steps", system.wf_steps), ("wf_tasks", system.wf_tasks)):
            per = []
            for i in range(3 + cfg["chain_runs"]):
                t0 = time.perf_counter()
                value = flow.delay(0, n).get(timeout=60)
                elapsed = time.perf_counter() - t0
                if value != 0:
                    raise RuntimeError(f"{key} returned {value!r}")
                if i >= 3:                       # three warm-up runs, not counted
                    per.append(elapsed / n * 1000.0)
                time.sleep(gap)
            results[f"{key}_p50"].append(percentile(per, 50))
            log(f"  {system.label:<18} workflow of {n} {key[3:]}: per step p50 "
                f"{percentile(per, 50):6.3f} ms (max {max(per):6.3f})")
        sleepers = [system.wf_sleep.delay(cfg["wf_sleep_s"])]
        for _ in range(cfg["wf_sleeps"] - 1):
            time.sleep(0.05)
            sleepers.append(system.wf_sleep.delay(cfg["wf_sleep_s"]))
        woke = [r.get(timeout=60) for r in sleepers]
        conn = _apsw_reader(system.db)
        try:
            ends = [conn.execute("SELECT until FROM steps WHERE workflow = ? AND "
                                 "kind = 'sleep'", (r.id,)).fetchall()[0][0] for r in sleepers]
        finally:
            conn.close()
        late = [(w - e) * 1000.0 for w, e in zip(woke, ends)]
        for q in (50, 99):
            results[f"wf_sleep_p{q}"].append(percentile(late, q))
        results["wf_sleep_max"].append(max(late))
        log(f"  {system.label:<18} durable sleep of {cfg['wf_sleep_s']:g} s: lateness p50 "
            f"{percentile(late, 50):.2f} ms, p99 {percentile(late, 99):.2f} ms, max "
            f"{max(late):.2f} ms ({len(late)} sleeps)")
        _measure_sleepers(system, worker, cfg, results)


def _measure_sleepers(system, worker, cfg, results):
    count, seconds = cfg["wf_sleepers"], cfg["wf_sleepers_s"]
    t0 = time.time()
    handles = [system.wf_sleep.delay(seconds) for _ in range(count)]
    enqueued, due = time.time() - t0, t0 + seconds
    conn = _apsw_reader(system.db)
    try:
        deadline = time.monotonic() + 30
        while conn.execute("SELECT count(*) FROM tasks WHERE state IN ('SCHEDULED', 'RETRY') AND "
                           "state = 'SCHEDULED'").fetchall()[0][0] < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} workflows not all asleep after 30 s")
            time.sleep(0.02)
    finally:
        conn.close()
    asleep = time.time()
    if due - asleep < 2.5:
        raise RuntimeError(f"the sleepers took {asleep - t0:.1f} s to fall asleep: raise "
                           "--wf-sleepers-s")
    results["wf_sleepers_enqueue_ms"].append(enqueued * 1000.0)
    results["wf_sleepers_asleep_ms"].append((asleep - t0) * 1000.0)
    time.sleep(0.2)
    _sleepers_window(worker, results)
    last = max(r.get(timeout=120) for r in handles)
    results["wf_sleepers_all_woke"].append((last - due) * 1000.0)
    conn = _apsw_reader(system.db)
    try:
        last_end = conn.execute("SELECT max(until) FROM steps WHERE kind = 'sleep' AND workflow "
                                "IN (SELECT value FROM json_each(?))",
                                (json.dumps([r.id for r in handles]),)).fetchall()[0][0]
    finally:
        conn.close()
    results["wf_sleepers_last_end"].append((last_end - due) * 1000.0)
    log(f"  {system.label:<18} {count} workflows asleep at once: "
        f"{results['wf_sleepers_procs'][-1]} worker processes "
        f"({results['wf_sleepers_threads'][-1]} threads), CPU "
        f"{results['wf_sleepers_cpu'][-1]:.2f}% of one core over 2 s; queued in "
        f"{enqueued:.2f} s, all asleep {asleep - t0:.2f} s after the first delay(); all ran "
        f"again {(last - due) * 1000.0:.0f} ms after their due time (the last recorded sleep "
        f"end {(last_end - due) * 1000.0:.0f} ms after it)")


def _cpu_window(worker, seconds=2.0):
    """(CPU of the worker's session over `seconds`, utime + stime as % of one core; its
    processes and their threads at the window's end)."""
    before, w0 = session_cpu_ticks(worker.pid), time.monotonic()
    time.sleep(seconds)
    after, w1 = session_cpu_ticks(worker.pid), time.monotonic()
    cpu = sum(after.get(pid, 0) - ticks for pid, ticks in before.items()) / CLK_TCK
    return cpu / (w1 - w0) * 100.0, len(after), session_threads(worker.pid)


def _sleepers_window(worker, results):
    """The sleepers' 2 s window: wf_sleepers_cpu, _procs and _threads."""
    cpu, procs, threads = _cpu_window(worker)
    results["wf_sleepers_cpu"].append(cpu)
    results["wf_sleepers_procs"].append(procs)
    results["wf_sleepers_threads"].append(threads)


def measure_dbos_workflows(system, tmp, tag, cfg, counts, results):
    """DBOS's side of the workflow rows, on a fresh system database with the two extra
    queues (register_workflow_queues) and one dbos_worker.py that has run one noop:

    - per step: counts["wf_runs"] workflows of `chain_length` steps (after
      counts["wf_warmups"] not counted), each timed from the client's enqueue to
      get_result() and divided by the length: the chain workflow (@DBOS.step functions),
      then wf_tasks (each step a child workflow enqueued on the steps queue and awaited);
    - `wf_sleepers` workflows asleep at once on the sleepers' queue (_dbos_sleepers; before
      the other sleeps, so that the thread count before them is the worker's at rest:
      DBOS's executor keeps every thread it has started);
    - durable sleep lateness: `wf_sleeps` wf_sleep(wf_sleep_s) 50 ms apart on the
      sleepers' queue; lateness = the time.time() each returned minus its sleep's end as
      DBOS recorded it (operation_outputs);
    - whether a sleeping workflow holds a worker_concurrency slot (_dbos_sleep_slot)."""
    with fresh_database(system, tmp, tag) as session:
        system.register_workflow_queues()
        worker = session.start_worker("wf")
        if not _dbos_part(_dbos_first_noop, system, worker, results):
            return
        _dbos_part(_dbos_wf_per_step, system, worker, results, cfg, counts)
        _dbos_part(_dbos_sleepers, system, worker, results, cfg)
        _dbos_part(_dbos_sleep_lateness, system, worker, results, cfg)
        _dbos_part(_dbos_sleep_slot, system, worker, results)
        _report_worker_logs([worker], system.label, results, errors_only=True)


# The workflow table's rows of each part of DBOS's measurement (where a failure shows).
DBOS_WF_PARTS = {"_dbos_wf_per_step": ("per_step",), "_dbos_sleepers": ("sleepers",),
                 "_dbos_sleep_lateness": ("lateness",), "_dbos_sleep_slot": ("slot",),
                 "_dbos_first_noop": ("per_step", "sleepers", "lateness", "slot")}


def _dbos_part(part, system, worker, results, *args):
    """Run one part of DBOS's workflow rows; True if it succeeded. A failure (a timeout,
    the worker's death, an error of DBOS's) is logged and kept, as a line of text, in
    results["wf_errors"][row] for the table's cells, and the other parts still run; a
    signal (SystemExit, KeyboardInterrupt) still ends the run."""
    try:
        part(system, worker, *args, results=results)
        return True
    except Exception as e:
        text = (f"{type(e).__name__}: {e}".splitlines() or ["?"])[0][:160]
        for row in DBOS_WF_PARTS[part.__name__]:
            results.setdefault("wf_errors", {}).setdefault(row, []).append(text)
        log(f"  {system.label:<18} {part.__name__[1:]} failed: {text}")
        return False


def _dbos_first_noop(system, worker, results):
    """One noop through the queue: waits out the worker's start-up."""
    value = system.roundtrip(-1)
    if value != -1:
        raise RuntimeError(f"{system.label}: the first noop returned {value!r}")


def _dbos_wf_per_step(system, worker, cfg, counts, results):
    n, gap = cfg["chain_length"], cfg["roundtrip_gap_s"]
    timeout = 60.0 + 5.0 * n                # at 1 s polls a task step takes 1 to 2 s
    for key, name, args in (("wf_steps", benchtasks.DBOS_CHAIN, (0, n)),
                            ("wf_tasks", benchtasks.DBOS_WF_TASKS, (0, n, system.poll))):
        per = []
        for i in range(counts["wf_warmups"] + counts["wf_runs"]):
            t0 = time.perf_counter()
            value = system.result(system.wf_start(name, *args), timeout)
            elapsed = time.perf_counter() - t0
            if value != 0:
                raise RuntimeError(f"{system.label}: {name} returned {value!r}")
            if i >= counts["wf_warmups"]:
                per.append(elapsed / n * 1000.0)
            time.sleep(gap)
        worker.check_alive()
        results[f"{key}_p50"].append(percentile(per, 50))
        results[f"{key}_count"].append(len(per))
        log(f"  {system.label:<18} workflow of {n} {key[3:]}: per step p50 "
            f"{percentile(per, 50):8.3f} ms (max {max(per):8.3f}; {len(per)} runs)")


def _dbos_sleep_spans(system, handles, woke, seconds):
    """[(the sleep's start, its recorded end, the time.time() the workflow returned)]."""
    ends = system.sleep_ends()
    missing = [h.get_workflow_id() for h in handles if h.get_workflow_id() not in ends]
    if missing:
        raise RuntimeError(f"{system.label}: {len(missing)} sleeping workflows have no "
                           f"DBOS.sleep row in operation_outputs (the first: {missing[0]})")
    return [(ends[h.get_workflow_id()] - seconds, ends[h.get_workflow_id()], w)
            for h, w in zip(handles, woke)]


def _dbos_sleep_lateness(system, worker, cfg, results):
    seconds, queue = cfg["wf_sleep_s"], benchtasks.DBOS_SLEEP_QUEUE
    handles = [system.wf_start(benchtasks.DBOS_WF_SLEEP, seconds, queue=queue)]
    for _ in range(cfg["wf_sleeps"] - 1):
        time.sleep(0.05)
        handles.append(system.wf_start(benchtasks.DBOS_WF_SLEEP, seconds, queue=queue))
    woke = system.wf_results(handles, 60.0 + 2 * seconds)
    worker.check_alive()
    late = [(w - end) * 1000.0 for _, end, w in _dbos_sleep_spans(system, handles, woke, seconds)]
    for q in (50, 99):
        results[f"wf_sleep_p{q}"].append(percentile(late, q))
    results["wf_sleep_max"].append(max(late))
    log(f"  {system.label:<18} durable sleep of {seconds:g} s: lateness p50 "
        f"{percentile(late, 50):.2f} ms, p99 {percentile(late, 99):.2f} ms, max "
        f"{max(late):.2f} ms ({len(late)} sleeps)")


def _dbos_sleep_slot(system, worker, results, seconds=3.0):
    """Whether a sleeping DBOS workflow keeps its queue's worker_concurrency slot: two
    wf_sleep(3 s) on the bench's worker_concurrency=2 queue; once both are asleep (and
    0.1 s more, so that both count as running: DBOS counts a claimed workflow against
    the limit only once its thread starts it), a third. From each sleep's start (its
    recorded end - 3 s) to the workflow's return, the most asleep at one moment: 2 says
    the third waited for a slot, 3 that it did not."""
    base = system.count_sleeps()
    handles = [system.wf_start(benchtasks.DBOS_WF_SLEEP, seconds) for _ in range(2)]
    deadline = time.monotonic() + 30
    while system.count_sleeps() - base < 2:
        worker.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{system.label}: 2 sleeps on the worker_concurrency=2 queue "
                               f"not both asleep after 30 s")
        time.sleep(0.02)
    time.sleep(0.1)
    handles.append(system.wf_start(benchtasks.DBOS_WF_SLEEP, seconds))
    woke = system.wf_results(handles, 60.0 + 3 * seconds)
    worker.check_alive()
    spans = _dbos_sleep_spans(system, handles, woke, seconds)
    most = max(sum(1 for a, _, b in spans if a <= t < b) for t, _, _ in spans)
    results["wf_sleep_slot_most"].append(most)
    log(f"  {system.label:<18} a third sleep queued while 2 sleep on its worker_concurrency=2 "
        f"queue: at most {most} asleep at once (the third's sleep began "
        f"{(spans[2][0] - spans[0][0]) * 1000.0:.0f} ms after the first's)")


def _dbos_sleepers(system, worker, cfg, results):
    """`wf_sleepers` wf_sleep(dbos_sleepers_s) enqueued one by one on the sleepers' queue;
    once every one has begun its sleep (its DBOS.sleep row written), the 2 s window (as
    litequeue's; and one before them, the worker at rest), then their results. The sleep
    is longer than litequeue's: on SQLite 1 000 DBOS workflows take about 7 s to enqueue
    and begin their sleeps (their threads' writes and the client's share the file)."""
    count, seconds = cfg["wf_sleepers"], cfg["dbos_sleepers_s"]
    before = system.count_sleeps()
    cpu, _, threads = _cpu_window(worker)          # the worker at rest, for comparison
    results["wf_sleepers_cpu_idle"].append(cpu)
    results["wf_sleepers_threads_idle"].append(threads)
    t0 = time.time()
    handles = [system.wf_start(benchtasks.DBOS_WF_SLEEP, seconds,
                               queue=benchtasks.DBOS_SLEEP_QUEUE) for _ in range(count)]
    enqueued, due = time.time() - t0, t0 + seconds
    deadline = time.monotonic() + 30
    while (asleep := system.count_sleeps() - before) < count:
        worker.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{system.label}: {asleep} of {count} workflows asleep after "
                               f"30 s")
        time.sleep(0.02)
    asleep = time.time()
    if due - asleep < 2.5:
        raise RuntimeError(f"{system.label}: the sleepers took {asleep - t0:.1f} s to begin "
                           f"their sleeps ({enqueued:.1f} s to enqueue): raise --dbos-sleepers-s")
    results["wf_sleepers_enqueue_ms"].append(enqueued * 1000.0)
    results["wf_sleepers_asleep_ms"].append((asleep - t0) * 1000.0)
    time.sleep(0.2)
    _sleepers_window(worker, results)
    woke = system.wf_results(handles, 120.0 + seconds)
    spans = _dbos_sleep_spans(system, handles, woke, seconds)
    last, last_end = max(woke), max(end for _, end, _ in spans)
    if min(end for _, end, _ in spans) < asleep:
        raise RuntimeError(f"{system.label}: a sleep ended before the last one began: they "
                           f"were never all asleep at once")
    results["wf_sleepers_all_woke"].append((last - due) * 1000.0)
    results["wf_sleepers_last_end"].append((last_end - due) * 1000.0)
    log(f"  {system.label:<18} {count} workflows asleep at once: "
        f"{results['wf_sleepers_procs'][-1]} process, {results['wf_sleepers_threads'][-1]} "
        f"threads ({results['wf_sleepers_threads_idle'][-1]} before), CPU "
        f"{results['wf_sleepers_cpu'][-1]:.2f}% of one core over 2 s (before them "
        f"{results['wf_sleepers_cpu_idle'][-1]:.2f}%); enqueued in "
        f"{enqueued:.2f} s, all asleep {asleep - t0:.2f} s after the first enqueue; the last "
        f"recorded sleep end {(last_end - due) * 1000.0:.0f} ms "
        f"after the due time, the last ran again {(last - due) * 1000.0:.0f} ms after it")


# ---------------------------------------------------------------------------
# Concurrency: coroutines, threads, global rate limits
# ---------------------------------------------------------------------------

def _report_worker_logs(workers, label, results, errors_only=False):
    """Log (and count, in results["log_problems"]) what the workers wrote to their logs
    beyond their shutdown lines (errors_only: see _log_problems)."""
    problems = []
    for worker in workers:
        problems += _log_problems(worker, errors_only)
    if problems:
        seen = results.setdefault("log_problems", {})
        seen[label] = seen.get(label, 0) + len(problems)
        log(f"  {label}: the worker logs hold {len(problems)} unexpected lines; the first: "
            f"{problems[0][:300]}")


def measure_async_drain(system, tmp, tag, key, n, seconds, results):
    """The drain measurement on the async rows' work: n tasks queued into a fresh database
    with no worker running (litequeue: asleep(i, seconds), or anoop(i) when seconds is
    None, through group() in batches of 1000; huey: block(i, seconds) one by one), then
    the worker starts and every task stores its result. The rate is tasks ÷ (first start
    → last result stored), as for the drain row. Appends it to results[key]."""
    with fresh_database(system, tmp, f"{tag}-{key}") as session:
        if isinstance(system, LiteQueueMore):
            for first in range(0, n, 1000):
                if seconds is None:
                    sigs = (system.anoop.s(i) for i in range(first, min(n, first + 1000)))
                else:
                    sigs = (system.asleep.s(i, seconds)
                            for i in range(first, min(n, first + 1000)))
                litequeue.group(sigs).apply_async()
        else:
            for i in range(n):
                system.block(i, seconds)
        launched = time.time()
        worker = session.start_worker(key)
        # The worker's CPU from its first task on (start-up excluded): is a rate below the
        # ceiling bound by the CPU (2 cores) or by waiting?
        ticks0 = _cpu_at_first_start(system, worker, timeout=60)
        first, last, observed = system.wait_drained(n, worker, timeout=max(120, n / 50))
        ticks = sum(session_cpu_ticks(worker.pid).values()) - ticks0
        rate = n / (last - first)
        cpu = ticks / CLK_TCK / (last - first) * 100.0
        results[key].append(rate)
        results[key + "_incl_startup"].append(n / (observed - launched))
        results[key + "_cpu"].append(cpu)
        # Worker's log, read before stop() adds its shutdown lines (the huey greenlet
        # consumer warns there when gevent's monkey-patch is missing).
        _report_worker_logs([worker], f"{system.label} ({key})", results)
        log(f"  {system.label:<34} {rate:9.0f} tasks/s  (first start -> last result "
            f"{last - first:.2f} s; launch -> observed done {observed - launched:.2f} s; "
            f"worker CPU {cpu:.0f}% of one core)")


def _cpu_at_first_start(system, worker, timeout):
    """Wait (polling every 5 ms) until the worker has started a task, then return the CPU
    ticks its processes have used so far."""
    deadline = time.monotonic() + timeout
    conn = _apsw_reader(system.db) if isinstance(system, LiteQueueSystem) else None
    try:
        while True:
            worker.check_alive()
            if conn is not None:
                started = conn.execute("SELECT EXISTS(SELECT 1 FROM tasks WHERE state IN "
                                       "('STARTED', 'SUCCESS'))").fetchall()[0][0]
            else:
                started = any(f.startswith("start-") for f in os.listdir(system.marks))
            if started:
                return sum(session_cpu_ticks(worker.pid).values())
            if time.monotonic() > deadline:
                raise RuntimeError(f"{system.label}: no task started in {timeout} s")
            time.sleep(0.005)
    finally:
        if conn is not None:
            conn.close()


def measure_threads(system, tmp, tag, key, cfg, results):
    """An idle worker (litequeue -P threads -c N, or huey -k thread -w N) that has run one
    task, then `thread_settle` s of idleness; then `thread_tasks` block(i, thread_sleep)
    calls one by one. Wall time = first delay() → the last result stored (litequeue: its
    max(finished_at); huey: the latest SIGNAL_COMPLETE mark, sent after put_result)."""
    n, seconds = cfg["thread_tasks"], cfg["thread_sleep"]
    with idle_worker(system, tmp, f"{tag}-{key}", key) as worker:
        time.sleep(cfg["thread_settle"])
        worker.check_alive()
        t0 = time.time()
        handles = [system.block(i, seconds) if isinstance(system, HueyMore)
                   else system.block.delay(i, seconds) for i in range(n)]
        queued = time.time() - t0
        timeout = 60 + n * seconds
        extra = ""
        if isinstance(system, HueyMore):
            system.wait_drained(n, worker, timeout=timeout)
            values = [h.get(blocking=True, timeout=30) for h in handles]
            # Read the marks again now: SIGNAL_COMPLETE follows put_result, so the last
            # mark can land just after the poll saw the last result.
            last = max(benchtasks.read_mark(os.path.join(system.marks, f))
                       for f in os.listdir(system.marks) if f.startswith("end-"))
        else:
            values = [h.get(timeout=timeout) for h in handles]
            conn = _apsw_reader(system.db)
            try:
                spans = conn.execute(
                    "SELECT started_at, finished_at FROM tasks WHERE name = 'benchtasks.block' "
                    "AND state = 'SUCCESS'").fetchall()
            finally:
                conn.close()
            if len(spans) != n:
                raise RuntimeError(f"{system.label}: {len(spans)} of {n} block rows succeeded")
            last = max(f for _, f in spans)
            # The most rows STARTED at once, from their started_at / finished_at.
            events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
            running = most = 0
            for _, step in events:
                running += step
                most = max(most, running)
            results[key + "_most"].append(most)
            extra = f"; at most {most} running at once"
        if values != list(range(n)):
            raise RuntimeError(f"{system.label}: the block tasks returned {values[:5]}...")
        wall = last - t0
        results[key].append(wall)
        results[key + "_queued"].append(queued * 1000.0)
        worker.check_alive()
        _report_worker_logs([worker], f"{system.label} ({key})", results)
        log(f"  {system.label:<34} {n} × sleep({seconds:g}): first delay() -> last result "
            f"{wall:.3f} s (queuing {queued * 1000:.1f} ms{extra})")


def _most_in_window(times, window=1.0):
    """The most of `times` in any half-open window [t, t + window) (sliding over them)."""
    times = sorted(times)
    most = j = 0
    for i, t in enumerate(times):
        while t - times[j] >= window:
            j += 1
        most = max(most, i - j + 1)
    return most


def _start_stats(prefix, starts, results):
    """The most starts in any 1 s window, the achieved rate ((n − 1) ÷ (last start − first
    start): n starts span n − 1 intervals) and the smallest gap between two consecutive
    starts, of one run; appended to results[prefix + ...] and returned."""
    starts = sorted(starts)
    window = _most_in_window(starts)
    rate = (len(starts) - 1) / (starts[-1] - starts[0])
    gap = min(b - a for a, b in zip(starts, starts[1:]))
    results[prefix + "window"].append(window)
    results[prefix + "rate"].append(rate)
    results[prefix + "gap_min"].append(gap * 1000.0)
    results[prefix + "span"].append(starts[-1] - starts[0])
    return window, rate, gap


def _rate_probes(system, deadline_s, stamp_of):
    """Unrelated stamp() tasks while the rate-limited backlog drains: one right away, then
    one a second (each once the one before has run: stamp_of(handle) waits for it) until
    `deadline_s` has passed. Returns [(the time just before its delay(), handle)]."""
    probes = []
    began = time.monotonic()
    k = 0
    while True:
        t = time.time()
        handle = system.stamp.delay(-1 - k)
        probes.append((t, handle))
        stamp_of(handle)                    # waits for it to run
        k += 1
        if time.monotonic() - began >= deadline_s:
            return probes
        time.sleep(max(0.0, began + k - time.monotonic()))


def measure_ratelimit_litequeue(system, tmp, tag, cfg, results):
    """Two supervisors (`litequeue worker -c 2` each) on one fresh file, idle and up; then
    `rate_backlog` limited(i) tasks (rate_limit=RATE_LIMIT) queued by delay(), then an
    unrelated stamp() right away and one a second while the backlog drains. Windows and
    rate from the limited rows' started_at (and from the tasks' own time.time()); the
    probes' wait is started_at − the time before their delay()."""
    n = cfg["rate_backlog"]
    with fresh_database(system, tmp, f"{tag}-rl") as session:
        workers = [session.start_worker("rl-a"), session.start_worker("rl-b")]
        conn = _apsw_reader(system.db)
        try:
            deadline = time.monotonic() + 60
            while conn.execute("SELECT count(*) FROM workers WHERE parent IS NOT NULL"
                               ).fetchall()[0][0] < 4:
                for worker in workers:
                    worker.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{system.label}: 4 worker processes not up in 60 s")
                time.sleep(0.05)
        finally:
            conn.close()
        assert system.roundtrip(-1) == -1
        time.sleep(cfg["rate_settle"])
        handles = [system.limited.delay(i) for i in range(n)]
        expected = n / benchtasks_rate()
        probes = _rate_probes(system, expected * 0.8,
                              lambda h: h.get(timeout=expected * 3 + 30))
        own = [h.get(timeout=expected * 3 + 30) for h in handles]
        for worker in workers:
            worker.check_alive()
        conn = _apsw_reader(system.db)
        try:
            rows = conn.execute("SELECT started_at, pid FROM tasks WHERE name = "
                                "'benchtasks.limited' AND state = 'SUCCESS'").fetchall()
            probe_started = dict(conn.execute(
                "SELECT id, started_at FROM tasks WHERE name = 'benchtasks.stamp'").fetchall())
        finally:
            conn.close()
        if len(rows) != n:
            raise RuntimeError(f"{system.label}: {len(rows)} of {n} limited rows succeeded")
        window, rate, gap = _start_stats("rl_lq_", [r[0] for r in rows], results)
        own_window, own_rate, own_gap = _start_stats("rl_lq_own_", own, results)
        waits = [(probe_started[h.id] - t) * 1000.0 for t, h in probes]
        own_waits = [(h.get(timeout=5) - t) * 1000.0 for t, h in probes]
        results["rl_lq_wait_first"].append(waits[0])
        results["rl_lq_wait_max"].append(max(waits))
        results["rl_lq_own_wait_first"].append(own_waits[0])
        results["rl_lq_own_wait_max"].append(max(own_waits))
        results["rl_lq_probes"].append(len(probes))
        pids = len({r[1] for r in rows})
        results["rl_lq_pids"].append(pids)
        _report_worker_logs(workers, f"{system.label} (ratelimit)", results)
        log(f"  {system.label:<34} {n} limited: most starts in 1 s {window} (task clock "
            f"{own_window}); {rate:.2f} starts/s; smallest gap {gap * 1000:.1f} ms (task "
            f"clock {own_gap * 1000:.1f} ms); {pids} processes ran them; unrelated task "
            f"waits {waits[0]:.2f} ms, worst of {len(probes)} {max(waits):.2f} ms")


def benchtasks_rate():
    """limited()'s rate limit in starts per second."""
    count, _, period = benchtasks.RATE_LIMIT.partition("/")
    return float(count) / {"s": 1.0, "m": 60.0, "h": 3600.0}[period or "s"]


def measure_ratelimit_celery(system, tmp, tag, cfg, results):
    """As measure_ratelimit_litequeue, on Celery: redis-server and two `celery worker -P
    prefork -c 2` processes, limited with rate_limit=RATE_LIMIT (a per-worker limit in
    Celery). Start times are the tasks' own time.time(); Celery stores none."""
    n = cfg["rate_backlog"]
    with system.session(tmp, f"{tag}-rl-celery", workers=2, more=True) as workers:
        time.sleep(cfg["rate_settle"])
        handles = [system.limited.delay(i) for i in range(n)]
        # Celery's limit is per worker: expect about twice the rate, at first. Once every
        # prefetched message is a rate-limited one, each worker has been seen to start
        # about one a second (Redis transport): the timeouts allow for that.
        expected = n / benchtasks_rate()
        timeout = n + 60.0
        probes = _rate_probes(system, expected * 0.4, lambda h: h.get(timeout=timeout))
        own = [h.get(timeout=timeout) for h in handles]
        for worker in workers:
            worker.check_alive()
        window, rate, gap = _start_stats("rl_cel_", own, results)
        waits = [(h.get(timeout=5) - t) * 1000.0 for t, h in probes]
        results["rl_cel_wait_first"].append(waits[0])
        results["rl_cel_wait_max"].append(max(waits))
        results["rl_cel_probes"].append(len(probes))
        _report_worker_logs(workers, f"{system.label} (ratelimit)", results, errors_only=True)
        log(f"  {system.label:<34} {n} limited: most starts in 1 s {window}; {rate:.2f} "
            f"starts/s; smallest gap {gap * 1000:.1f} ms; unrelated task waits "
            f"{waits[0]:.2f} ms, worst of {len(probes)} {max(waits):.2f} ms")


# ---------------------------------------------------------------------------
# Issue 13: delay() against a bare INSERT, producers at once, launch, memory
# ---------------------------------------------------------------------------

# A bare committed INSERT of the row delay() writes for noop(i), through plain apsw.
_SQL_BARE_INSERT = """
    INSERT INTO tasks (id, name, queue, priority, state, payload, created_at)
    VALUES (?, ?, ?, ?, 'PENDING', ?, ?)
"""


def _uuid7_text():
    """A task id in the layout litequeue's own ids have (UUIDv7: 48 bits of milliseconds,
    then random bits), so that the bare INSERTs land at the right edge of the id index,
    as delay()'s do; the text of uuid.UUID(int=value), formatted without making the
    object (about 1.4 µs here, against 2.2 µs through uuid.UUID)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76        # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62        # RFC 4122 variant
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _noop_payload(i):
    import msgpack
    return msgpack.packb({"args": [i], "kwargs": {}}, use_bin_type=True)


def _row_shape(db):
    """The non-NULL columns of noop(0)'s row in a file (read through apsw): the values,
    except the id (its length and uuid version) and created_at (its SQL type)."""
    conn = _apsw_reader(db)
    try:
        cur = conn.execute("SELECT * FROM tasks WHERE payload = ? ORDER BY seq LIMIT 1",
                           (_noop_payload(0),))
        names = [d[0] for d in cur.getdescription()]
        rows = cur.fetchall()
    finally:
        conn.close()
    if not rows:
        return {"(no row of noop(0) with the bench's msgpack payload)": True}
    shape = {}
    for name, value in zip(names, rows[0]):
        if value is None or name == "seq":
            continue
        if name == "id":
            value = f"{len(value)} chars, version {value[14]}" if len(value) == 36 else \
                f"{len(value)} chars"
        elif name == "created_at":
            value = type(value).__name__
        elif isinstance(value, (bytes, memoryview)):
            value = bytes(value).hex()
        shape[name] = value
    return shape


def _time_delay_calls(tmp, tag, sync, n, check):
    """Seconds for n calls of noop.delay(i) on a fresh file at `sync`, no worker running,
    after one untimed call (the connection is open and the task name registered)."""
    system = LiteQueueSystem(f"litequeue {sync}", sync)
    with fresh_database(system, tmp, tag):
        delay = system.noop.delay
        delay(-1)
        t0 = time.perf_counter()
        for i in range(n):
            delay(i)
        elapsed = time.perf_counter() - t0
        return elapsed, (_row_shape(system.db) if check else None)


def _time_bare_inserts(tmp, tag, sync, n, check):
    """Seconds for n bare committed INSERTs of noop(i)'s row on a fresh file whose schema
    litequeue made: a plain apsw.Connection, WAL, PRAGMA synchronous = sync, litequeue's
    busy timeout, autocommit (one implicit transaction per statement). Each INSERT makes
    what delay() makes for its row: a time-ordered id, the msgpack payload, created_at.
    One untimed INSERT first, as on the delay() side."""
    import msgpack
    system = LiteQueueSystem(f"litequeue {sync}", sync)
    db = os.path.join(tmp, f"{tag}.sqlite")
    remove_db(db)
    try:
        system.open(db)                 # the schema and its indexes, made by litequeue
        busy = system.app.conf["busy_timeout"]
        system.close()
        conn = apsw.Connection(db)
        try:
            conn.set_busy_timeout(int(busy * 1000))
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
            conn.execute(f"PRAGMA synchronous = {sync}")
            level = conn.execute("PRAGMA synchronous").fetchall()[0][0]
            if mode != "wal" or level != {"NORMAL": 1, "FULL": 2}[sync]:
                raise RuntimeError(f"bare INSERT connection: journal_mode {mode}, "
                                   f"synchronous {level}")
            pack = msgpack.Packer(use_bin_type=True).pack
            execute, new_id, now = conn.execute, _uuid7_text, time.time
            name, queue = "benchtasks.noop", "default"
            execute(_SQL_BARE_INSERT, (new_id(), name, queue, 0,
                                       pack({"args": [-1], "kwargs": {}}), now()))
            t0 = time.perf_counter()
            for i in range(n):
                execute(_SQL_BARE_INSERT, (new_id(), name, queue, 0,
                                           pack({"args": [i], "kwargs": {}}), now()))
            elapsed = time.perf_counter() - t0
        finally:
            conn.close()
        return elapsed, (_row_shape(db) if check else None)
    finally:
        system.close()
        remove_db(db)


def measure_insert(tmp, tag, cfg, results):
    """delay() against the physical limit: per level (NORMAL, then FULL), `insert_rounds`
    rounds, each one file of n noop.delay(i) calls and one of n bare INSERTs (alternating
    which goes first), every file fresh. The repeat's figures: both rates over all its
    rounds, their ratio, and the difference per call in µs."""
    for sync in ("NORMAL", "FULL"):
        n = cfg["insert_calls"] if sync == "NORMAL" else cfg["insert_calls_full"]
        rounds = cfg["insert_rounds"]
        spent = {"delay": [], "bare": []}
        shapes = {}
        for k in range(rounds):
            for side in (("delay", "bare") if k % 2 == 0 else ("bare", "delay")):
                timer = _time_delay_calls if side == "delay" else _time_bare_inserts
                elapsed, shape = timer(tmp, f"{tag}-insert-{sync}-{k}-{side}", sync, n, k == 0)
                spent[side].append(elapsed)
                if shape is not None:
                    shapes[side] = shape
        total = n * rounds
        d, b = sum(spent["delay"]), sum(spent["bare"])
        rate_d, rate_b = total / d, total / b
        per_round = [bare / delay for delay, bare in zip(spent["delay"], spent["bare"])]
        key = f"ins_{sync.lower()}"
        results[key + "_delay"].append(rate_d)
        results[key + "_bare"].append(rate_b)
        results[key + "_ratio"].append(rate_d / rate_b * 100.0)
        results[key + "_diff_us"].append((d - b) / total * 1e6)
        results[key + "_rounds"].extend(r * 100.0 for r in per_round)
        if shapes.get("delay") != shapes.get("bare"):
            keys = sorted(set(shapes.get("delay", {})) | set(shapes.get("bare", {})))
            diff = {k: (shapes.get("delay", {}).get(k), shapes.get("bare", {}).get(k))
                    for k in keys if shapes.get("delay", {}).get(k) != shapes.get("bare",
                                                                                 {}).get(k)}
            results.setdefault("ins_row_diff", {})[sync] = diff
            log(f"  insert {sync}: the rows differ (column: delay(), bare): {diff}")
        log(f"  insert {sync:<6}: delay() {rate_d:8.0f}/s, bare INSERT {rate_b:8.0f}/s: "
            f"{rate_d / rate_b * 100:5.1f}% ({(d - b) / total * 1e6:+.1f} µs per call; "
            f"{rounds} rounds of {n:,}, per round {min(per_round) * 100:.0f}–"
            f"{max(per_round) * 100:.0f}%)")


def _start_producer(tmp, db, tag, k, first):
    """bench/producer.py in its own session, with a pipe on its standard input."""
    out = os.path.join(tmp, f"{tag}-producer-{k}.json")
    argv = [sys.executable, os.path.join(BENCH_DIR, "producer.py"), db, "NORMAL", out,
            str(first)]
    worker = Worker(f"producer {k}", argv, _worker_env({}), tmp,
                    os.path.join(tmp, f"{tag}-producer-{k}.log"), signal.SIGTERM,
                    stdin=subprocess.PIPE)
    worker.out = out
    return worker


def _log_tail(worker):
    worker.log.flush()
    with open(worker.log.name, errors="replace") as f:
        return f.read()[-2000:]


def _producer_phase(producers, seconds):
    """Start every producer of a phase at one instant, 50 ms from now, for `seconds`; wait
    for them to end; return [(report dict, latencies in ms)]."""
    start = time.time() + 0.05
    for p in producers:
        p.check_alive()
        p.proc.stdin.write(f"{start!r} {seconds!r}\n".encode())
        p.proc.stdin.close()
    out = []
    for p in producers:
        try:
            code = p.proc.wait(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{p.kind} did not end in {seconds + 60:.0f} s") from None
        if code != 0:
            raise RuntimeError(f"{p.kind} exited with code {code}:\n{_log_tail(p)}")
        with open(p.out) as f:
            report = json.load(f)
        lat = array.array("d")
        with open(p.out + ".lat", "rb") as f:
            lat.frombytes(f.read())
        if len(lat) != report["calls"]:
            raise RuntimeError(f"{p.kind}: {len(lat)} latencies for {report['calls']} calls")
        out.append((report, [x * 1000.0 for x in lat]))
        p.stop()
    return out


def measure_producers(tmp, tag, cfg, results, order):
    """delay() throughput of 1 producer process, then of `producers` processes at once
    (or the other way round: `order`), each phase `producer_seconds` long, on a fresh file
    at NORMAL while a `worker -c 2` drains a backlog of no-op tasks queued first through
    group(). Every producer process starts, imports and opens the file before the worker
    starts, then waits on its pipe. The backlog must still hold `min_backlog` tasks when
    each phase ends, or the figure is refused."""
    system = LiteQueueSystem("litequeue NORMAL", "NORMAL")
    many, seconds, backlog = cfg["producers"], cfg["producer_seconds"], cfg["producer_backlog"]
    with fresh_database(system, tmp, f"{tag}-producers") as session:
        t0 = time.perf_counter()
        system.prefill(backlog)
        log(f"  producers: {backlog:,} tasks queued through group() in "
            f"{time.perf_counter() - t0:.1f} s")
        started = []
        try:
            phases = {1: [], many: []}
            for size in (1, many):
                for k in range(size):
                    p = _start_producer(tmp, system.db, f"{tag}-p{size}", k,
                                        10**9 * (len(started) + 1))
                    started.append(p)
                    phases[size].append(p)
            deadline = time.monotonic() + 60
            while not all(os.path.exists(p.out + ".ready") for p in started):
                for p in started:
                    p.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError("the producer processes were not ready in 60 s")
                time.sleep(0.01)
            worker = session.start_worker("producers")
            deadline = time.monotonic() + 60
            while system.backlog() > backlog - 200:       # the worker is draining
                worker.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError("producers: the worker did not start draining")
                time.sleep(0.01)
            rates = {}
            for size in order:
                before, t_before = system.backlog(), time.monotonic()
                outs = _producer_phase(phases[size], seconds)
                worker.check_alive()
                left, t_after = system.backlog(), time.monotonic()
                calls = sum(r["calls"] for r, _ in outs)
                if left < cfg["min_backlog"]:
                    raise RuntimeError(
                        f"producers: the backlog ran out ({left} left) before the phase of "
                        f"{size} producer(s) ended: the worker was not draining throughout; "
                        f"queue more (--producer-backlog)")
                span = max(r["ended"] for r, _ in outs) - min(r["began"] for r, _ in outs)
                rate = calls / span
                lat = [x for _, lats in outs for x in lats]
                drained = (before + calls - left) / (t_after - t_before)
                key = f"prod_{'one' if size == 1 else 'many'}"
                p50, p99 = percentile(lat, 50), percentile(lat, 99)
                results[key + "_rate"].append(rate)
                results[key + "_p50"].append(p50)
                results[key + "_p99"].append(p99)
                results[key + "_max"].append(max(lat))
                results[key + "_mean"].append(statistics.fmean(lat))
                results[key + "_over1ms"].append(sum(1 for x in lat if x > 1.0) / len(lat) * 100)
                results[key + "_calls"].append(calls)
                results[key + "_drain"].append(drained)
                results[key + "_left"].append(left)
                rates[size] = rate
                each = ", ".join(f"{r['calls'] / (r['ended'] - r['began']):.0f}" for r, _ in outs)
                log(f"  producers: {size} at once: {rate:8.0f} delay()/s in total "
                    f"({each} each); latency p50 {p50:.2f} ms, p99 {p99:.2f} ms, max "
                    f"{max(lat):.2f} ms ({calls:,} calls); worker drained about "
                    f"{drained:,.0f}/s; {left:,} still queued at the end")
            results["prod_ratio"].append(rates[many] / rates[1])
            _report_worker_logs([worker], "producers (worker)", results)
        finally:
            for p in started:
                p.stop()


def _workers_rows(db):
    conn = _apsw_reader(db)
    try:
        return conn.execute("SELECT parent, pid, started_at FROM workers").fetchall()
    finally:
        conn.close()


def _wait_children(db, worker, n=2, timeout=30.0):
    """Poll (every 5 ms) until the workers table holds n children; return its rows."""
    deadline = time.monotonic() + timeout
    while True:
        rows = _workers_rows(db)
        if sum(1 for r in rows if r[0] is not None) >= n:
            return rows
        worker.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{n} worker children not registered in {timeout:.0f} s")
        time.sleep(0.005)


# The launch rows' second way to start litequeue's worker: as the installed `litequeue`
# command does (its entry point imports litequeue and calls cli()), so that litequeue.py is
# loaded once per process, not also run as the __main__ script (and, in each child spawned
# by multiprocessing, as __mp_main__).
LITEQUEUE_CLI = ["-c", "import sys, litequeue; sys.exit(litequeue.cli())"]


def _launch_litequeue(tmp, tag, bytecode=False, entry=None):
    """One launch: a fresh file with noop(7) queued, then `litequeue.py worker -c 2 -A
    benchtasks` started (entry: LITEQUEUE_CLI instead of litequeue.py); ms from just before
    Popen to get() returning, to the row's finished_at and started_at, and to the
    supervisor's and the children's workers rows."""
    system = LiteQueueSystem("litequeue NORMAL", "NORMAL")
    with fresh_database(system, tmp, tag) as session:
        handle = system.noop.delay(7)
        launched = time.time()
        worker = session.start_worker("launch", bytecode=bytecode, entry=entry)
        value = handle.get(timeout=60)
        got = time.time()
        if value != 7:
            raise RuntimeError(f"litequeue launch: noop(7) returned {value!r}")
        rows = _wait_children(system.db, worker)
        conn = _apsw_reader(system.db)
        try:
            (claimed, finished), = conn.execute(
                "SELECT started_at, finished_at FROM tasks WHERE id = ?", (handle.id,)
            ).fetchall()
        finally:
            conn.close()
        worker.check_alive()
        _report_worker_logs([worker], "launch (litequeue)", {})
        supervisor = [r[2] for r in rows if r[0] is None]
        children = sorted(r[2] for r in rows if r[0] is not None)
        return {"get": (got - launched) * 1000.0, "stored": (finished - launched) * 1000.0,
                "claimed": (claimed - launched) * 1000.0,
                "supervisor": (supervisor[0] - launched) * 1000.0,
                "child1": (children[0] - launched) * 1000.0,
                "children": (children[-1] - launched) * 1000.0}


def _launch_huey(tmp, tag):
    """One launch: a fresh file with noop(7) queued, then `huey_consumer benchtasks.huey
    -w 2 -k process -q` started; ms from just before Popen to get() returning (polling
    every 1 ms) and to the consumer's SIGNAL_COMPLETE mark (after put_result)."""
    system = HueySystem("huey")
    with fresh_database(system, tmp, tag) as session:
        handle = system.noop(7)
        launched = time.time()
        worker = session.start_worker("launch")
        value = handle.get(blocking=True, timeout=60, backoff=1.0, max_delay=0.001)
        got = time.time()
        if value != 7:
            raise RuntimeError(f"huey launch: noop(7) returned {value!r}")
        deadline = time.monotonic() + 5
        while True:                 # the mark follows put_result: it may land just after
            ends = [f for f in os.listdir(system.marks) if f.startswith("end-")]
            if ends or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        stored = min(benchtasks.read_mark(os.path.join(system.marks, f)) for f in ends)
        worker.check_alive()
        return {"get": (got - launched) * 1000.0, "stored": (stored - launched) * 1000.0}


def _launch_celery(cel, tmp, tag, url):
    """One launch on a running redis-server: noop.delay(7) sent, then `celery -A
    benchtasks:celery_app worker -P prefork -c 2` started; ms from just before Popen to
    result.get() returning and to the result's date_done (Celery's own stamp)."""
    handle = cel.noop.delay(7)
    launched = time.time()
    worker = cel.start_worker(tmp, tag, url)
    try:
        value = handle.get(timeout=60)
        got = time.time()
        if value != 7:
            raise RuntimeError(f"Celery launch: noop(7) returned {value!r}")
        done = handle.date_done
        if isinstance(done, str):
            done = _dt.datetime.fromisoformat(done)
        if done.tzinfo is None:
            done = done.replace(tzinfo=_dt.timezone.utc)
        worker.check_alive()
        _report_worker_logs([worker], "launch (Celery)", {}, errors_only=True)
        return {"get": (got - launched) * 1000.0,
                "stored": (done.timestamp() - launched) * 1000.0}
    finally:
        worker.stop()


def _launch_dbos(system, tmp, tag):
    """One launch: a fresh system database with noop(7) enqueued, then
    bench/dbos_worker.py started; ms from just before Popen to get_result() returning,
    polling every 1 ms (at its default it polls every 1 s), whatever the queue's poll."""
    with fresh_database(system, tmp, tag) as session:
        handle = system.enqueue(7)
        launched = time.time()
        worker = session.start_worker("launch")
        with _deadline(60, f"{system.label} launch"):
            value = handle.get_result(polling_interval_sec=0.001)
        got = time.time()
        if value != 7:
            raise RuntimeError(f"{system.label} launch: noop(7) returned {value!r}")
        worker.check_alive()
        _report_worker_logs([worker], f"launch ({system.label})", {})
        return {"get": (got - launched) * 1000.0}


def _pyc_dirs():
    """Where a worker's imports could write .pyc files: __pycache__ beside the checkout,
    bench/, and the interpreter's library and site-packages directories."""
    import site
    import sysconfig
    roots = {REPO, BENCH_DIR}
    tops = set(site.getsitepackages()) | {sysconfig.get_paths()["stdlib"]}
    with contextlib.suppress(Exception):
        tops.add(site.getusersitepackages())
    return roots, {t for t in tops if os.path.isdir(t)}


def _pyc_files(roots, tops):
    found = set()
    for root in roots:
        cache = os.path.join(root, "__pycache__")
        if os.path.isdir(cache):
            found |= {os.path.join(cache, f) for f in os.listdir(cache)}
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            if os.path.basename(dirpath) == "__pycache__":
                found |= {os.path.join(dirpath, f) for f in filenames}
    return found


@contextlib.contextmanager
def _bytecode_written():
    """Remove afterwards every .pyc file (and __pycache__ directory) that appeared
    meanwhile beside the checkout, in bench/ and in the interpreter's directories: the
    launch row's runs with PYTHONDONTWRITEBYTECODE unset write them."""
    roots, tops = _pyc_dirs()
    caches = {os.path.join(r, "__pycache__") for r in roots}
    had_cache = {c for c in caches if os.path.isdir(c)}
    before = _pyc_files(roots, tops)
    try:
        yield
    finally:
        created = sorted(_pyc_files(roots, tops) - before)
        for path in created:
            with contextlib.suppress(OSError):
                os.unlink(path)
        for cache in caches - had_cache:
            with contextlib.suppress(OSError):
                os.rmdir(cache)               # only if empty
        if created:
            log(f"  launch: removed the {len(created)} .pyc file(s) the runs wrote: "
                + ", ".join(os.path.relpath(p, REPO) if p.startswith(REPO) else p
                            for p in created[:6]) + (" ..." if len(created) > 6 else ""))


def measure_launch(tmp, tag, cfg, results, cel, dbos=()):
    """`launch_runs` launches of each system, one after the other (litequeue, huey,
    Celery, DBOS, litequeue...), then litequeue's again with .pyc files allowed (after one
    untimed launch that writes them; they are removed afterwards). The repeat's figure is
    the median of its launches. dbos: (key, DBOSSystem) pairs."""
    runs = cfg["launch_runs"]
    got = collections.defaultdict(list)
    lq_pyc = os.path.join(REPO, "__pycache__",
                          f"litequeue.{sys.implementation.cache_tag}.pyc")
    if os.path.exists(lq_pyc):
        results["launch_pyc_present"] = True
        log(f"  launch: {lq_pyc} exists already: the runs 'as is' read it")
    url_cm = cel.redis(tmp, f"{tag}-launch") if cel is not None else contextlib.nullcontext()
    with url_cm as url:
        if cel is not None:
            cel.app, cel.noop, *_ = benchtasks.make_celery(url)
        try:
            for k in range(runs):
                got["lq"].append(_launch_litequeue(tmp, f"{tag}-launch-lq-{k}"))
                got["lq_cli"].append(_launch_litequeue(tmp, f"{tag}-launch-lqcli-{k}",
                                                       entry=LITEQUEUE_CLI))
                got["huey"].append(_launch_huey(tmp, f"{tag}-launch-huey-{k}"))
                if cel is not None:
                    got["celery"].append(_launch_celery(cel, tmp, f"{tag}-launch-celery-{k}",
                                                        url))
                for key, system in dbos:
                    got[key].append(_launch_dbos(system, tmp, f"{tag}-launch-{key}-{k}"))
                log(f"  launch {k + 1}/{runs}: launch -> get() litequeue "
                    f"{got['lq'][-1]['get']:.0f} ms (supervisor's row "
                    f"{got['lq'][-1]['supervisor']:.0f} ms, children "
                    f"{got['lq'][-1]['child1']:.0f}/{got['lq'][-1]['children']:.0f} ms, "
                    f"claimed {got['lq'][-1]['claimed']:.0f} ms); as the litequeue command "
                    f"{got['lq_cli'][-1]['get']:.0f} ms; huey "
                    f"{got['huey'][-1]['get']:.0f} ms"
                    + (f"; Celery {got['celery'][-1]['get']:.0f} ms" if cel else "")
                    + "".join(f"; {system.label} {got[key][-1]['get']:.0f} ms"
                              for key, system in dbos))
        finally:
            if cel is not None:
                cel.close()
    with _bytecode_written():
        _launch_litequeue(tmp, f"{tag}-launch-pyc-warm", bytecode=True)
        for k in range(runs):
            got["lq_pyc"].append(_launch_litequeue(tmp, f"{tag}-launch-pyc-{k}",
                                                   bytecode=True))
            got["lq_cli_pyc"].append(_launch_litequeue(tmp, f"{tag}-launch-clipyc-{k}",
                                                       bytecode=True, entry=LITEQUEUE_CLI))
        log("  launch with .pyc: launch -> get() litequeue "
            + ", ".join(f"{g['get']:.0f}" for g in got["lq_pyc"]) + " ms; as the litequeue "
            "command " + ", ".join(f"{g['get']:.0f}" for g in got["lq_cli_pyc"]) + " ms")
    for system, launches in got.items():
        for what in launches[0]:
            values = [g[what] for g in launches]
            results[f"launch_{system}_{what}"].append(statistics.median(values))
            results[f"launch_{system}_{what}_all"].extend(values)


def _vmrss_kib(pid):
    """VmRSS of a process, in KiB (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# The memory row's task module: litequeue's demo tasks (the `demo` command's module), plus
# benchtasks' noop under its name, on the same app.
_MEMORY_MODULE = "lqbench_memory"
_MEMORY_NOOP = '''

@app.task(name="benchtasks.noop")
def noop(i):
    return i
'''


def measure_memory(tmp, tag, cfg, results):
    """Resident memory (VmRSS) of a `worker -c 2` supervisor and of each child, with the
    demo tasks loaded: once both children have registered (1 s later, nothing run yet),
    then every `memory_step` tasks done while it drains `memory_tasks` no-op tasks. The
    bench queues them while it drains, through group() of 1000, whenever fewer than
    `memory_low` are waiting, up to `memory_high`, so the file never holds them all
    waiting at once."""
    n, step = cfg["memory_tasks"], cfg["memory_step"]
    low, high = cfg["memory_low"], cfg["memory_high"]
    demo = getattr(litequeue, "_DEMO_TASKS", None)
    if demo is None:
        raise RuntimeError("litequeue._DEMO_TASKS (the demo command's task module) not "
                           "found: update measure_memory")
    system = LiteQueueSystem("litequeue NORMAL", "NORMAL")
    with fresh_database(system, tmp, f"{tag}-memory") as session:
        moddir = os.path.join(tmp, f"{tag}-memory-module")
        os.makedirs(moddir, exist_ok=True)
        with open(os.path.join(moddir, _MEMORY_MODULE + ".py"), "w") as f:
            f.write(demo % {"db": system.db} + _MEMORY_NOOP)
        env = _worker_env({})
        env["PYTHONPATH"] = moddir + os.pathsep + env["PYTHONPATH"]
        argv = [sys.executable, LITEQUEUE_PY, "worker", system.db, "-c", "2", "-A",
                _MEMORY_MODULE, "-l", "WARNING", "--synchronous", "NORMAL"]
        launched = time.monotonic()
        worker = Worker("litequeue (memory)", argv, env, tmp,
                        os.path.join(tmp, f"{tag}-memory.log"), signal.SIGTERM)
        session.workers.append(worker)
        rows = _wait_children(system.db, worker)
        children = sorted(r[1] for r in rows if r[0] is not None)
        time.sleep(1.0)
        procs = {"supervisor": worker.pid, "child 1": children[0], "child 2": children[1]}

        def sample(done):
            # A child that died (and was restarted) is followed in its new process; the
            # restart is noted under the table (its slot's growth then spans two
            # processes).
            now = sorted(r[1] for r in _workers_rows(system.db) if r[0] is not None)
            for slot in ("child 1", "child 2"):
                if procs[slot] not in now:
                    new = [p for p in now if p not in procs.values()]
                    restarts.append(f"{slot} pid {procs[slot]} → "
                                    f"{new[0] if new else 'none'} before {done:,} done")
                    log(f"  memory: {restarts[-1]}")
                    if new:
                        procs[slot] = new[0]
            others = [p for p in session_pids(worker.pid) if p not in procs.values()]
            rss = {name: _vmrss_kib(pid) for name, pid in procs.items()}
            rss["other"] = sum(_vmrss_kib(p) or 0 for p in others)
            rss["total"] = sum(v or 0 for v in rss.values())
            samples.append((done, rss))
            return rss

        samples, restarts = [], []
        rss = sample(0)
        log(f"  memory: at start ({time.monotonic() - launched:.1f} s after launch): "
            + ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in rss.items() if v is not None)
            + f" (other: pids {[p for p in session_pids(worker.pid) if p not in procs.values()]})")
        conn = _apsw_reader(system.db)
        try:
            queued, mark, began = 0, step, time.monotonic()
            while True:
                worker.check_alive()
                pending, running = conn.execute(
                    f"SELECT {LQ_PENDING_COUNT}, {LQ_STARTED_COUNT}").fetchall()[0]
                done = queued - pending - running
                while done >= mark and mark < n:
                    sample(done)
                    log(f"  memory: {done:>9,} done: " + ", ".join(
                        f"{k} {v / 1024:.1f}" for k, v in samples[-1][1].items()
                        if v is not None) + " MiB")
                    mark += step
                if queued >= n and not pending and not running:
                    break
                if queued < n and pending < low:
                    for _ in range(10):          # at most 10 000, then look again
                        size = min(1000, n - queued, high - pending)
                        if size <= 0:
                            break
                        system.enqueue_group(queued, size)
                        queued += size
                        pending += size
                else:
                    time.sleep(0.02)
            drain = time.monotonic() - began
            (ok,), = conn.execute("SELECT count(*) FROM tasks WHERE state = 'SUCCESS'"
                                  ).fetchall()
        finally:
            conn.close()
        if ok != n:
            raise RuntimeError(f"memory: {ok} of {n} tasks succeeded")
        time.sleep(0.2)
        sample(n)
        if restarts:
            results.setdefault("mem_restarts", {})[tag] = restarts
        _report_worker_logs([worker], "memory (worker)", results)
        log(f"  memory: {n:,} tasks drained in {drain:.1f} s ({n / drain:,.0f}/s); at the "
            f"end: " + ", ".join(f"{k} {v / 1024:.1f}" for k, v in samples[-1][1].items()
                                  if v is not None) + " MiB")
    first = next((s for s in samples if s[0] >= step), samples[-1])
    for name in ("supervisor", "child 1", "child 2", "other", "total"):
        key = "mem_" + name.replace(" ", "")
        series = [(d, r[name]) for d, r in samples if r.get(name) is not None]
        results[key + "_start"].append(series[0][1] / 1024)
        results[key + "_first"].append(first[1][name] / 1024)
        results[key + "_end"].append(series[-1][1] / 1024)
        results[key + "_delta"].append((series[-1][1] - first[1][name]) / 1024)
        fit = [(d, v) for d, v in series if d >= step]
        if len(fit) >= 2:
            mx = statistics.fmean(d for d, _ in fit)
            my = statistics.fmean(v for _, v in fit)
            sxx = sum((d - mx) ** 2 for d, _ in fit)
            slope = sum((d - mx) * (v - my) for d, v in fit) / sxx if sxx else 0.0
            results[key + "_slope"].append(slope * 100_000 / 1024)   # MiB per 100 000
    results["mem_first_done"].append(first[0])
    results.setdefault("mem_series", {})[tag] = [[d, r] for d, r in samples]   # for --out


# ---------------------------------------------------------------------------
# Dashboard
# ---------------------------------------------------------------------------

# Version of build_dashboard_db's rows: bump it when they change, and the cached files are
# built again (they are also rebuilt when litequeue.SCHEMA_VERSION changes).
_DASH_BUILD = 1
# The task names of the dashboard's database: (name, queue, share of the rows, median run
# time in seconds).
_DASH_NAMES = (
    ("app.send_email", "emails", 0.35, 0.12),
    ("app.resize_image", "default", 0.25, 0.35),
    ("app.sync_account", "default", 0.18, 0.8),
    ("app.charge_card", "default", 0.10, 0.25),
    ("app.generate_report", "reports", 0.09, 4.0),
    ("app.rebuild_index", "reports", 0.03, 20.0),
)
_DASH_SPAN = 23 * 3600.0        # the rows were queued over the 23 hours before the build
_DASH_SUPERVISOR = "5e1f0c2a9b7d"
_DASH_CHILDREN = ("5e1f0c2a9b7e", "5e1f0c2a9b7f")
_DASH_OLD_CHILDREN = ("0c4d9e1b2a3f", "0c4d9e1b2a40", "7a8b9c0d1e2f", "7a8b9c0d1e30")
_SQL_DASH_ROW = """
    INSERT INTO tasks (id, name, queue, priority, state, payload, eta, attempt, retries, worker,
                       pid, created_at, started_at, finished_at, result, traceback)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_DASH_TRACEBACK = """Traceback (most recent call last):
  File "/srv/app/.venv/lib/python3.11/site-packages/litequeue.py", line 5301, in _run_row
    value = task.run(*args, **kwargs)
            ^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/srv/app/app/tasks.py", line {line}, in {func}
    return client.{func}(*args, timeout=30)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/srv/app/app/clients.py", line {line2}, in {func}
    raise {short}(message)
{short}: {message}
"""


def _dash_call(rng, name, k):
    """(args, kwargs, result) of one call of `name`: text in the arguments to search for."""
    h = f"{rng.getrandbits(64):016x}"
    if name == "app.send_email":
        customer = f"customer-{rng.randrange(200_000):07d}@example.com"
        return ([customer, f"Your invoice INV-{k:08d}"], {"template": "invoice"},
                {"message_id": f"<{h}@mail.example.com>"})
    if name == "app.resize_image":
        return [f"s3://media/uploads/{h}.jpg", [1024, 768]], {}, \
            f"s3://media/thumbs/{h}-1024x768.jpg"
    if name == "app.sync_account":
        return [rng.randrange(10**6), "crm"], {"full": k % 7 == 0}, \
            {"updated": rng.randrange(50), "skipped": rng.randrange(5)}
    if name == "app.charge_card":
        return [f"cus_{h[:14]}", rng.randrange(500, 50_000), "EUR"], {}, \
            {"charge": f"ch_{h}{h[:8]}", "status": "succeeded"}
    if name == "app.generate_report":
        user = f"customer-{rng.randrange(200_000):07d}"
        return [f"sales-{k % 365:03d}", "pdf"], {"user": user}, \
            f"reports/sales-{k % 365:03d}-{h[:8]}.pdf"
    return ["products"], {}, rng.randrange(10**4, 10**6)


def _never_run(*args, **kwargs):
    raise RuntimeError("the dashboard database's tasks are never run")


def _dash_error(rng, name, args):
    """(result map, traceback) of a failed call, as a worker stores them."""
    roll = rng.random()
    if roll < 0.7:
        cls = ValueError
        message = f"{name.split('.')[1]} refused {str(args[0])[:60]}: invalid state"
    elif roll < 0.9:
        cls, message = TimeoutError, "upstream did not answer in 30 s"
    else:
        cls, message = None, "HTTPSConnectionPool(host='api.example.com', port=443): Max " \
                             "retries exceeded"
    if cls is None:      # a type the dashboard's process has not imported: a RemoteError
        type_name = "requests.exceptions.ConnectionError"
        result = _dash_pack({"type": type_name, "message": message, "args": [message]})
    else:
        type_name = f"builtins.{cls.__name__}"
        encode = getattr(litequeue, "_encode_error", None)
        result = encode(cls(message)) if encode else \
            _dash_pack({"type": type_name, "message": message, "args": [message]})
    func = name.split(".")[1]
    tb = _DASH_TRACEBACK.format(line=40 + len(func), line2=200 + len(name), func=func,
                                short=type_name.rpartition(".")[2], message=message)
    return result, tb


def _dash_pack(obj):
    import msgpack
    return msgpack.packb(obj, use_bin_type=True)


def build_dashboard_db(db, rows):
    """A litequeue database holding `rows` tasks as a busy queue holds them after a day,
    for the dashboard rows. Returns its metadata (what the measurement asks for).

    The file, its schema, the registry and the periodic tasks come from litequeue itself
    (LiteQueue(db), one delay() of each task name; the bench checks that its own msgpack
    payload of those calls is byte-identical to litequeue's, then deletes the 6 rows). The
    rows go in directly with apsw, 100 000 per transaction, queued over the 23 hours before
    the build, oldest first: about 94% SUCCESS (result, started_at, finished_at, worker),
    3% FAILURE (an error map, a traceback; some after 3 retries), 2% SCHEDULED (eta 1 hour
    to 7 days after the build), 0.2% REVOKED, 0.05% RETRY (eta within the hour), and the
    newest 0.5% PENDING, in the three queues, after 2 STARTED rows. A supervisor and its 2
    children are in the workers table (the 2 STARTED rows are theirs). Six task names in
    shares of 35% to 3%, with text in their arguments (e-mail addresses, S3 keys...).
    """
    import msgpack
    rng = random.Random(20261128)
    built_at = time.time()
    t0 = time.perf_counter()
    pack = msgpack.Packer(use_bin_type=True).pack
    app = litequeue.LiteQueue(db)
    try:
        tasks = {name: app.task(name=name, queue=queue)(_never_run)
                 for name, queue, _, _ in _DASH_NAMES}
        for k, (name, _, _, _) in enumerate(_DASH_NAMES):
            args, kwargs, _ = _dash_call(rng, name, k)
            res = tasks[name].delay(*args, **kwargs)
            conn = app._storage().conn
            (payload,), = conn.execute("SELECT payload FROM tasks WHERE id = ?",
                                       (res.id,)).fetchall()
            if bytes(payload) != pack({"args": args, "kwargs": kwargs}):
                raise RuntimeError("litequeue's payload format changed: update "
                                   "build_dashboard_db")
        try:
            app.add_periodic_task(litequeue.crontab(minute="*/15"), tasks["app.rebuild_index"],
                                  args=("products",), name="reindex products")
            app.add_periodic_task(3600.0, tasks["app.generate_report"], args=("hourly", "pdf"),
                                  name="hourly sales report")
            app.add_periodic_task(litequeue.crontab(minute=0, hour=7, tz="Europe/Paris"),
                                  tasks["app.send_email"], args=("team@example.com", "digest"),
                                  name="morning digest")
            definitions = list(app._all_periodic().values())
            app._storage().sync_schedules(definitions, {d["module"] for d in definitions},
                                          time.time(), litequeue._plan_sync)
        except Exception as exc:         # private names: without them, no schedules
            log(f"  no periodic tasks in the dashboard's database: {exc!r}")
    finally:
        with contextlib.suppress(Exception):
            app._local.storage.close()
        with contextlib.suppress(Exception):
            apps = litequeue._apps
            (apps.discard if hasattr(apps, "discard") else apps.remove)(app)
    shutil.rmtree(db + "-lq", ignore_errors=True)

    names = [n for n, _, _, _ in _DASH_NAMES]
    queue_of = {n: q for n, q, _, _ in _DASH_NAMES}
    cum, total = [], 0.0
    for _, _, share, _ in _DASH_NAMES:
        total += share
        cum.append(total)
    median_rt = {n: rt for n, _, _, rt in _DASH_NAMES}
    pending = max(50, rows // 200)
    started = 2
    history = rows - pending - started
    start = built_at - _DASH_SPAN
    picks = {}

    def generate():
        for k in range(rows):
            created = start + k * _DASH_SPAN / rows
            name = rng.choices(names, cum_weights=cum)[0]
            args, kwargs, value = _dash_call(rng, name, k)
            row = [str(uuid.UUID(int=rng.getrandbits(128), version=4)), name, queue_of[name],
                   5 if k % 50 == 0 else 0, "SUCCESS", pack({"args": args, "kwargs": kwargs}),
                   None, 1, 0, None, None, created, None, None, None, None]
            if k >= history + started:
                row[4], row[7] = "PENDING", 0
                picks.setdefault("pending_id", row[0])
                yield row
                continue
            worker = _DASH_CHILDREN[k % 2] if k >= history - 2000 else \
                _DASH_OLD_CHILDREN[k % 4]
            row[9], row[10] = worker, 2000 + int(worker[-2:], 16)
            row[12] = created + rng.uniform(0.0005, 0.02)
            runtime = median_rt[name] * rng.lognormvariate(0.0, 0.6)
            if k >= history:
                row[4] = "STARTED"
                yield row
                continue
            roll = rng.random()
            if roll < 0.02:
                row[4], row[6], row[7] = "SCHEDULED", built_at + rng.uniform(3600, 7 * 86400), 0
                row[9] = row[10] = row[12] = None
            elif roll < 0.0205:
                row[4], row[6], row[8] = "RETRY", built_at + rng.uniform(60, 3600), 1
                row[14], row[15] = _dash_error(rng, name, args)
            elif roll < 0.0505:
                retries = 3 if rng.random() < 0.3 else 0
                row[4], row[7], row[8] = "FAILURE", 1 + retries, retries
                row[13] = row[12] + runtime
                row[14], row[15] = _dash_error(rng, name, args)
                if k >= rows // 2:
                    picks.setdefault("failure_id", row[0])
            elif roll < 0.0525:
                row[4], row[7] = "REVOKED", 0
                row[9] = row[10] = row[12] = None
                row[13] = created + rng.uniform(1, 60)
            else:
                row[13] = row[12] + runtime
                row[14] = pack(value)
                if k >= rows // 3:
                    picks.setdefault("success_id", row[0])
                # A text to search for: an address in the newest rows (the search's window).
                if name == "app.send_email" and k >= history - 3000:
                    picks.setdefault("text", args[0])
            yield row

    conn = apsw.Connection(db)
    try:
        conn.set_busy_timeout(30000)
        conn.execute("PRAGMA cache_size = -262144")
        conn.execute("PRAGMA synchronous = OFF")
        with conn:
            conn.execute("DELETE FROM tasks")
        rows_iter = generate()
        batch = 100_000
        for first in range(0, rows, batch):
            with conn:
                conn.executemany(_SQL_DASH_ROW, (next(rows_iter)
                                                 for _ in range(min(batch, rows - first))))
        with conn:
            for i, worker in enumerate((_DASH_SUPERVISOR,) + _DASH_CHILDREN):
                conn.execute(
                    "INSERT INTO workers (id, parent, hostname, pid, queues, concurrency, "
                    "started_at) VALUES (?, ?, 'app-host-1', ?, 'default,emails,reports', ?, ?)",
                    (worker, None if i == 0 else _DASH_SUPERVISOR, 2000 + int(worker[-2:], 16),
                     2 if i == 0 else None, built_at - 3 * 3600))
            columns = {c[1] for c in conn.execute("PRAGMA table_info(workers)")}
            if {"processed", "failed"} <= columns:      # each child's totals so far
                conn.execute("UPDATE workers SET processed = ?, failed = ? WHERE parent "
                             "IS NOT NULL", (history // 8, history // 8 * 3 // 100))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        counts = dict(conn.execute("SELECT state, count(*) FROM tasks GROUP BY state"))
        top = conn.execute("SELECT max(seq) FROM tasks").fetchall()[0][0]
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(db + suffix)
    if sum(counts.values()) != rows or top != rows:
        raise RuntimeError(f"the dashboard's database holds {counts} (max seq {top}), "
                           f"not {rows} rows")
    picks.setdefault("text", "customer-")
    missing = {"pending_id", "failure_id", "success_id"} - set(picks)
    if missing:
        raise RuntimeError(f"too few rows ({rows}) for the dashboard's picks {missing}")
    states = ", ".join(f"{s} {n:,}" for s, n in sorted(counts.items()))
    log(f"  built the dashboard's database: {rows:,} rows ({states}), "
        f"{os.path.getsize(db) / 2**20:.0f} MB, in {time.perf_counter() - t0:.1f} s")
    return {"rows": rows, "schema": litequeue.SCHEMA_VERSION, "build": _DASH_BUILD,
            "built_at": built_at, "states": counts, "picks": picks,
            "names": [list(n) for n in _DASH_NAMES], "rare_name": _DASH_NAMES[-1][0]}


def _schema_tag():
    """litequeue.SCHEMA_VERSION, and a hash of the schema's text (litequeue's private
    _MIGRATIONS, when it has them): a migration edited in place changes the hash."""
    import hashlib
    migrations = getattr(litequeue, "_MIGRATIONS", None)
    text = "\n".join(migrations) if isinstance(migrations, (list, tuple)) else ""
    return f"{litequeue.SCHEMA_VERSION}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def dashboard_cache(cfg):
    """(path, metadata) of the cached database of cfg["dashboard_rows"] rows, built now if
    it is missing, of another schema version or builder, or not what its metadata says.
    Builds of other versions for the same row count are deleted."""
    rows, cache_dir = cfg["dashboard_rows"], cfg["cache_dir"]
    stem = f"dashboard-{rows}-schema{_schema_tag()}-build{_DASH_BUILD}"
    path = os.path.join(cache_dir, stem + ".sqlite")
    meta_path = os.path.join(cache_dir, stem + ".json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if (meta["rows"], meta["schema"], meta["build"], meta["bytes"]) != \
                (rows, litequeue.SCHEMA_VERSION, _DASH_BUILD, os.path.getsize(path)):
            raise ValueError("metadata does not match")
        # The schema version from the file's header (user_version, bytes 60-63): opening
        # it with SQLite would leave -wal and -shm files in the cache.
        with open(path, "rb") as f:
            header = f.read(100)
        version = int.from_bytes(header[60:64], "big")
        if not header.startswith(b"SQLite format 3\x00") or \
                version != litequeue.SCHEMA_VERSION:
            raise ValueError(f"user_version {version}")
        log(f"  reusing the dashboard's database {path} ({meta['bytes'] / 2**20:.0f} MB, built "
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(meta['built_at']))})")
        return path, meta
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if not isinstance(exc, FileNotFoundError):
            log(f"  the cached dashboard database cannot be used ({exc}): building it again")
    os.makedirs(cache_dir, exist_ok=True)
    for name in os.listdir(cache_dir):
        if name.startswith(f"dashboard-{rows}-"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(cache_dir, name))
    building = os.path.join(cache_dir, f".{stem}.{os.getpid()}.building.sqlite")
    try:
        meta = build_dashboard_db(building, rows)
        os.replace(building, path)
        meta["bytes"] = os.path.getsize(path)
        with open(meta_path + ".tmp", "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(meta_path + ".tmp", meta_path)
    finally:
        remove_db(building)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(meta_path + ".tmp")
    return path, meta


def prepare_dashboard_db(tmp, cfg):
    """A copy of the cached database in the run's temporary directory, brought to now: the
    waiting, scheduled and running rows and the workers move by the time since the build,
    and the stats table gets per-minute counters for the last 8 days (what workers keep)."""
    cached, meta = dashboard_cache(cfg)
    db = os.path.join(tmp, "dashboard.sqlite")
    t0 = time.perf_counter()
    shutil.copyfile(cached, db)
    now = time.time()
    shift = now - meta["built_at"]
    rng = random.Random(int(now))
    bounds = getattr(litequeue, "_RUNTIME_BUCKETS", (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                     1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0))
    conn = apsw.Connection(db)
    try:
        conn.set_busy_timeout(30000)
        hcols = [c[1] for c in conn.execute("PRAGMA table_info(stats)")
                 if re.fullmatch(r"h\d+", c[1])]
        if len(hcols) != len(bounds) + 1:
            raise RuntimeError(f"the stats table has {len(hcols)} histogram columns for "
                               f"{len(bounds)} bounds: update prepare_dashboard_db")
        per_minute = meta["rows"] / (_DASH_SPAN / 60)
        shares = {}
        for name, queue, share, median in meta["names"]:
            # Log-normal run times (sigma 0.6): the share of runs in each bucket.
            cdf = [0.5 * (1 + math.erf(math.log(b / median) / (0.6 * math.sqrt(2))))
                   for b in bounds] + [1.0]
            shares[name] = (queue, share, median, [b - a for a, b in zip([0.0] + cdf, cdf)])
        sql = (f"INSERT INTO stats (minute, name, queue, succeeded, failed, retried, runtime, "
               f"{', '.join(hcols)}) VALUES ({', '.join('?' * (7 + len(hcols)))})")
        last = int(now // 60)

        def stats_rows():
            for minute in range(last - 8 * 1440 + 1, last + 1):
                for name, (queue, share, median, parts) in shares.items():
                    runs = int(per_minute * share * rng.uniform(0.6, 1.4))
                    failed = int(runs * 0.03 * rng.uniform(0, 2))
                    buckets = [int(runs * p) for p in parts]
                    buckets[-1] += runs - sum(buckets)
                    yield (minute, name, queue, runs - failed, failed, failed // 4,
                           runs * median * 1.2, *buckets)

        with conn:
            conn.execute("UPDATE tasks SET created_at = created_at + ? WHERE state = 'PENDING'",
                         (shift,))
            conn.execute("UPDATE tasks SET eta = eta + ? WHERE state IN ('SCHEDULED', 'RETRY')",
                         (shift,))
            conn.execute("UPDATE tasks SET created_at = created_at + ?, started_at = "
                         "started_at + ? WHERE state = 'STARTED'", (shift, shift))
            conn.execute("UPDATE workers SET started_at = started_at + ?", (shift,))
            conn.execute("DELETE FROM stats")
            conn.executemany(sql, stats_rows())
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    log(f"  copied it to {db} and brought it to now in {time.perf_counter() - t0:.1f} s")
    return db, meta


def start_dashboard(db, tmp, tag):
    """`python litequeue.py dashboard DB --host 127.0.0.1 --port 0` in its own session (a
    Worker: SIGTERM, then SIGKILL to its group), with .url and .port once it listens."""
    logfile = os.path.join(tmp, f"{tag}-dashboard.log")
    proc = Worker("dashboard", [sys.executable, LITEQUEUE_PY, "dashboard", db, "--host",
                                "127.0.0.1", "--port", "0"],
                  _worker_env({}), tmp, logfile, signal.SIGTERM)
    try:
        deadline = time.monotonic() + 30
        while True:
            with open(logfile, errors="replace") as f:
                text = f.read()
            found = re.search(r" on (http://127\.0\.0\.1:(\d+)/)", text)
            printed = re.search(r"open (http://\S+#token=\S+)", text)
            if found and printed:
                break
            proc.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard printed no URL in 30 s (see {logfile})")
            time.sleep(0.02)
    except BaseException:
        proc.stop()
        raise
    proc.url, proc.port = found.group(1), int(found.group(2))
    with open(f"{db}-lq/dashboard-{proc.port}.token") as f:   # every request needs the token
        proc.token = f.read().strip()
    # A browser logs in with the printed URL (RANDOM.localhost on loopback, the token in
    # its fragment), and opens the dashboard's other pages under the same name.
    proc.login = printed.group(1)
    proc.site = proc.login.partition("#")[0]
    return proc


class Browser(Worker):
    """A real headless Chromium, driven by selenium through chromedriver. chromedriver
    starts in its own session and every Chromium process stays in its process group, so
    stop() (and the run's cleanup) quits the browser, then kills the group, as for a
    worker."""

    def __init__(self, tmp, tag):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        if _stop_signal is not None:
            _raise_for(_stop_signal)
        self.kind, self.windows, self.driver = "chromium", [], None
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        profile = tempfile.mkdtemp(prefix=f"{tag}-chromium-profile-", dir=tmp)
        options.add_argument(f"--user-data-dir={profile}")
        self.log = open(os.path.join(tmp, f"{tag}-chromedriver.log"), "ab")
        service = Service(CHROMEDRIVER, log_output=self.log,
                          popen_kw={"start_new_session": True})
        with _uninterrupted():
            try:
                self.driver = webdriver.Chrome(service=service, options=options)
            except BaseException:
                process = getattr(service, "process", None)
                if process is not None:
                    with contextlib.suppress(OSError):
                        os.killpg(process.pid, signal.SIGKILL)
                    with contextlib.suppress(Exception):
                        process.wait(10)
                self.log.close()
                raise
            self.proc = service.process
            self.pid = self.proc.pid
            _PROCS.append(self)
        self.version = self.driver.capabilities.get("browserVersion", "?")

    def stop(self, timeout=15.0):
        try:
            if self.driver is not None and self.proc.poll() is None:
                with contextlib.suppress(Exception):
                    self.driver.quit()
            self._kill_group()
            with contextlib.suppress(Exception):
                self.proc.wait(10)
        finally:
            self.log.close()
            if self in _PROCS:
                _PROCS.remove(self)

    def check_alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"chromedriver exited early with code {self.proc.returncode}; "
                               f"see {self.log.name}")

    # The page's path, its status line, and the time (ms, request start to the last
    # byte) of each of its fetches of /data/... since start_count, from Resource Timing.
    _SCRIPT_STATUS = """
        const live = document.getElementById('live');
        return [location.pathname, live ? live.textContent : null,
                performance.getEntriesByType('resource')
                    .filter(e => new URL(e.name).pathname.startsWith('/data/'))
                    .map(e => e.responseEnd - e.requestStart)];
    """

    def open(self, urls, timeout=30):
        """One window per URL. Returns once every page has drawn its data (the page's
        'live ·' marker)."""
        for url in urls:
            if self.windows:
                self.driver.switch_to.new_window("window")
            self.driver.get(url)
            self.windows.append(self.driver.current_window_handle)
            deadline = time.monotonic() + timeout
            while True:
                path, status, _ = self.driver.execute_script(self._SCRIPT_STATUS)
                if status and status.startswith("live"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the dashboard page {url} did not draw itself in "
                                       f"{timeout} s (status {status!r})")
                time.sleep(0.05)

    def start_count(self):
        """Forget the requests each window made so far."""
        for handle in self.windows:
            self.driver.switch_to.window(handle)
            self.driver.execute_script("performance.setResourceTimingBufferSize(100000); "
                                       "performance.clearResourceTimings();")

    def counts(self):
        """{page path: ([ms of each of its requests to /data/... since start_count], its
        status line)}."""
        out = {}
        for handle in self.windows:
            self.driver.switch_to.window(handle)
            path, status, times = self.driver.execute_script(self._SCRIPT_STATUS)
            out[path] = (times, status)
        return out


class _Client:
    """GETs as a script sends them (http.client sends Host: 127.0.0.1:PORT). By default on
    one kept-alive connection, as the page's fetch() calls; fresh=True opens a new one,
    so the dashboard serves it on a new thread with a new SQLite connection."""

    def __init__(self, port, token):
        self.port, self.conn = port, None
        self.headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}

    def get(self, path, fresh=False):
        """(status, content type, body, milliseconds from the request to the last byte)."""
        if fresh or self.conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            if not fresh:
                self.conn = conn
        else:
            conn = self.conn
        t0 = time.perf_counter()
        try:
            conn.request("GET", path, headers=self.headers)
            resp = conn.getresponse()
            body = resp.read()
        except BaseException:
            conn.close()
            if conn is self.conn:
                self.conn = None
            raise
        elapsed = (time.perf_counter() - t0) * 1000.0
        if fresh or resp.will_close:
            conn.close()
            if conn is self.conn:
                self.conn = None
        return resp.status, resp.getheader("Content-Type", ""), body, elapsed

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def dashboard_endpoints(meta, second_page):
    """[(label, path, check)]: every GET of the dashboard, with real ids, names and text
    from the database. check(status, content type, body) returns a problem or None."""
    picks, rare = meta["picks"], meta["rare_name"]
    common = meta["names"][0][0]
    q = urllib.parse.quote

    def json_check(test=None, statuses=(200,)):
        def check(status, ctype, body):
            if status not in statuses:
                return f"status {status}: {body[:300]!r}"
            if not ctype.startswith("application/json"):
                return f"content type {ctype}"
            data = json.loads(body)
            return test(data) if test else None
        return check

    def text_check(start, statuses=(200,)):
        def check(status, ctype, body):
            if status not in statuses:
                return f"status {status}: {body[:300]!r}"
            return None if body.lstrip().lower().startswith(start) else \
                f"body starts {body[:60]!r}"
        return check

    def tasks_test(pred=None, least=1):
        def test(data):
            tasks = data.get("tasks")
            if not isinstance(tasks, list) or len(tasks) < least:
                return f"{len(tasks or [])} tasks, wanted at least {least}"
            bad = [t for t in tasks if pred and not pred(t)]
            return f"{len(bad)} tasks do not match the filter: {bad[0]}" if bad else None
        return test

    def one_task(key, value):
        return lambda d: None if d.get(key) == value else f"{key} is {d.get(key)!r}"

    failure, pending, success = picks["failure_id"], picks["pending_id"], picks["success_id"]
    return [
        ("/ (the page, HTML)", "/", text_check(b"<!doctype html")),
        ("/data/overview", "/data/overview",
         json_check(lambda d: None if "counts" in d else "no counts")),
        ("/data/tasks", "/data/tasks", json_check(tasks_test(least=50))),
        ("/data/tasks?before=<next of the first page>", f"/data/tasks?before={second_page}",
         json_check(tasks_test(lambda t: True, least=50))),
        ("/data/tasks?state=FAILURE", "/data/tasks?state=FAILURE",
         json_check(tasks_test(lambda t: t["state"] == "FAILURE", least=50))),
        (f"/data/tasks?name={rare}", f"/data/tasks?name={q(rare)}",
         json_check(tasks_test(lambda t: t["name"] == rare, least=50))),
        ("/data/tasks?queue=reports", "/data/tasks?queue=reports",
         json_check(tasks_test(lambda t: t["queue"] == "reports", least=50))),
        (f"/data/tasks?q={picks['text']}", f"/data/tasks?q={q(picks['text'])}",
         json_check(tasks_test())),
        ("/data/task/<a FAILURE id>", f"/data/task/{failure}",
         json_check(one_task("id", failure))),
        ("/data/task/<a PENDING id>", f"/data/task/{pending}",
         json_check(one_task("id", pending))),
        ("/data/workers", "/data/workers", json_check()),
        ("/data/queues", "/data/queues", json_check()),
        ("/data/schedules", "/data/schedules", json_check()),
        ("/metrics", "/metrics", text_check(b"# help")),
        ("/healthcheck", "/healthcheck", text_check(b"", statuses=(200, 503))),
        ("/api/workers", "/api/workers", json_check()),
        ("/api/tasks?limit=100", "/api/tasks?limit=100",
         json_check(lambda d: None if len(d) == 100 else f"{len(d)} tasks")),
        (f"/api/tasks?state=FAILURE&taskname={common}&limit=50&offset=50",
         f"/api/tasks?state=FAILURE&taskname={q(common)}&limit=50&offset=50",
         json_check(lambda d: None if len(d) == 50 and all(
             t["state"] == "FAILURE" and t["name"] == common for t in d.values())
             else f"{len(d)} tasks")),
        ("/api/task/info/<a SUCCESS id>", f"/api/task/info/{success}",
         json_check(one_task("uuid", success))),
        ("/api/task/result/<a SUCCESS id>", f"/api/task/result/{success}",
         json_check(one_task("state", "SUCCESS"))),
        ("/api/task/types", "/api/task/types",
         json_check(lambda d: None if common in d.get("task-types", []) else "names missing")),
        ("/api/queues/length", "/api/queues/length", json_check()),
    ]


def measure_dashboard(db, meta, tmp, tag, cfg, results):
    """On the big database: every endpoint's time, then the GETs while another connection
    holds the write lock, then the dashboard's idle CPU with the page open in Chromium.
    One dashboard process for the three."""
    dash = start_dashboard(db, tmp, tag)
    client = _Client(dash.port, dash.token)
    try:
        status, _, body, _ = client.get("/data/tasks")
        if status != 200:
            raise RuntimeError(f"dashboard /data/tasks: status {status}: {body[:300]!r}")
        endpoints = dashboard_endpoints(meta, json.loads(body)["next"])
        measure_dashboard_endpoints(client, endpoints, cfg, results)
        client.close()
        measure_dashboard_lock(db, client, endpoints, cfg, results)
        measure_dashboard_idle(dash, tmp, tag, cfg, results)
        dash.check_alive()
    finally:
        client.close()
        dash.stop()


def measure_dashboard_endpoints(client, endpoints, cfg, results):
    """`dashboard_warmups` rounds, then `dashboard_requests` timed rounds over every
    endpoint in turn (so drift on the machine affects all alike), one kept-alive
    connection. Every response is checked. Appends each endpoint's median and max (ms)."""
    n, warm = cfg["dashboard_requests"], cfg["dashboard_warmups"]
    samples = {label: [] for label, _, _ in endpoints}
    sizes = {}
    for i in range(warm + n):
        for label, path, check in endpoints:
            status, ctype, body, ms = client.get(path)
            problem = check(status, ctype, body)
            if problem:
                raise RuntimeError(f"dashboard GET {path}: {problem}")
            if i >= warm:
                samples[label].append(ms)
            sizes[label] = len(body)
    for label, values in samples.items():
        results[f"ep_p50:{label}"].append(statistics.median(values))
        results[f"ep_max:{label}"].append(max(values))
    results["endpoints"] = {"order": [label for label, _, _ in endpoints], "bytes": sizes}
    slow = sorted(samples, key=lambda k: -statistics.median(samples[k]))
    log(f"  dashboard: {len(endpoints)} endpoints × {n} GETs; slowest medians: " + "; ".join(
        f"{k} {statistics.median(samples[k]):.1f} ms (max {max(samples[k]):.1f})"
        for k in slow[:3]))


def measure_dashboard_lock(db, client, endpoints, cfg, results):
    """Every GET again, each on a new connection (a new thread and SQLite connection in
    the dashboard), for `dashboard_lock_hold` seconds without a lock, then as long while a
    separate apsw connection holds BEGIN IMMEDIATE. A GET that needed the write lock would
    wait for its release, and hold up the GETs behind it (one thread sends them in turn).
    Counted: a GET under the lock that failed, or took longer than 2 x its endpoint's
    slowest unlocked GET + 20 ms and longer than a quarter of the hold (a lock wait lasts
    until the release; CPU contention on a busy machine adds tens of ms, not that), and
    every endpoint with no GET answered before the release."""
    hold = cfg["dashboard_lock_hold"]

    def run(stop, out):
        try:
            while not stop.is_set():
                for label, path, check in endpoints:
                    started = time.monotonic()
                    status, ctype, body, ms = client.get(path, fresh=True)
                    out.append((label, started, time.monotonic(), ms, check(status, ctype, body)))
        except BaseException as exc:   # the main thread reports it
            out.append(exc)

    def batch(locked):
        stop, out = threading.Event(), []
        conn = apsw.Connection(db) if locked else None
        try:
            if conn is not None:
                conn.set_busy_timeout(30000)
                conn.execute("BEGIN IMMEDIATE")
            t0 = time.monotonic()
            thread = threading.Thread(target=run, args=(stop, out), daemon=True)
            thread.start()
            time.sleep(hold)
            stop.set()
            released = time.monotonic()
        finally:
            if conn is not None:
                with contextlib.suppress(apsw.Error):
                    conn.execute("ROLLBACK")
                conn.close()
        thread.join(120)
        errors = [x for x in out if isinstance(x, BaseException)]
        if errors:
            raise errors[0]
        problems = [f"{label}: {p}" for label, _, _, _, p in out if p]
        if problems and not locked:
            raise RuntimeError(f"dashboard GET without the lock: {problems[0]}")
        # Only the GETs sent while the lock was held (or the same stretch unlocked).
        return [x for x in out if t0 <= x[1] < released], released, problems

    base, _, _ = batch(False)
    locked, released, refused = batch(True)
    worst_base = collections.defaultdict(float)
    for label, _, _, ms, _ in base:
        worst_base[label] = max(worst_base[label], ms)
    worst = collections.defaultdict(float)
    for label, _, _, ms, _ in locked:
        worst[label] = max(worst[label], ms)
    # A GET that waited for the lock, or that failed because it could not have it.
    late = sorted((ms, label) for label, _, _, ms, problem in locked
                  if problem or ms > max(2 * worst_base.get(label, 0.0) + 20.0,
                                         hold * 1000.0 / 4))
    missing = sorted({label for label, _, _ in endpoints} -
                     {label for label, _, end, _, _ in locked if end < released})
    after = sum(1 for _, _, end, _, _ in locked if end > released)
    fresh = collections.defaultdict(list)
    for label, _, _, ms, _ in base:
        fresh[label].append(ms)
    for label, values in fresh.items():
        results[f"ep_fresh_p50:{label}"].append(statistics.median(values))
    results["lock_gets"].append(len(locked))
    results["lock_worst"].append(max(worst.values(), default=0.0))
    results["lock_base_worst"].append(max(worst_base.values(), default=0.0))
    results["lock_late"].append(len(late) + len(missing))
    slowest = max(worst, key=worst.get, default=None)
    log(f"  dashboard under BEGIN IMMEDIATE ({hold:g} s): {len(locked)} GETs on new "
        f"connections, slowest {worst.get(slowest, 0):.1f} ms ({slowest}; unlocked: "
        f"{worst_base.get(slowest, 0):.1f} ms); too slow or failed: {len(late)}; "
        f"finished after the release: {after}"
        + (f"; endpoints not answered before the release: {', '.join(missing)}"
           if missing else ""))
    if late:
        log(f"    slowest under the lock: {late[-1][1]} {late[-1][0]:.1f} ms")
    for problem in refused[:5]:
        log(f"    failed under the lock: {problem}")


def measure_dashboard_idle(dash, tmp, tag, cfg, results):
    """The page / open in headless Chromium (it reads /data/overview every second), no
    task activity: the dashboard process's CPU over `idle_window` seconds after
    `idle_settle`, as % of one core; Chromium's own CPU and the requests it made, for
    information."""
    browser = Browser(tmp, f"{tag}-idle")
    try:
        browser.open([dash.login])
        results.setdefault("versions", {"chromium": browser.version,
                                        "selenium": _selenium_version()})
        time.sleep(cfg["idle_settle"])
        browser.start_count()
        t0, d0, b0, w0 = (time.monotonic(), session_cpu_ticks(dash.pid),
                          session_cpu_ticks(browser.pid), session_wakeups(dash.pid))
        time.sleep(cfg["idle_window"])
        t1, d1, b1, w1 = (time.monotonic(), session_cpu_ticks(dash.pid),
                          session_cpu_ticks(browser.pid), session_wakeups(dash.pid))
        (fetches, status), = browser.counts().values()
        dash.check_alive()
    finally:
        browser.stop()
    window = t1 - t0
    used = sum(d1[p] - d0.get(p, 0) for p in d1)
    used_browser = sum(b1[p] - b0.get(p, 0) for p in b1)
    pct = used / CLK_TCK / window * 100.0
    results["idle_cpu"].append(pct)
    results["idle_browser_cpu"].append(used_browser / CLK_TCK / window * 100.0)
    results["idle_requests"].append(len(fetches) / window)
    results["idle_wakeups"].append((w1 - w0) / window)
    if fetches:
        results["idle_fetch_ms"].append(statistics.median(fetches))
    log(f"  dashboard idle with / open in Chromium: {pct:.2f}% of one core over {window:.1f} s "
        f"({used} ticks); Chromium {used_browser / CLK_TCK / window * 100:.1f}%; "
        f"{len(fetches)} /data/ requests, median {statistics.median(fetches or [0]):.1f} ms "
        f"as the browser timed them; page status {status!r}")


def _selenium_version():
    import selenium
    return selenium.__version__


def measure_dashboard_drain(tmp, tag, browse, n, cfg, results):
    """The drain measurement (litequeue NORMAL, -c 2, `n` no-op tasks queued by delay()
    into a fresh database) with no dashboard (browse False), or with a dashboard on that
    database open in one headless Chromium at / and at /tasks (two windows; each page
    reads its data every second). Appends the rate to drain_on or drain_off."""
    system = LiteQueueSystem("litequeue NORMAL", "NORMAL")
    with fresh_database(system, tmp, tag) as session:
        for i in range(n):
            system.enqueue(i)
        dash = browser = None
        try:
            if browse:
                dash = start_dashboard(system.db, tmp, tag)
                browser = Browser(tmp, tag)
                browser.open([dash.login, dash.site + "tasks"])
            time.sleep(cfg["dashboard_drain_settle"])
            if browser:
                browser.start_count()
                c0, d0 = time.monotonic(), session_cpu_ticks(dash.pid)
            worker = session.start_worker("drain")
            first, last, _ = system.wait_drained(n, worker, timeout=max(120, n / 100))
            rate = n / (last - first)
            extra = ""
            if browser:
                c1, d1 = time.monotonic(), session_cpu_ticks(dash.pid)
                counts = browser.counts()
                dash.check_alive()
                served = sum(len(times) for times, _ in counts.values())
                # Requests and CPU over the worker's start-up and the drain.
                stretch = c1 - c0
                cpu = sum(d1[p] - d0.get(p, 0) for p in d1) / CLK_TCK / stretch * 100.0
                results["drain_on_requests"].append(served / stretch)
                results["drain_on_dash_cpu"].append(cpu)
                extra = (f"; dashboard {cpu:.1f}% of a core, {served} /data/ requests in "
                         f"{stretch:.1f} s (" + ", ".join(f"{p} {len(t)}" for p, (t, _) in
                                                          counts.items()) + ")")
            results["drain_on" if browse else "drain_off"].append(rate)
            what = "with the dashboard open" if browse else "no dashboard"
            log(f"  {'litequeue NORMAL':<18} drain {what:<24} {rate:9.0f} tasks/s "
                f"({last - first:.2f} s){extra}")
        finally:
            if browser is not None:
                browser.stop()
            if dash is not None:
                dash.stop()


def percentile(samples, p):
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def summary(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "samples": values}


def fmt(s, unit, digits=0):
    if s is None:
        return "—"
    f = f"{{:,.{digits}f}}"
    if s["min"] == s["max"]:
        return f"{f.format(s['median'])} {unit}"
    return (f"{f.format(s['median'])} {unit} "
            f"({f.format(s['min'])}–{f.format(s['max'])})")


def build_table(S, cfg):
    N, F, H = S["litequeue NORMAL"], S["litequeue FULL"], S["huey"]
    C, D, D1 = S.get(CELERY) or {}, S.get(DBOS_DEF) or {}, S.get(DBOS_FAST) or {}
    rows = []

    def med(d, key):
        return d[key]["median"] if d.get(key) else None

    def times(a, b, digits=1):
        if not a or not b:
            return "—"
        return f"{a / b:,.0f}×" if a / b >= 100 else f"{a / b:.{digits}f}×"

    def lower(lq, hu):
        if not lq or not hu:
            return "—"
        return f"{hu / lq:,.0f}× lower" if hu >= lq else f"{lq / hu:.1f}× higher"

    def peers(key, unit, digits, kind):
        """The peers' cells of a row: Celery, DBOS, DBOS 1 ms, then litequeue NORMAL
        against Celery and against DBOS (defaults / 1 ms polls); kind "rate" (times) or
        "latency" (lower)."""
        n = med(N, key)
        vs = times if kind == "rate" else lower
        dbos = [vs(n, med(d, key)) for d in (D, D1)]
        return [fmt(C.get(key), unit, digits), fmt(D.get(key), unit, digits),
                fmt(D1.get(key), unit, digits), vs(n, med(C, key)),
                "—" if dbos == ["—", "—"] else " / ".join(dbos)]

    no_peers = ["—"] * 5

    def at_least(key, label, factor, full_factor=None, digits=1):
        """A row whose target is `factor` times huey's rate, at NORMAL (and shown at FULL;
        with full_factor, FULL is judged against that factor instead)."""
        n, f, h = med(N, key), med(F, key), med(H, key)
        met = n is not None and h is not None and n >= factor * h
        met_full = f is not None and h is not None and f >= (full_factor or factor) * h
        target = f"≥ {factor}× huey" + (f" (FULL: ≥ {full_factor}×, issue 13)"
                                        if full_factor else "")
        full = f"FULL ≥ {full_factor}×" if full_factor else "FULL"
        p = peers(key, "/s", 0, "rate")
        rows.append([label, fmt(N.get(key), "/s"), fmt(F.get(key), "/s"), fmt(H.get(key), "/s"),
                     *p[:3], f"{times(n, h, digits)} / {times(f, h, digits)}", *p[3:], target,
                     f"{'yes' if met else 'NO'} ({full}: {'yes' if met_full else 'no'})"])

    # FULL against huey: both commit with synchronous=FULL in WAL, one fsync per call.
    at_least("delay", f"delay() rate, {cfg['tasks']:,} no-op tasks, no worker", 3,
             full_factor=1.1, digits=2)
    gn, gf, gh = med(N, "group"), med(F, "group"), med(H, "delay")
    rows.append([f"group() enqueue rate, {cfg['tasks']:,} no-op tasks in groups of "
                 f"{cfg['group_size']}, no worker (huey: its delay(), it has no batch enqueue)",
                 fmt(N.get("group"), "/s"), fmt(F.get("group"), "/s"), fmt(H.get("delay"), "/s"),
                 *no_peers[:3], f"{times(gn, gh)} / {times(gf, gh)}", *no_peers[3:], "—", "—"])
    at_least("drain", f"drain rate, {cfg['tasks']:,} prefilled, 2 worker processes, results "
             "stored", 4)
    p = peers("drain_incl_startup", "/s", 0, "rate")
    rows.append(["drain, worker launch → all results seen by a 20 ms poll (incl. start-up)",
                 fmt(N.get("drain_incl_startup"), "/s"), fmt(F.get("drain_incl_startup"), "/s"),
                 fmt(H.get("drain_incl_startup"), "/s"), *p[:3],
                 f"{times(med(N, 'drain_incl_startup'), med(H, 'drain_incl_startup'))} / "
                 f"{times(med(F, 'drain_incl_startup'), med(H, 'drain_incl_startup'))}",
                 *p[3:], "—", "—"])
    # round trip
    pn, pf, ph = med(N, "rt_p50"), med(F, "rt_p50"), med(H, "rt_p50")
    ok = [v is not None and v <= 2.0 for v in (pn, pf)]
    p = peers("rt_p50", "ms", 2, "latency")
    rows.append([f"round trip delay()+get() p50, {cfg['roundtrips']} repeats, idle worker",
                 fmt(N.get("rt_p50"), "ms", 2), fmt(F.get("rt_p50"), "ms", 2),
                 fmt(H.get("rt_p50"), "ms", 1), *p[:3],
                 f"{lower(pn, ph)} / {lower(pf, ph)}", *p[3:], "≤ 2 ms",
                 f"{'yes' if ok[0] else 'NO'} (FULL: {'yes' if ok[1] else 'no'})"])
    qn, qf, qh = med(N, "rt_p99"), med(F, "rt_p99"), med(H, "rt_p99")
    p = peers("rt_p99", "ms", 2, "latency")
    rows.append(["round trip p99", fmt(N.get("rt_p99"), "ms", 2), fmt(F.get("rt_p99"), "ms", 2),
                 fmt(H.get("rt_p99"), "ms", 1), *p[:3], f"{lower(qn, qh)} / {lower(qf, qh)}",
                 *p[3:], "—", "—"])
    # idle CPU
    cn, ch = med(N, "idle_cpu"), med(H, "idle_cpu")
    rows.append([f"idle worker CPU, -c 2 / -w 2, {cfg['idle_window']:.0f} s after "
                 f"{cfg['idle_settle']:.0f} s settle (% of one core)",
                 fmt(N.get("idle_cpu"), "%", 2), "(same code path)", fmt(H.get("idle_cpu"), "%", 2),
                 *no_peers[:3], f"{cn / ch:.1f}× huey's" if cn and ch else "—", *no_peers[3:],
                 "< 1%", "yes" if cn is not None and cn < 1.0 else "NO"])
    for key, what in (("load_p50", "p50"), ("load_p99", "p99"), ("load_max", "max")):
        ln, lh = med(N, key), med(H, key)
        rows.append([f"delay() latency {what} while a 2-process worker drains a backlog "
                     f"(up to {cfg['load_calls']:,} calls 1 ms apart, at most "
                     f"{cfg['load_seconds']:.0f} s)",
                     fmt(N.get(key), "ms", 2), "(same code path)", fmt(H.get(key), "ms", 2),
                     *no_peers[:3], lower(ln, lh), *no_peers[3:], "—", "—"])
    wn, wh = med(N, "idle_wakeups"), med(H, "idle_wakeups")
    rows.append(["idle wake-ups per second, all processes (voluntary context switches)",
                 fmt(N.get("idle_wakeups"), "/s", 1), "(same code path)",
                 fmt(H.get("idle_wakeups"), "/s", 1), *no_peers[:3],
                 f"{wn / wh:.1f}× huey's" if wn and wh else "—", *no_peers[3:], "—", "—"])
    # Rows of measurements this run skipped (--only) have no figures: leave them out.
    rows = [r for r in rows if any(c not in ("—", "(same code path)") for c in r[1:7])]
    celery_head = CELERY
    if C.get("versions") and C["versions"].get("redis") != "?":
        celery_head = f"Celery {C['versions']['celery']} + Redis {C['versions']['redis']}"
    dbos_version = (D.get("versions") or {}).get("dbos", "")
    header = ["metric", "litequeue NORMAL", "litequeue FULL", "huey (defaults)",
              f"{celery_head} (prefork -c 2, defaults)",
              f"DBOS {dbos_version} on SQLite (worker_concurrency=2, defaults: 1 s polls)",
              "DBOS, both polls at 1 ms (info)", "ratio vs huey (NORMAL / FULL)",
              "litequeue NORMAL vs Celery", "litequeue NORMAL vs DBOS (defaults / 1 ms polls)",
              "target", "met?"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    notes = []
    if D or D1:
        counts = []
        for d, what in ((D, "at its defaults"), (D1, "with 1 ms polls")):
            parts = []
            if d.get("drain_count"):
                parts.append(f"{d['drain_count']['median']:,.0f} tasks enqueued and drained")
            if d.get("rt_count"):
                parts.append(f"{d['rt_count']['median']:,.0f} round trips")
            if parts:
                counts.append(f"{what}, " + " and ".join(parts))
        notes.append("DBOS's counts per repeat (smaller than litequeue's, so that no row "
                     "takes minutes; its rates stay comparable, and its round-trip p99 over "
                     "fewer samples is closer to its max): " + "; ".join(counts) + ". The "
                     "polls do not touch its enqueue path, so its two delay() figures "
                     "measure the same code, the first over few calls." +
                     (" At its defaults the queue is polled every 1 s, so "
                      "`worker_concurrency=2` starts at most 2 workflows a second, and "
                      "get_result() polls every 1 s." if D else ""))
    if C.get("delay") or C.get("rt_p50"):
        notes.append("Celery: the same counts as litequeue, on a fresh redis-server each.")
    if notes:
        out += [""] + notes
    X = S.get("huey 1ms poll")
    if X and X.get("rt_p50"):
        out += ["", "huey tuned to a 1 ms poll (not its default; shows what its latency costs):",
                "", "| metric | huey, consumer -d 0.001 -m 0.001 -b 1, get(max_delay=0.001) |",
                "|---|---|",
                f"| round trip p50 | {fmt(X.get('rt_p50'), 'ms', 2)} |",
                f"| round trip p99 | {fmt(X.get('rt_p99'), 'ms', 2)} |",
                f"| idle worker CPU (% of one core) | {fmt(X.get('idle_cpu'), '%', 2)} |",
                f"| idle wake-ups per second | {fmt(X.get('idle_wakeups'), '/s', 0)} |"]
    return "\n".join(out)


def build_sched_table(S, raw, cfg):
    """The scheduling figures of issue 3: ETA lateness (litequeue vs huey) and the drain
    with future-dated rows (litequeue against itself), with targets."""
    N, H, X = S["litequeue NORMAL"], S["huey"], S[FUTURE]
    out = []

    def med(d, key):
        return d[key]["median"] if d.get(key) else None

    if N.get("eta_spaced_p50") or H.get("eta_spaced_p50"):
        n, ahead = cfg["eta_tasks"], cfg["eta_ahead"]
        rows = []
        for mode, what in (("spaced", f"{n} tasks due {ahead:g} s ahead, "
                                      f"{cfg['eta_spacing_ms']:g} ms apart"),
                           ("burst", f"{n} tasks all due at one instant {ahead:g} s ahead")):
            for q, target in (("p50", None), ("p99", 10.0)):
                key = f"eta_{mode}_{q}"
                lq, hu = med(N, key), med(H, key)
                ratio = f"{hu / lq:.0f}× lower" if lq and hu and lq > 0 else "—"
                met = "—" if target is None else \
                    ("yes" if lq is not None and lq <= target else "NO")
                rows.append([f"ETA lateness {q}, {what}" if q == "p50" else
                             f"ETA lateness {q}, {mode}",
                             fmt(N.get(key), "ms", 2), fmt(H.get(key), "ms", 0), ratio,
                             "—" if target is None else f"≤ {target:g} ms", met])
            key = f"eta_{mode}_max"
            rows.append([f"ETA lateness max (worst of {n}), {mode}",
                         fmt(N.get(key), "ms", 2), fmt(H.get(key), "ms", 0), "—", "—", "—"])
        early_lq = sum(raw["litequeue NORMAL"].get("eta_spaced_early", []) +
                       raw["litequeue NORMAL"].get("eta_burst_early", []))
        early_hu = sum(raw["huey"].get("eta_spaced_early", []) +
                       raw["huey"].get("eta_burst_early", []))
        rows.append(["tasks started before their ETA, all runs", str(early_lq), str(early_hu),
                     "—", "0", "yes" if early_lq == 0 else "NO"])
        retries = [len(raw[k].get("eta_retries", [])) for k in ("litequeue NORMAL", "huey")]
        if any(retries):
            rows.append(["runs redone because queuing the 200 did not finish 0.2 s before the "
                         "first due time (busy machine)", str(retries[0]), str(retries[1]),
                         "—", "—", "—"])
        header = ["metric (idle worker -c 2 / -w 2; lateness = task's own time.time() at "
                  "start − due time)", "litequeue NORMAL", "huey (defaults)",
                  "litequeue vs huey", "target", "met?"]
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in rows]

    if X.get("future_drain_0") or X.get("future_drain_1m"):
        rows_1m = f"{cfg['future_rows']:,}"
        d0, d1 = med(X, "future_drain_0"), med(X, "future_drain_1m")
        paired = [b / a - 1 for a, b in zip(raw[FUTURE].get("future_drain_0", []),
                                            raw[FUTURE].get("future_drain_1m", []))]
        change = "—"
        if d0 and d1:
            change = f"{(d1 / d0 - 1) * 100:+.1f}%"
            if len(paired) > 1:
                change += (f" (paired per repeat: {min(paired) * 100:+.1f}% to "
                           f"{max(paired) * 100:+.1f}%)")
        rows = [[f"drain rate, {cfg['tasks']:,} prefilled, -c 2, results stored",
                 fmt(X.get("future_drain_0"), "/s"), fmt(X.get("future_drain_1m"), "/s"),
                 change, "within 15%",
                 "yes" if d0 and d1 and d1 >= 0.85 * d0 else "NO"]]

        def same(key, unit, digits, what, target="—"):
            a, b = med(X, f"{key}_0"), med(X, f"{key}_1m")
            delta = f"{(b / a - 1) * 100:+.1f}%" if a and b else "—"
            met = "—"
            if target != "—":
                met = "yes" if a is not None and a == b else "NO"
            rows.append([what, fmt(X.get(f"{key}_0"), unit, digits),
                         fmt(X.get(f"{key}_1m"), unit, digits), delta, target, met])

        k1, k16 = claim_counts(cfg)
        same("claim_steps_n1", "steps", 0, "claim statement, SQLite VM steps per execution, "
             "n=1", "equal")
        same("claim_steps_n16", "steps", 0, "claim statement, VM steps, n=16 (a full "
             "prefetch batch)", "equal")
        same("claim_us_n1", "µs", 1, f"claim statement, wall time per execution, n=1 "
             f"(median of {k1:,}, rolled back)")
        same("claim_us_n16", "µs", 1, f"claim statement, wall time, n=16 (median of "
             f"{k16:,})")
        same("claim_steps_next_due", "steps", 0, "scheduler: next-due query "
             "(min(eta)), VM steps")
        same("claim_steps_promote_due", "steps", 0, "scheduler: promote-due statement, "
             "nothing due, VM steps")
        same("future_delay", "/s", 0, f"delay() rate while prefilling the {cfg['tasks']:,} "
             f"(info)")
        header = ["metric (litequeue NORMAL)", "empty table",
                  f"{rows_1m} SCHEDULED rows due ≥ 1 year ahead", "change", "target", "met?"]
        if out:
            out.append("")
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        for kind, label in (("0", "empty table"), ("1m", f"{rows_1m} SCHEDULED rows")):
            plans = raw[FUTURE].get(f"plans_{kind}")
            if not plans:
                continue
            claim = "; ".join(plans.get("plan", []))
            uses = "yes" if "tasks_ready" in claim else "NO"
            out += ["", f"EXPLAIN QUERY PLAN, {label} (uses tasks_ready: {uses}):",
                    f"- claim (`_SQL_CLAIM`): {claim}"]
            for name, title in (("plan_next_due", "next due (`_SQL_NEXT_DUE`)"),
                                ("plan_promote_due", "promote due (`_SQL_PROMOTE_DUE`)")):
                if plans.get(name):
                    out.append(f"- {title}: {'; '.join(plans[name])}")
    return "\n".join(out)


def build_canvas_table(S, cfg):
    """The canvas rows: chord and chain on litequeue NORMAL and on Celery + Redis, both
    with 2 worker processes; the chain also on DBOS (one workflow of chain_length steps;
    DBOS has no chord)."""
    N, C = S["litequeue NORMAL"], S.get(CELERY) or {}
    D, D1 = S.get(DBOS_DEF) or {}, S.get(DBOS_FAST) or {}

    def med(d, key):
        return d[key]["median"] if d.get(key) else None

    def lower(lq, ce):
        if not lq or not ce or lq < 0 or ce < 0:     # the inner-hop estimate can be < 0
            return "—"
        if ce >= lq:
            return f"{ce / lq:,.0f}× lower" if ce / lq >= 100 else f"{ce / lq:.1f}× lower"
        return f"{lq / ce:.1f}× higher"

    def vs_dbos(key):
        cells = [lower(med(N, key), med(d, key)) for d in (D, D1)]
        return "—" if cells == ["—", "—"] else " / ".join(cells)

    m, n = cfg["chord_members"], cfg["chain_length"]
    rows = []
    for key, what, digits in (
            ("chord_gap", f"chord of {m} no-op members: body start − last member's end "
                          f"(time.time() read by the tasks), one chord per repeat", 2),
            ("chord_gap_db", "chord, the same gap from litequeue's tasks table: body "
                             "started_at − max(members' finished_at) (0 when the last "
                             "member's own transaction claims the body: one `now` for both; "
                             "stamps read before the write lock, so it can be < 0)",
             2),
            ("chord_wall", f"chord of {m}, wall time chord(header)(body) → body's result", 1),
            ("chain_hop_p50", f"chain of {n} (noop, then {n - 1} pass-through steps; DBOS: "
                              f"one workflow of {n} steps): time per hop p50, (apply_async → "
                              f"last result) ÷ {n}, {cfg['chain_runs']} chains", 2),
            ("chain_rt_p50", f"round trip delay()+get() p50, same worker, "
                             f"{cfg['chain_runs']} interleaved with the chains", 2)):
        rows.append([what, fmt(N.get(key), "ms", digits), fmt(C.get(key), "ms", digits),
                     fmt(D.get(key), "ms", digits), fmt(D1.get(key), "ms", digits),
                     lower(med(N, key), med(C, key)), vs_dbos(key)])
    rows.append([f"chain: a hop inside the worker, estimated as (chain p50 − round trip "
                 f"p50) ÷ {n - 1}", fmt(N.get("chain_inner_hop"), "ms", 2),
                 fmt(C.get("chain_inner_hop"), "ms", 2), fmt(D.get("chain_inner_hop"), "ms", 2),
                 fmt(D1.get("chain_inner_hop"), "ms", 2),
                 lower(med(N, "chain_inner_hop"), med(C, "chain_inner_hop")),
                 vs_dbos("chain_inner_hop")])
    rows.append(["chain: time per hop ÷ round trip (per repeat, then the median)"] +
                [fmt(d.get("chain_ratio"), "×", 2).replace(" ×", "×") for d in (N, C, D, D1)] +
                ["—", "—"])
    rows = [r for r in rows if any(c != "—" for c in r[1:5])]
    celery_head = CELERY
    if C.get("versions") and C["versions"].get("redis") != "?":
        celery_head = f"Celery {C['versions']['celery']} + Redis {C['versions']['redis']}"
    dbos_version = (D.get("versions") or {}).get("dbos", "")
    header = ["metric (worker -c 2 / prefork -c 2 / DBOS worker_concurrency=2)",
              "litequeue NORMAL", celery_head, f"DBOS {dbos_version} on SQLite (defaults: 1 s polls)",
              "DBOS, both polls at 1 ms (info)", "litequeue vs Celery",
              "litequeue vs DBOS (defaults / 1 ms polls)"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    if D.get("chain_hop_p50") or D1.get("chain_hop_p50"):
        runs = "; ".join(f"{what} {d['chain_count']['median']:,.0f}" for d, what in (
            (D, "at its defaults"), (D1, "with 1 ms polls")) if d.get("chain_count"))
        out += ["", f"DBOS's chain is one workflow, enqueued by a client and awaited with "
                    f"get_result(): its {n} steps run one after the other in the workflow's "
                    f"thread, each checkpointed in the system database, not queued as tasks "
                    f"of their own. Chains (and as many round trips) per repeat: {runs}. "
                    f"At its defaults get_result() polls every 1 s, so a chain and a round "
                    f"trip both take about 1 s and the inner-hop estimate says nothing."]
    return "\n".join(out)


def build_workflow_table(S, cfg):
    """The workflow rows: litequeue NORMAL, and DBOS beside it when it ran (at its
    defaults and with 1 ms polls): its chain workflow for the step functions (from the
    workflows measurement, or else the chain row's), child workflows for the task steps,
    DBOS.sleep for the sleeps (the sleepers on a queue with no worker_concurrency)."""
    N, D, D1 = S["litequeue NORMAL"], S.get(DBOS_DEF) or {}, S.get(DBOS_FAST) or {}
    n, k = cfg["chain_length"], cfg["wf_sleepers"]

    def row(label, key, unit, digits, target, part, dbos_digits=None):
        dd = digits if dbos_digits is None else dbos_digits
        return [label, fmt(N.get(key), unit, digits)] + \
            [_dbos_wf_cell(d, part, fmt(d.get(key), unit, dd)) for d in (D, D1)] + [target]

    steps = row(f"workflow of {n} step functions (@app.step; DBOS: its chain workflow of {n} "
                f"@DBOS.step), delay() → get() ÷ {n}, p50 per step", "wf_steps_p50", "ms", 3,
                "≤ 1 ms", "per_step", 2)
    for i, d in ((2, D), (3, D1)):
        if d.get("wf_steps_p50") is None and d.get("chain_hop_p50") is not None:
            steps[i] = fmt(d["chain_hop_p50"], "ms", 2) + " (the chain row)"
    rows = [
        steps,
        row(f"workflow of {n} task steps (`x = step.delay(x).get()`: each queued, run by a "
            f"worker process and awaited durably; DBOS: a child workflow enqueued on a "
            f"worker_concurrency=2 queue, `get_result()`), p50 per step", "wf_tasks_p50",
            "ms", 3, "≤ 1 ms", "per_step", 2),
        row(f"durable sleep of {cfg['wf_sleep_s']:g} s (DBOS: `DBOS.sleep`): lateness p50 "
            f"({cfg['wf_sleeps']} sleeps)", "wf_sleep_p50", "ms", 2, "—", "lateness"),
        row("durable sleep: lateness p99", "wf_sleep_p99", "ms", 2, "≤ 5 ms", "lateness"),
        row("durable sleep: lateness max", "wf_sleep_max", "ms", 2, "—", "lateness"),
        _workflow_slot_row(N, D, D1, k)]
    rows += _workflow_sleeper_rows(N, D, D1, cfg)
    header = ["metric (litequeue worker -c 2; DBOS worker_concurrency=2)", "litequeue NORMAL",
              "DBOS (defaults: 1 s polls)", "DBOS, 1 ms polls (info)", "target"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows] +
                     _workflow_notes(D, D1, cfg))


def _workflow_notes(D, D1, cfg):
    """The lines under the workflow table when DBOS ran."""
    if not any(d.get(k) for d in (D, D1) for k in ("wf_steps_p50", "wf_errors",
                                                     "wf_sleep_p50", "wf_sleepers_cpu")):
        return []
    runs = [f"{d['wf_steps_count']['median']:.0f} {what}" for d, what in
            ((D, "at its defaults after 1 warm-up"), (D1, "with 1 ms polls after 3"))
            if d.get("wf_steps_count")]
    return ["", f"DBOS: each workflow enqueued by a client on its worker_concurrency=2 queue and "
            f"awaited with get_result(); timed workflows of each kind per repeat: "
            f"{', '.join(runs) or '—'}. Its task steps are child workflows on a second "
            f"worker_concurrency=2 queue, run on threads of the same worker process: at its "
            f"defaults each waits for a queue poll and a get_result() poll, 1 s each. A "
            f"DBOS.sleep is time.sleep "
            f"in the workflow's thread, which keeps the thread and its queue slot: its "
            f"{cfg['wf_sleepers']:,} sleepers run on a third queue, with no "
            f"worker_concurrency, one thread each, and sleep {cfg['dbos_sleepers_s']:g} s "
            f"(litequeue's {cfg['wf_sleepers_s']:g} s), as their enqueues and sleep rows "
            f"take longer. With 1 ms polls its worker polls those three queues every 1 ms: "
            f"the CPU before them is that."]


def _dbos_wf_cell(d, part, text):
    """A DBOS cell of the workflow table: `text` (its figure, or "—"), and the failures of
    the measurement's `part` over the repeats, if any."""
    errors = (d.get("wf_errors") or {}).get(part)
    if not errors:
        return text
    failed = f"failed in {len(errors)} repeat(s): {errors[0]}".replace("|", "/")
    return failed if text == "—" else f"{text}; {failed}"


def _workflow_slot_row(N, D, D1, k):
    """Does a sleeping workflow keep a worker slot? litequeue: the sleepers measurement
    itself (all k asleep at once on -c 2); DBOS: the most of 3 asleep at once on its
    worker_concurrency=2 queue."""
    def dbos(d):
        most = d.get("wf_sleep_slot_most")
        if most is None:
            return _dbos_wf_cell(d, "slot", "—")
        held = "yes" if most["max"] <= 2 else "no" if most["min"] >= 3 else "mixed"
        return f"{held}: {fmt(most, 'asleep at once', 0)}"
    lq = f"no: all {k:,} asleep at once on `-c 2`" if N.get("wf_sleepers_procs") else "—"
    return ["a sleeping workflow keeps a worker slot (DBOS: on its worker_concurrency=2 queue, "
            "a third sleep of 3 s queued once two sleep)", lq, dbos(D), dbos(D1), "no"]


def _workflow_sleeper_rows(N, D, D1, cfg):
    """The rows of the `wf_sleepers` workflows asleep at once (DBOS: on its sleepers' queue,
    which has no worker_concurrency, as a slot is kept through a sleep; each sleeping
    `dbos_sleepers_s`)."""
    k = cfg["wf_sleepers"]
    def num(x):
        return fmt(x, "").replace("  ", " ").strip()

    def procs(d):
        if d.get("wf_sleepers_procs") is None:
            return _dbos_wf_cell(d, "sleepers", "—")
        cell = f"{num(d['wf_sleepers_procs'])} / {fmt(d.get('wf_sleepers_threads'), 'threads')}"
        if d.get("wf_sleepers_threads_idle") is not None:
            cell += f" (before them: {num(d['wf_sleepers_threads_idle'])})"
        return _dbos_wf_cell(d, "sleepers", cell)

    def cpu(d):
        cell = fmt(d.get("wf_sleepers_cpu"), "%", 2)
        if d.get("wf_sleepers_cpu_idle") is not None:
            cell += f" (before them: {fmt(d['wf_sleepers_cpu_idle'], '%', 2)})"
        return _dbos_wf_cell(d, "sleepers", cell)

    def asleep(d):
        cell = fmt(d.get("wf_sleepers_asleep_ms"), "ms", 0)
        if d.get("wf_sleepers_enqueue_ms") is not None:
            cell += f" (the calls: {fmt(d['wf_sleepers_enqueue_ms'], 'ms', 0)})"
        return _dbos_wf_cell(d, "sleepers", cell)

    def woke(d):
        cell = fmt(d.get("wf_sleepers_all_woke"), "ms", 0)
        if d.get("wf_sleepers_last_end") is not None:
            late = fmt(d["wf_sleepers_last_end"], "ms", 0)
            cell += f" (the latest recorded sleep end: due + {late})"
        return _dbos_wf_cell(d, "sleepers", cell)

    return [
        [f"{k:,} workflows asleep at once (litequeue: {cfg['wf_sleepers_s']:g} s each; DBOS: "
         f"{cfg['dbos_sleepers_s']:g} s each, on a queue with no worker_concurrency): the "
         f"first delay() / enqueue → all asleep (the {k:,} calls alone)", asleep(N),
         asleep(D), asleep(D1), "—"],
        [f"{k:,} asleep: worker processes / their threads", procs(N), procs(D), procs(D1),
         "4: the supervisor, its 2 children, multiprocessing's resource tracker (as idle)"],
        [f"{k:,} asleep: worker CPU over 2 s (% of one core)", cpu(N), cpu(D), cpu(D1), "≈ 0"],
        [f"{k:,} asleep: their common due time (the first delay() / enqueue + the sleep) → "
         f"the last one's result", woke(N), woke(D), woke(D1), "—"]]


def build_concurrency_table(S, raw, cfg):
    """The concurrency rows: coroutine tasks (async) against huey's greenlet consumer,
    blocking tasks on threads against huey's thread consumer, and a global rate limit on
    two supervisors against Celery's per-worker limit."""
    C, R = S[CONC], raw[CONC]
    cel = S.get(CELERY) or {}

    def med(key):
        return C[key]["median"] if C.get(key) else None

    def row(cells):
        return "| " + " | ".join(cells) + " |"

    out = []
    n, sleep = cfg["async_tasks"], cfg["async_sleep"]
    if C.get("async_lq100") or C.get("async_huey"):
        k, g = cfg["async_concurrency"], cfg["huey_greenlets"]
        huey_rate = med("async_huey")
        rows = []
        for key, what, ceiling, target in (
                ("async_lq100", f"litequeue `worker -c 2`, worker_async_concurrency 100 (the "
                                f"default): {n:,} × `await asyncio.sleep({sleep:g})`",
                 2 * 100 / sleep, None),
                ("async_lqk", f"litequeue `worker -c 2 --async-concurrency {k}`: the same "
                              f"{n:,}", 2 * k / sleep, 5000.0),
                ("async_huey", f"huey `-k greenlet -w {g}` (gevent, monkey-patched first): "
                               f"{n:,} × `time.sleep({sleep:g})`", g / sleep, None)):
            rate = med(key)
            share = f"{rate / ceiling * 100:.0f}%" if rate else "—"
            vs = f"{rate / huey_rate:.1f}×" if rate and huey_rate and key != "async_huey" \
                else "—"
            met = "—" if target is None else ("yes" if rate and rate >= target else "NO")
            rows.append([what, fmt(C.get(key), "/s"), f"{ceiling:,.0f} /s", share,
                         fmt(C.get(key + "_cpu"), "%"), vs,
                         "—" if target is None else f"≥ {target:,.0f} /s", met])
        noop = med("async_noop")
        rows.append([f"the limit: litequeue `-c 2 --async-concurrency {k}`, {n:,} no-op "
                     f"coroutines (`async def anoop(i): return i`): claim + commit",
                     fmt(C.get("async_noop"), "/s"), "— (no sleep)", "—",
                     fmt(C.get("async_noop_cpu"), "%"), "—", "—", "—"])
        if noop:
            rows.append(["the limit as a cost: 2 processes ÷ that rate (µs of one process per "
                         "task)", f"{2 / noop * 1e6:.0f} µs", "—", "—", "—", "—", "—", "—"])
        for key, what in (("async_lq100", "litequeue, async 100"),
                          ("async_lqk", f"litequeue, async {k}"),
                          ("async_noop", "litequeue, no-op coroutines"),
                          ("async_huey", "huey greenlets")):
            if C.get(key + "_incl_startup"):
                rows.append([f"{what}: worker launch → all results seen by a 20 ms poll "
                             f"(incl. start-up; info)", fmt(C.get(key + "_incl_startup"), "/s"),
                             "—", "—", "—", "—", "—", "—"])
        header = [f"metric ({n:,} tasks queued before the worker starts; rate = tasks ÷ (first "
                  f"start → last result stored))", "rate", "in-flight ceiling (slots ÷ "
                  f"{sleep:g} s)", "share of the ceiling", "worker CPU, first start → last "
                  "result (% of one core; 2 cores)", "vs huey greenlets", "target", "met?"]
        out += [row(header), "|" + "---|" * len(header)] + [row(r) for r in rows]

    if C.get("threads_lq") or C.get("threads_huey"):
        t, m, sec = cfg["threads"], cfg["thread_tasks"], cfg["thread_sleep"]
        limit = math.ceil(m / t) * sec
        a, b = med("threads_lq"), med("threads_huey")
        rows = [[f"wall time, first delay() → last result stored ({m} × `time.sleep({sec:g})`"
                 f", queued one by one to an idle worker)", fmt(C.get("threads_lq"), "s", 3),
                 fmt(C.get("threads_huey"), "s", 3),
                 f"{b / a:.2f}× faster" if a and b else "—", f"{limit:g} s",
                 f"{a - limit:+.3f} s" if a else "—"]]
        if C.get("threads_lq_queued"):
            rows.append([f"queuing the {m} (producer, info)", fmt(C.get("threads_lq_queued"),
                                                                  "ms", 1),
                         fmt(C.get("threads_huey_queued"), "ms", 1), "—", "—", "—"])
        if C.get("threads_lq_most"):
            rows.append([f"most rows STARTED at once (litequeue: from started_at / "
                         f"finished_at; {t} threads run {t} at a time, so more means rows "
                         f"claimed, and stamped started_at, before a thread was free)",
                         fmt(C.get("threads_lq_most"), "rows"), "—", "—", f"{t}", "—"])
        header = [f"metric (`litequeue worker -P threads -c {t}` / `huey_consumer -k thread "
                  f"-w {t}`)", f"litequeue -P threads -c {t}", f"huey -k thread -w {t}",
                  "litequeue vs huey", f"physical limit ({math.ceil(m / t)} rounds of "
                  f"{sec:g} s)", "litequeue over the limit"]
        if out:
            out.append("")
        out += [row(header), "|" + "---|" * len(header)] + [row(r) for r in rows]

    if C.get("rl_lq_window") or C.get("rl_cel_window"):
        b, rate = cfg["rate_backlog"], cfg["rate_limit"]
        per_s = benchtasks_rate()
        lw = med("rl_lq_window")
        win_max = max(R.get("rl_lq_window", [0]) or [0])
        rows = [[f"most starts in any 1 s window (sliding over the {b} start times; litequeue: "
                 f"started_at; Celery: the task's own time.time())",
                 fmt(C.get("rl_lq_window"), "starts"), fmt(C.get("rl_cel_window"), "starts"),
                 f"≤ {per_s + 1:g} (every repeat)",
                 "yes" if lw is not None and win_max <= per_s + 1 else "NO"],
                ["the same, litequeue by the task's own time.time() (its first statement)",
                 fmt(C.get("rl_lq_own_window"), "starts"), "—", "—", "—"],
                ["achieved rate, (starts − 1) ÷ (last start − first start)",
                 fmt(C.get("rl_lq_rate"), "/s", 2), fmt(C.get("rl_cel_rate"), "/s", 2),
                 f"{per_s:g} /s", "—"],
                ["smallest gap between two consecutive starts (litequeue: started_at)",
                 fmt(C.get("rl_lq_gap_min"), "ms", 1), fmt(C.get("rl_cel_gap_min"), "ms", 1),
                 f"{1000 / per_s:g} ms", "—"],
                ["smallest gap, litequeue by the tasks' own clock",
                 fmt(C.get("rl_lq_own_gap_min"), "ms", 1), "—", "—", "—"],
                ["first → last start", fmt(C.get("rl_lq_span"), "s", 2),
                 fmt(C.get("rl_cel_span"), "s", 2), "—", "—"],
                ["an unrelated no-op queued right after the backlog: delay() → its start "
                 "(litequeue: started_at; Celery: the task's own time.time())",
                 fmt(C.get("rl_lq_wait_first"), "ms", 2), fmt(C.get("rl_cel_wait_first"), "ms", 1),
                 "—", "—"],
                ["the same, litequeue by the task's own time.time()",
                 fmt(C.get("rl_lq_own_wait_first"), "ms", 2), "—", "—", "—"],
                ["the worst wait of the unrelated no-ops queued once a second while the "
                 "backlog drains", fmt(C.get("rl_lq_wait_max"), "ms", 2),
                 fmt(C.get("rl_cel_wait_max"), "ms", 1), "—", "—"],
                ["unrelated no-ops timed per repeat", fmt(C.get("rl_lq_probes"), ""),
                 fmt(C.get("rl_cel_probes"), ""), "—", "—"],
                ["worker processes that ran a rate-limited task", fmt(C.get("rl_lq_pids"), "of 4"),
                 "—", "—", "—"]]
        cel_head = CELERY
        if cel.get("versions"):
            runs = len(R.get("rl_cel_window", []))
            cel_head = (f"Celery {cel['versions']['celery']} + Redis "
                        f"{cel['versions']['redis']}, 2 workers prefork -c 2 (limit per "
                        f"worker; {runs} run{'s' if runs != 1 else ''})")
        header = [f"metric (rate_limit=\"{rate}\", a backlog of {b} queued to idle workers)",
                  "litequeue, 2 supervisors `worker -c 2` on one file", cel_head, "target",
                  "met?"]
        if out:
            out.append("")
        out += [row(header), "|" + "---|" * len(header)] + [row(r) for r in rows]

    problems = R.get("log_problems")
    if problems:
        out += ["", "Worker logs with unexpected lines (errors, warnings): " + "; ".join(
            f"{label}: {count}" for label, count in problems.items()) + "."]
    return "\n".join(out)


def _paired(raw_a, raw_b):
    """Per-repeat ratios a ÷ b of two sample lists taken in the same repeats."""
    return [a / b for a, b in zip(raw_a or [], raw_b or []) if a and b]


def build_issue13_table(S, raw, cfg):
    """Issue 13's target table, with every figure this run measured (the rows of groups it
    did not run are left out), then the new groups' own tables: insert, producers,
    launch, memory."""
    N, F, H, I = S["litequeue NORMAL"], S["litequeue FULL"], S["huey"], S[ISSUE13]
    C, D, D1 = S.get(CELERY) or {}, S.get(DBOS_DEF) or {}, S.get(DBOS_FAST) or {}
    R = raw[ISSUE13]
    peer_names = (("huey", H), ("Celery", C), ("DBOS", D), ("DBOS 1 ms polls", D1))

    def peers(keys, unit, digits=0, names=peer_names):
        """The same figure(s) of the other systems of this run, for information."""
        cells = []
        for name, d in names:
            if any(d.get(k) for k in keys):
                cells.append(f"{name} " + " / ".join(fmt(d.get(k), unit, digits)
                                                      for k in keys))
        return "; ".join(cells) or "—"

    def med(d, key):
        return d[key]["median"] if d.get(key) else None

    def row(cells):
        return "| " + " | ".join(cells) + " |"

    def table(header, rows):
        return [row(header), "|" + "---|" * len(header)] + [row(r) for r in rows]

    def judge(*checks):
        if any(c is None for c in checks):
            return "—"
        return "yes" if all(checks) else "NO"

    out = []
    rows = []
    if N.get("rt_p50"):
        p50, p99 = med(N, "rt_p50"), med(N, "rt_p99")
        rows.append([f"round trip delay()+get() p50 / p99, idle -c 2 ({cfg['roundtrips']} "
                     f"round trips)", f"{fmt(N['rt_p50'], 'ms', 2)} / "
                     f"{fmt(N.get('rt_p99'), 'ms', 2)}", "≤ 0.5 / ≤ 1.0 ms",
                     judge(p50 <= 0.5, p99 is not None and p99 <= 1.0),
                     peers(("rt_p50", "rt_p99"), "ms", 2)])
    if N.get("drain") or F.get("drain"):
        dn, df = med(N, "drain"), med(F, "drain")
        rows.append([f"drain, {cfg['tasks']:,} no-op, -c 2, NORMAL / FULL",
                     f"{fmt(N.get('drain'), '/s')} / {fmt(F.get('drain'), '/s')}",
                     "≥ 60,000 / ≥ 30,000 per s",
                     judge(dn is not None and dn >= 60000, df is not None and df >= 30000),
                     peers(("drain",), "/s")])
    if I.get("ins_normal_ratio"):
        rows.append([f"delay() at NORMAL ÷ a bare committed INSERT through apsw, same run "
                     f"(rates: {fmt(I.get('ins_normal_delay'), '/s')} ÷ "
                     f"{fmt(I.get('ins_normal_bare'), '/s')})",
                     fmt(I["ins_normal_ratio"], "%", 1), "≥ 80%",
                     judge(med(I, "ins_normal_ratio") >= 80.0), "—"])
    full_vs_huey = _paired(raw["litequeue FULL"].get("delay"), raw["huey"].get("delay"))
    if full_vs_huey:
        s = summary(full_vs_huey)
        rows.append([f"delay() at FULL ÷ huey's delay() (both synchronous=FULL in WAL: one "
                     f"fsync per call; per repeat: {fmt(F.get('delay'), '/s')} ÷ "
                     f"{fmt(H.get('delay'), '/s')})",
                     fmt(s, "×", 2).replace(" ×", "×"), "≥ 1.1×",
                     judge(s["median"] >= 1.1),
                     peers(("delay",), "/s", names=peer_names[1:])])
    if N.get("eta_burst_p99"):
        rows.append([f"ETA burst: {cfg['eta_tasks']} due at one instant, lateness p99",
                     fmt(N["eta_burst_p99"], "ms", 2), "≤ 5 ms",
                     judge(med(N, "eta_burst_p99") <= 5.0),
                     peers(("eta_burst_p99",), "ms", 0, names=peer_names[:1])])
    if I.get("prod_ratio"):
        rows.append([f"{cfg['producers']} producer processes calling delay() at once while "
                     f"-c 2 drains: total rate ÷ 1 producer alone; p99 latency",
                     f"{fmt(I['prod_ratio'], '×', 2).replace(' ×', '×')}; p99 "
                     f"{fmt(I.get('prod_many_p99'), 'ms', 2)}", "≥ 1.0×, p99 ≤ 5 ms",
                     judge(med(I, "prod_ratio") >= 1.0,
                           med(I, "prod_many_p99") is not None and
                           med(I, "prod_many_p99") <= 5.0), "—"])
    if I.get("launch_lq_get"):
        others = []
        for name, key in (("huey", "launch_huey_get"), ("Celery", "launch_celery_get"),
                          ("DBOS", "launch_dbos_get"),
                          ("DBOS 1 ms polls", "launch_dbos_fast_get")):
            if I.get(key):
                others.append(f"{name} {fmt(I[key], 'ms')}")
        rows.append([f"worker launch → first task done (get() returns; median of "
                     f"{cfg['launch_runs']} launches a repeat)",
                     fmt(I["launch_lq_get"], "ms"), "≤ 300 ms",
                     judge(med(I, "launch_lq_get") <= 300.0), "; ".join(others) or "—"])
    if I.get("mem_supervisor_start"):
        growth = [med(I, f"mem_{p}_delta") for p in ("supervisor", "child1", "child2")]
        rows.append([f"resident memory (VmRSS) at start, demo tasks loaded: supervisor / "
                     f"child 1 / child 2; growth from {med(I, 'mem_first_done'):,.0f} to "
                     f"{cfg['memory_tasks']:,} tasks done",
                     f"{fmt(I['mem_supervisor_start'], 'MiB', 1)} / "
                     f"{fmt(I.get('mem_child1_start'), 'MiB', 1)} / "
                     f"{fmt(I.get('mem_child2_start'), 'MiB', 1)}; growth "
                     + " / ".join(f"{g:+.1f}" for g in growth) + " MiB",
                     f"report; no growth (≤ {cfg['memory_tolerance']:g} MiB each)",
                     judge(*(g <= cfg["memory_tolerance"] for g in growth)), "—"])
    if rows:
        out += ["Issue 13's targets (litequeue; each figure from its own group of this run):",
                ""] + table(["figure", "litequeue", "target", "met?",
                             "the other systems, same run (info; not judged)"], rows)

    if I.get("ins_normal_delay") or I.get("ins_full_delay"):
        rows = []
        for what, key, unit, digits in (
                ("delay() rate: noop.delay(i), one call after the other, no worker", "delay",
                 "/s", 0),
                ("bare committed INSERT rate: plain apsw, autocommit, the same row values",
                 "bare", "/s", 0),
                ("delay() ÷ bare INSERT (rates over all the repeat's rounds)", "ratio", "%", 1),
                ("per call: delay() − bare INSERT", "diff_us", "µs", 1)):
            rows.append([what, fmt(I.get(f"ins_normal_{key}"), unit, digits),
                         fmt(I.get(f"ins_full_{key}"), unit, digits)])
        rows.append(["delay() ÷ bare INSERT, each round alone (min–max over every round of "
                     "every repeat)"] + [
            f"{min(R[k]):.0f}–{max(R[k]):.0f}%" if R.get(k) else "—"
            for k in ("ins_normal_rounds", "ins_full_rounds")])
        out += [""] + table([f"metric (fresh files, same schema; per repeat "
                             f"{cfg['insert_rounds']} rounds alternating which side goes "
                             f"first)", f"NORMAL, {cfg['insert_calls']:,} calls a side a round",
                             f"FULL (info), {cfg['insert_calls_full']:,} calls a side a round"],
                            rows)
        if R.get("ins_row_diff"):
            out += ["", f"The rows differ (column: delay()'s value, the bare INSERT's): "
                        f"{R['ins_row_diff']}"]

    if I.get("prod_ratio"):
        many = cfg["producers"]
        rows = []
        for what, key, unit, digits in (
                ("total delay() rate (all calls ÷ first start → last end)", "rate", "/s", 0),
                ("per-call latency p50 (all calls of the phase)", "p50", "ms", 3),
                ("per-call latency p99", "p99", "ms", 2),
                ("per-call latency max", "max", "ms", 2),
                ("per-call latency mean (= 1 ÷ a producer's own rate)", "mean", "ms", 3),
                ("calls that took over 1 ms (share of the calls)", "over1ms", "%", 1),
                ("calls timed", "calls", "", 0),
                ("the worker's drain meanwhile (backlog change + calls, ÷ the phase; info)",
                 "drain", "/s", 0)):
            rows.append([what] + [fmt(I.get(f"prod_{side}_{key}"), unit, digits)
                                  .replace("  ", " ").strip() for side in ("one", "many")])
        rows.insert(1, ["total rate ÷ 1 producer's (per repeat)", "1×",
                        fmt(I.get("prod_ratio"), "×", 2).replace(" ×", "×")])
        left = [min(R.get(f"prod_{k}_left", [0])) for k in ("one", "many")]
        rows.append(["backlog still queued when the phase ended (least of the repeats; "
                     f"the figure is refused under {cfg['min_backlog']})",
                     f"{left[0]:,}", f"{left[1]:,}"])
        out += [""] + table([f"metric (`worker -c 2` draining a backlog of "
                             f"{cfg['producer_backlog']:,} no-op tasks; each phase "
                             f"{cfg['producer_seconds']:g} s of delay() as fast as it goes)",
                             "1 producer process", f"{many} producer processes at once"], rows)

    if I.get("launch_lq_get"):
        rows = []

        def launch_row(what, lq, hu=None, ce=None, db=None, db1=None):
            rows.append([what] + [fmt(I.get(k), "ms") if k else "—"
                                  for k in (lq, hu, ce, db, db1)])

        launch_row("launch → the first task's result returned by get() in the bench process "
                   "(huey: get() polling every 1 ms; DBOS: get_result() polling every 1 ms)",
                   "launch_lq_get", "launch_huey_get", "launch_celery_get", "launch_dbos_get",
                   "launch_dbos_fast_get")
        launch_row("launch → the result stored, by the system's own clock (litequeue: "
                   "finished_at; huey: its SIGNAL_COMPLETE, after put_result; Celery: "
                   "date_done)", "launch_lq_stored", "launch_huey_stored",
                   "launch_celery_stored")
        launch_row("launch → the supervisor's `workers` row (its started_at; info)",
                   "launch_lq_supervisor")
        launch_row("launch → the first child's `workers` row (info)", "launch_lq_child1")
        launch_row("launch → both children's rows (info)", "launch_lq_children")
        launch_row("launch → the first task claimed (its started_at; info)",
                   "launch_lq_claimed")
        launch_row("started as the `litequeue` command does (`python -c 'import litequeue; "
                   "litequeue.cli()' worker …`: litequeue.py imported as a module, which a "
                   ".pyc can spare compiling, not run as a script): launch → get() returns "
                   "(info)",
                   "launch_lq_cli_get")
        launch_row("the same: launch → the supervisor's row (info)",
                   "launch_lq_cli_supervisor")
        launch_row("the same: launch → both children's rows (info)",
                   "launch_lq_cli_children")
        launch_row("with .pyc files (PYTHONDONTWRITEBYTECODE unset for the worker, after "
                   "one launch that wrote them): launch → get() returns (info)",
                   "launch_lq_pyc_get")
        launch_row("with .pyc files: launch → both children's rows (info)",
                   "launch_lq_pyc_children")
        launch_row("with .pyc files, started as the `litequeue` command does: launch → "
                   "get() returns (info)", "launch_lq_cli_pyc_get")
        out += [""] + table([f"metric (median of {cfg['launch_runs']} launches a repeat; one "
                             f"no-op task queued before the launch; launch = just before "
                             f"Popen)", "litequeue `litequeue.py worker -c 2`",
                             "huey `huey_consumer -w 2 -k process`",
                             "Celery `worker -P prefork -c 2` + Redis",
                             "DBOS `dbos_worker.py` (worker_concurrency=2, 1 s queue poll)",
                             "DBOS, queue polled every 1 ms (info)"], rows)
        if R.get("launch_pyc_present"):
            out += ["", "A litequeue .pyc file existed before the run: the 'as is' launches "
                        "read it."]

    if I.get("mem_supervisor_start"):
        step = cfg["memory_step"]
        rows = []
        for name in ("supervisor", "child 1", "child 2", "other", "total"):
            key = "mem_" + name.replace(" ", "")
            rows.append([{"other": "other processes of the session (multiprocessing's "
                                   "resource tracker)",
                          "total": "all processes"}.get(name, name),
                         fmt(I.get(key + "_start"), "MiB", 1),
                         fmt(I.get(key + "_first"), "MiB", 1),
                         fmt(I.get(key + "_end"), "MiB", 1),
                         fmt(I.get(key + "_delta"), "MiB", 2),
                         fmt(I.get(key + "_slope"), "MiB", 2)])
        first = med(I, "mem_first_done")
        out += [""] + table([f"VmRSS (`worker -c 2 -A` the demo tasks + noop; "
                             f"{cfg['memory_tasks']:,} no-op tasks drained, sampled every "
                             f"{step:,})", "at start (children registered, nothing run)",
                             f"after {first:,.0f} tasks", f"after {cfg['memory_tasks']:,}",
                             f"growth {first:,.0f} → {cfg['memory_tasks']:,}",
                             "slope per 100,000 tasks (least squares over the samples from "
                             f"{step:,} on)"], rows)
        if R.get("mem_restarts"):
            out += ["", "A child of the worker died during a drain and was restarted (that "
                        "child's growth then spans two processes; see the worker log lines "
                        "reported on stderr): " + "; ".join(
                            f"{tag}: {', '.join(what)}" for tag, what in
                            R["mem_restarts"].items())]
    return "\n".join(out)


def build_dashboard_table(S, raw, cfg):
    """The dashboard rows: each endpoint's time on the big database, the drain with the
    page open in Chromium against without, the idle CPU and the write-lock check."""
    D, R = S[DASH], raw[DASH]

    def med(key):
        return D[key]["median"] if D.get(key) else None

    out = []
    eps = R.get("endpoints")
    if eps:
        rows = []
        for label in eps["order"]:
            p50 = med(f"ep_p50:{label}")
            rows.append([f"`{label}`", fmt(D.get(f"ep_p50:{label}"), "ms", 1),
                         fmt(D.get(f"ep_max:{label}"), "ms", 1),
                         fmt(D.get(f"ep_fresh_p50:{label}"), "ms", 1),
                         f"{eps['bytes'][label]:,} B", "≤ 50 ms",
                         "yes" if p50 is not None and p50 <= 50.0 else "NO"])
        header = [f"dashboard GET, {cfg['dashboard_rows']:,} tasks in the file "
                  f"({cfg['dashboard_requests']} timed after {cfg['dashboard_warmups']} "
                  f"warm-ups, one kept-alive connection)", "median", "max (worst of the "
                  f"{cfg['dashboard_requests']})", "median, a new connection per GET (info)",
                  "response", "target (median)", "met?"]
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in rows]

    off, on = med("drain_off"), med("drain_on")
    if off or on:
        paired = [b / a - 1 for a, b in zip(R.get("drain_off", []), R.get("drain_on", []))]
        change = "—"
        if off and on:
            change = f"{(on / off - 1) * 100:+.1f}%"
            if len(paired) > 1:
                change += (f" (paired per repeat: {min(paired) * 100:+.1f}% to "
                           f"{max(paired) * 100:+.1f}%)")
        rows = [[f"drain rate, {cfg['tasks']:,} prefilled, -c 2, results stored",
                 fmt(D.get("drain_off"), "/s"), fmt(D.get("drain_on"), "/s"), change,
                 "within 5%", "yes" if off and on and on >= 0.95 * off else "NO"],
                ["the dashboard's /data/ requests per second while the worker drains (as "
                 "the browser counted them, both windows)", "—",
                 fmt(D.get("drain_on_requests"), "/s", 1), "—", "—", "—"],
                ["the dashboard process's CPU over the same stretch (% of one core)", "—",
                 fmt(D.get("drain_on_dash_cpu"), "%", 1), "—", "—", "—"]]
        header = ["metric (litequeue NORMAL, fresh database)", "no dashboard",
                  "dashboard open in headless Chromium at / and at /tasks (live)", "change",
                  "target", "met?"]
        if out:
            out.append("")
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in rows]

    rows = []
    if D.get("idle_cpu"):
        rows += [[f"dashboard process CPU, page / open in headless Chromium, no task "
                  f"activity, {cfg['idle_window']:.0f} s after {cfg['idle_settle']:.0f} s "
                  f"settle (% of one core)", fmt(D.get("idle_cpu"), "%", 2), "—", "—"],
                 ["the page's /data/ requests per second over that window",
                  fmt(D.get("idle_requests"), "/s", 2), "—", "—"],
                 ["their time as Chromium measured it (Resource Timing, request start → "
                  "last byte), median", fmt(D.get("idle_fetch_ms"), "ms", 1), "—", "—"],
                 ["dashboard wake-ups per second over that window (voluntary context "
                  "switches, all threads)", fmt(D.get("idle_wakeups"), "/s", 1), "—", "—"],
                 ["Chromium's own CPU over that window, all its processes (% of one core)",
                  fmt(D.get("idle_browser_cpu"), "%", 1), "—", "—"]]
    if D.get("lock_gets"):
        late = sum(R.get("lock_late", []))
        hold = cfg["dashboard_lock_hold"]
        rows += [[f"GETs answered while another connection held BEGIN IMMEDIATE for "
                  f"{hold:g} s (every endpoint in turn, each on a new connection)",
                  fmt(D.get("lock_gets"), "GETs"), "—", "—"],
                 ["slowest of them", fmt(D.get("lock_worst"), "ms", 1), "—", "—"],
                 [f"slowest of the same GETs for {hold:g} s without the lock",
                  fmt(D.get("lock_base_worst"), "ms", 1), "—", "—"],
                 [f"GETs under the lock that failed, or took longer than both 2× their "
                  f"endpoint's slowest unlocked GET + 20 ms and {hold * 250:g} ms, and "
                  f"endpoints not answered before the release, all repeats",
                  str(late), "0",
                  "yes" if late == 0 else "NO"]]
    if rows:
        if out:
            out.append("")
        out += ["| metric (dashboard on the same file) | value | target | met? |",
                "|---|---|---|---|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="short run: 1 repeat, 5 000 tasks, 100 round trips, 5 s idle window, "
                         "100 000 future rows, 100 000 dashboard rows, 200 000 memory-row "
                         "tasks")
    ap.add_argument("--repeat", type=int, help="repeats of every measurement [3; quick 1]")
    ap.add_argument("--tasks", type=int, help="tasks for delay() and drain [20000; quick 5000]")
    ap.add_argument("--roundtrips", type=int, help="round trips per repeat [200; quick 100]")
    ap.add_argument("--idle-window", type=float, help="seconds of idle CPU measured [10; quick 5]")
    ap.add_argument("--idle-settle", type=float, default=5.0,
                    help="seconds a worker idles before the window [5]")
    ap.add_argument("--no-tuned-huey", action="store_true",
                    help="skip the extra huey-at-1-ms-poll measurements")
    ap.add_argument("--only", default=",".join(MEASUREMENTS),
                    help="comma-separated measurements to run, of: "
                         f"{','.join(MEASUREMENTS)} [all]")
    ap.add_argument("--eta-tasks", type=int, default=200,
                    help="tasks per ETA lateness run [200]")
    ap.add_argument("--eta-ahead", type=float, default=2.0,
                    help="seconds ahead the (first) task is due [2]")
    ap.add_argument("--eta-spacing-ms", type=float, default=10.0,
                    help="due times' spacing in the 'spaced' ETA run [10]")
    ap.add_argument("--eta-settle", type=float, default=1.0,
                    help="seconds the worker idles before the ETA tasks are queued [1]")
    ap.add_argument("--future-rows", type=int,
                    help="SCHEDULED rows in the 'future' drain [1000000; quick 100000]")
    ap.add_argument("--claim-samples", type=int, default=2000,
                    help="claims timed per database for the claim cost (n=1; n=16 gets "
                         "a quarter; both capped by --tasks) [2000]")
    ap.add_argument("--chord-members", type=int, default=200,
                    help="members of the chord's header [200]")
    ap.add_argument("--chain-length", type=int, default=10,
                    help="tasks in the chain, each one hop [10]")
    ap.add_argument("--chain-runs", type=int,
                    help="timed chains (and as many round trips) per repeat [50; quick 20]")
    ap.add_argument("--wf-sleeps", type=int, default=20,
                    help="durable sleeps timed in the workflows row [20]")
    ap.add_argument("--wf-sleep-s", type=float, default=1.0,
                    help="seconds each of those sleeps [1]")
    ap.add_argument("--wf-sleepers", type=int,
                    help="workflows asleep at once in the workflows row [1000; quick 200]")
    ap.add_argument("--wf-sleepers-s", type=float, default=6.0,
                    help="seconds those sleep [6]")
    ap.add_argument("--no-celery", action="store_true",
                    help="no Celery (and no redis-server) in any row")
    ap.add_argument("--no-dbos", action="store_true",
                    help="no DBOS Transact in any row")
    ap.add_argument("--no-tuned-dbos", action="store_true",
                    help="skip the extra DBOS runs with its polls at 1 ms")
    ap.add_argument("--dbos-tasks", type=int,
                    help="tasks of DBOS's delay() and drain at its defaults (its 1 s poll "
                         "drains 2 a second) [20; quick 10]")
    ap.add_argument("--dbos-fast-tasks", type=int,
                    help="the same with its polls at 1 ms [2000; quick 500]")
    ap.add_argument("--dbos-roundtrips", type=int,
                    help="DBOS's round trips per repeat at its defaults (1-2 s each) "
                         "[20; quick 10]; at 1 ms polls: --roundtrips")
    ap.add_argument("--dbos-chain-runs", type=int,
                    help="DBOS's chains (and round trips) per repeat at its defaults "
                         "[10; quick 5]; at 1 ms polls: --chain-runs")
    ap.add_argument("--dbos-sleepers-s", type=float,
                    help="seconds DBOS's --wf-sleepers workflows sleep (its 1,000 take about "
                         "7 s to enqueue and begin) [20, or --wf-sleepers-s if longer]")
    ap.add_argument("--dbos-wf-runs", type=int,
                    help="DBOS's timed workflows of each kind per repeat in the workflows "
                         "rows at its defaults (a task-step workflow takes 10-20 s) [3]; "
                         "at 1 ms polls: --chain-runs")
    ap.add_argument("--dashboard-rows", type=int,
                    help="tasks in the dashboard's database [1000000; quick 100000]")
    ap.add_argument("--dashboard-requests", type=int, default=20,
                    help="timed GETs per dashboard endpoint, after 2 warm-ups [20]")
    ap.add_argument("--dashboard-lock-hold", type=float, default=2.0,
                    help="seconds another connection holds BEGIN IMMEDIATE while the "
                         "dashboard answers [2]")
    ap.add_argument("--async-tasks", type=int,
                    help="tasks per drain of the async rows [10000; quick 5000]")
    ap.add_argument("--async-sleep", type=float, default=0.1,
                    help="seconds each async-row task sleeps (asyncio.sleep; huey: "
                         "time.sleep under gevent) [0.1]")
    ap.add_argument("--thread-tasks", type=int, default=100,
                    help="blocking tasks of the threads rows [100]")
    ap.add_argument("--thread-sleep", type=float, default=0.5,
                    help="seconds each threads-row task blocks in time.sleep [0.5]")
    ap.add_argument("--threads", type=int, default=50,
                    help="threads of the threads rows' workers (-P threads -c N; huey -k "
                         "thread -w N) [50]")
    ap.add_argument("--rate-backlog", type=int,
                    help=f"rate-limited tasks queued in the ratelimit rows (rate_limit="
                         f"{benchtasks.RATE_LIMIT!r}) [200; quick 100]")
    ap.add_argument("--rate-celery-repeats", type=int, default=1,
                    help="repeats that also run Celery's ratelimit rows (the first N): "
                         "its backlog takes about a minute [1]")
    ap.add_argument("--insert-calls", type=int,
                    help="delay() calls, and as many bare INSERTs, per round of the insert "
                         "rows at NORMAL [20000; quick 5000]")
    ap.add_argument("--insert-calls-full", type=int,
                    help="the same at FULL (one fsync each) [5000; quick 1000]")
    ap.add_argument("--insert-rounds", type=int,
                    help="rounds per repeat of the insert rows, alternating which side goes "
                         "first [5; quick 3]")
    ap.add_argument("--producers", type=int, default=4,
                    help="producer processes calling delay() at once in the producers rows [4]")
    ap.add_argument("--producer-seconds", type=float,
                    help="seconds each phase of the producers rows lasts [3; quick 2]")
    ap.add_argument("--producer-backlog", type=int,
                    help="no-op tasks queued before the producers rows' worker starts "
                         "[500000; quick 300000]")
    ap.add_argument("--launch-runs", type=int,
                    help="worker launches per system per repeat in the launch rows [5; quick 3]")
    ap.add_argument("--memory-tasks", type=int,
                    help="no-op tasks the memory rows' worker drains [1000000; quick 200000]")
    ap.add_argument("--memory-step", type=int,
                    help="tasks between two memory samples [a tenth of --memory-tasks]")
    ap.add_argument("--memory-repeats", type=int, default=1,
                    help="repeats that run the memory rows (the first N): one drain of 1M "
                         "takes about 30 s [1]")
    ap.add_argument("--cache-dir", default=CACHE_DIR,
                    help=f"where the dashboard's database is kept between runs [{CACHE_DIR}]")
    ap.add_argument("--out", help="also write every sample and the summary as JSON here")
    args = ap.parse_args(argv)
    only = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = sorted(set(only) - set(MEASUREMENTS))
    if unknown or not only:
        ap.error(f"--only: unknown measurement(s) {', '.join(unknown) or '(none given)'}; "
                 f"choose from {','.join(MEASUREMENTS)}")
    cfg = {
        "repeat": args.repeat or (1 if args.quick else 3),
        "tasks": args.tasks or (5000 if args.quick else 20000),
        "group_size": 100,
        # delay() under load: the backlog must outlast the calls (litequeue drains about
        # 40 000/s, huey about 2 000/s).
        "load_calls": 1000,
        "load_seconds": 10.0,
        "load_prefill": 200_000,
        "load_prefill_huey": 40_000,
        "roundtrips": args.roundtrips or (100 if args.quick else 200),
        "idle_window": args.idle_window or (5.0 if args.quick else 10.0),
        "idle_settle": args.idle_settle,
        "roundtrip_gap_s": 0.02,
        "only": only,
        "eta_tasks": args.eta_tasks,
        "eta_ahead": args.eta_ahead,
        "eta_spacing_ms": args.eta_spacing_ms,
        "eta_settle": args.eta_settle,
        "future_rows": args.future_rows or (100_000 if args.quick else 1_000_000),
        "claim_samples": args.claim_samples,
        "chord_members": args.chord_members,
        "chain_length": args.chain_length,
        "chain_runs": args.chain_runs or (20 if args.quick else 50),
        "wf_sleeps": args.wf_sleeps, "wf_sleep_s": args.wf_sleep_s,
        "wf_sleepers": args.wf_sleepers or (200 if args.quick else 1000),
        "wf_sleepers_s": args.wf_sleepers_s,
        "dbos_sleepers_s": args.dbos_sleepers_s or max(20.0, args.wf_sleepers_s),
        # DBOS at its defaults polls its queue and get_result() every 1 s: 2 tasks a second
        # at worker_concurrency=2, 1-2 s a round trip, so it gets smaller counts.
        "dbos_tasks": args.dbos_tasks or (10 if args.quick else 20),
        "dbos_fast_tasks": args.dbos_fast_tasks or (500 if args.quick else 2000),
        "dbos_roundtrips": args.dbos_roundtrips or (10 if args.quick else 20),
        "dbos_chain_runs": args.dbos_chain_runs or (5 if args.quick else 10),
        "dbos_wf_runs": args.dbos_wf_runs or 3,
        "dashboard_rows": args.dashboard_rows or (100_000 if args.quick else 1_000_000),
        "dashboard_requests": args.dashboard_requests,
        "dashboard_warmups": 2,
        "dashboard_lock_hold": args.dashboard_lock_hold,
        # Chromium's start-up (two windows launching and loading) still used the CPU
        # 2 s after open(): on 2 cores that cost the drain 15%. 8 s lets it finish.
        "dashboard_drain_settle": 8.0,
        "cache_dir": os.path.abspath(args.cache_dir),
        "async_tasks": args.async_tasks or (5000 if args.quick else 10_000),
        "async_sleep": args.async_sleep,
        "async_concurrency": 1000,         # the second litequeue run (default: 100)
        "huey_greenlets": 100,
        "thread_tasks": args.thread_tasks,
        "thread_sleep": args.thread_sleep,
        "threads": args.threads,
        "thread_settle": 1.0,              # the idle worker's idleness before the tasks
        "rate_backlog": args.rate_backlog or (100 if args.quick else 200),
        "rate_limit": benchtasks.RATE_LIMIT,
        "rate_settle": 1.0,
        "rate_celery_repeats": args.rate_celery_repeats,
        "insert_calls": args.insert_calls or (5000 if args.quick else 20_000),
        "insert_calls_full": args.insert_calls_full or (1000 if args.quick else 5000),
        "insert_rounds": args.insert_rounds or (3 if args.quick else 5),
        "producers": args.producers,
        "producer_seconds": args.producer_seconds or (2.0 if args.quick else 3.0),
        "producer_backlog": args.producer_backlog or (300_000 if args.quick else 500_000),
        "min_backlog": 200,                # as the load row: less left refuses the figure
        "launch_runs": args.launch_runs or (3 if args.quick else 5),
        "memory_tasks": args.memory_tasks or (200_000 if args.quick else 1_000_000),
        "memory_repeats": args.memory_repeats,
        "memory_low": 50_000,              # queue more when fewer wait, up to memory_high
        "memory_high": 100_000,
        "memory_tolerance": 2.0,           # MiB of growth per process still called none
    }
    cfg["memory_step"] = args.memory_step or max(1, cfg["memory_tasks"] // 10)

    lq_normal = LiteQueueSystem("litequeue NORMAL", "NORMAL")
    lq_full = LiteQueueSystem("litequeue FULL", "FULL")
    hu = HueySystem("huey")
    # huey's defaults: consumer -d 0.1 (first poll delay), -b 1.15, -m 10 (max delay);
    # Result.get(blocking=True) polls from 0.05 s with backoff 1.15 up to max_delay=1.0.
    hu_fast = HueySystem("huey 1ms poll", ["-d", "0.001", "-m", "0.001", "-b", "1"],
                         {"backoff": 1.0, "max_delay": 0.001})
    systems = [lq_normal, lq_full, hu]
    if not args.no_tuned_huey:
        systems.append(hu_fast)
    canvas = {"chord", "chain"} & set(only)
    cel = CelerySystem(CELERY) if canvas and not args.no_celery else None
    # The peers' rows of the first table: Celery's delay(), drain and round trip, DBOS's.
    cel_core = CelerySystem(CELERY) if {"drain", "roundtrip"} & set(only) and \
        not args.no_celery else None
    dbos_systems = []           # (key, system, counts)
    if not args.no_dbos and {"drain", "roundtrip", "chain", "workflows", "launch"} & set(only):
        if importlib.util.find_spec("dbos") is None:
            ap.error("the DBOS rows need DBOS Transact: pip install dbos (or --no-dbos)")
        dbos_systems.append(("dbos", DBOSSystem(DBOS_DEF), {
            "tasks": cfg["dbos_tasks"], "roundtrips": cfg["dbos_roundtrips"],
            "chain_runs": cfg["dbos_chain_runs"], "wf_runs": cfg["dbos_wf_runs"],
            "wf_warmups": 1}))
        if not args.no_tuned_dbos:
            dbos_systems.append(("dbos_fast", DBOSSystem(DBOS_FAST, poll=0.001), {
                "tasks": cfg["dbos_fast_tasks"], "roundtrips": cfg["roundtrips"],
                "chain_runs": cfg["chain_runs"], "wf_runs": cfg["chain_runs"],
                "wf_warmups": 3}))
    # The concurrency rows (async, threads, ratelimit).
    lq_async = LiteQueueMore("litequeue -c 2 (async 100)", ["async"], ["-c", "2"])
    lq_async_k = LiteQueueMore(f"litequeue -c 2 --async-concurrency {cfg['async_concurrency']}",
                               ["async"],
                               ["-c", "2", "--async-concurrency", str(cfg["async_concurrency"])])
    hu_green = HueyMore(f"huey -k greenlet -w {cfg['huey_greenlets']}",
                        [os.path.join(BENCH_DIR, "huey_gevent.py")],
                        ["-k", "greenlet", "-w", str(cfg["huey_greenlets"])])
    lq_threads = LiteQueueMore(f"litequeue -P threads -c {cfg['threads']}", ["block"],
                               ["-P", "threads", "-c", str(cfg["threads"])])
    hu_threads = HueyMore(f"huey -k thread -w {cfg['threads']}", ["-m", "huey.bin.huey_consumer"],
                          ["-k", "thread", "-w", str(cfg["threads"])])
    lq_rate = LiteQueueMore("litequeue, 2 supervisors -c 2", ["limited"], ["-c", "2"])
    cel_rate = CelerySystem(CELERY) if "ratelimit" in only and not args.no_celery and \
        args.rate_celery_repeats > 0 else None
    cel_launch = CelerySystem(CELERY) if "launch" in only and not args.no_celery else None
    results = {label: collections.defaultdict(list)
               for label in [s.label for s in systems] + [FUTURE, CELERY, DASH, CONC, ISSUE13,
                                                          DBOS_DEF, DBOS_FAST]}
    if "async" in only:
        import gevent
        results[CONC]["versions"] = {"gevent": gevent.__version__}
    if dbos_systems:
        from importlib.metadata import version
        results[DBOS_DEF]["versions"] = {"dbos": version("dbos"),
                                         "sqlalchemy": version("sqlalchemy")}
    if cel is not None or cel_rate is not None or cel_launch is not None or \
            cel_core is not None:
        import kombu
        import redis as redis_py
        results[CELERY]["versions"] = {
            "celery": (cel or cel_rate or cel_launch or cel_core).canvas.__version__,
            "kombu": kombu.__version__,
            "redis_py": redis_py.__version__, "redis": "?"}
    template = None
    dash_db = None

    tmp = tempfile.mkdtemp(prefix="lqbench-")
    started = time.monotonic()
    log(f"litequeue {litequeue.__version__} (apsw {apsw.apswversion()}, SQLite "
        f"{apsw.sqlite_lib_version()}) vs huey {huey_pkg.__version__} (sqlite3 module, SQLite "
        f"{sqlite3.sqlite_version}); {os.cpu_count()} CPUs; temp dir {tmp}")
    log(f"config: {cfg}")
    load_start = os.getloadavg()
    if load_start[0] > 0.5:
        log(f"warning: load average {load_start[0]:.2f} before starting: other work on this "
            f"machine will skew the figures (2 worker processes need both cores)")
    try:
        for r in range(cfg["repeat"]):
            log(f"repeat {r + 1}/{cfg['repeat']}")
            for s in (lq_normal, lq_full, hu) if "drain" in only else ():
                tag = f"r{r}-{s.label.replace(' ', '-')}"
                measure_delay_and_drain(s, tmp, tag, cfg["tasks"], results[s.label])
                if s is not hu:
                    measure_group(s, tmp, tag, cfg["tasks"], cfg["group_size"],
                                  results[s.label])
            if "drain" in only and cel_core is not None:
                measure_celery_delay_and_drain(cel_core, tmp, f"r{r}-celery", cfg["tasks"],
                                               results[CELERY])
                results[CELERY]["versions"]["redis"] = cel_core.redis_version
            for key, s, counts in dbos_systems if "drain" in only else ():
                measure_delay_and_drain(s, tmp, f"r{r}-{key}", counts["tasks"],
                                        results[s.label])
            for s in systems if "roundtrip" in only else ():
                tag = f"r{r}-{s.label.replace(' ', '-')}"
                measure_roundtrip(s, tmp, tag, cfg["roundtrips"], cfg["roundtrip_gap_s"],
                                  results[s.label])
            if "roundtrip" in only and cel_core is not None:
                measure_celery_roundtrip(cel_core, tmp, f"r{r}-celery", cfg["roundtrips"],
                                         cfg["roundtrip_gap_s"], results[CELERY])
                results[CELERY]["versions"]["redis"] = cel_core.redis_version
            for key, s, counts in dbos_systems if "roundtrip" in only else ():
                measure_roundtrip(s, tmp, f"r{r}-{key}", counts["roundtrips"],
                                  cfg["roundtrip_gap_s"], results[s.label])
            for s in (lq_normal, hu, hu_fast) if "idle" in only else ():
                if s is hu_fast and args.no_tuned_huey:
                    continue
                tag = f"r{r}-{s.label.replace(' ', '-')}"
                measure_idle(s, tmp, tag, cfg["idle_settle"], cfg["idle_window"],
                             results[s.label])
            for s in (lq_normal, hu) if "load" in only else ():
                tag = f"r{r}-{s.label.replace(' ', '-')}"
                prefill = cfg["load_prefill_huey" if s is hu else "load_prefill"]
                measure_delay_under_load(s, tmp, tag, prefill, cfg["load_calls"],
                                         cfg["load_seconds"], results[s.label])
            for mode in ("spaced", "burst") if "eta" in only else ():
                for s in (lq_normal, hu):
                    tag = f"r{r}-{s.label.replace(' ', '-')}-eta-{mode}"
                    measure_eta_retrying(s, tmp, tag, mode, cfg, results[s.label])
            if "future" in only:
                if template is None:
                    template = build_future_template(tmp, cfg["future_rows"])
                # Alternate the order, so drift on the machine does not favour one side.
                for t in ((None, template) if r % 2 == 0 else (template, None)):
                    tag = f"r{r}-future-{'1m' if t else '0'}"
                    measure_future_drain(tmp, tag, t, cfg["tasks"], cfg, results[FUTURE])
            for s in (lq_normal, cel) if canvas else ():
                if s is None:
                    continue
                tag = f"r{r}-{'celery' if s is cel else 'litequeue-NORMAL'}-canvas"
                with canvas_worker(s, tmp, tag) as worker:
                    if "chord" in only:
                        measure_chord(s, worker, cfg, results[s.label])
                    if "chain" in only:
                        measure_chain(s, worker, cfg, results[s.label])
                if s is cel:
                    results[CELERY]["versions"]["redis"] = cel.redis_version
            if "workflows" in only:
                measure_workflows(lq_normal, tmp, f"r{r}-workflows", cfg,
                                  results[lq_normal.label])
            for key, s, counts in dbos_systems if "workflows" in only else ():
                measure_dbos_workflows(s, tmp, f"r{r}-{key}-workflows", cfg, counts,
                                       results[s.label])
            for key, s, counts in dbos_systems if "chain" in only else ():
                # DBOS has no chord; its chain is one workflow of chain_length steps.
                with canvas_worker(s, tmp, f"r{r}-{key}-canvas") as worker:
                    measure_chain(s, worker, cfg, results[s.label], runs=counts["chain_runs"])
            for key, system, seconds in (
                    ("async_lq100", lq_async, cfg["async_sleep"]),
                    ("async_lqk", lq_async_k, cfg["async_sleep"]),
                    ("async_noop", lq_async_k, None),
                    ("async_huey", hu_green, cfg["async_sleep"])) if "async" in only else ():
                measure_async_drain(system, tmp, f"r{r}", key, cfg["async_tasks"], seconds,
                                    results[CONC])
            for key, system in (("threads_lq", lq_threads), ("threads_huey", hu_threads)) \
                    if "threads" in only else ():
                measure_threads(system, tmp, f"r{r}", key, cfg, results[CONC])
            if "ratelimit" in only:
                measure_ratelimit_litequeue(lq_rate, tmp, f"r{r}", cfg, results[CONC])
                if cel_rate is not None and r < cfg["rate_celery_repeats"]:
                    measure_ratelimit_celery(cel_rate, tmp, f"r{r}", cfg, results[CONC])
                    results[CELERY]["versions"]["redis"] = cel_rate.redis_version
            if "insert" in only:
                measure_insert(tmp, f"r{r}", cfg, results[ISSUE13])
            if "producers" in only:
                # Alternate the order, so drift on the machine does not favour one side.
                order = (1, cfg["producers"]) if r % 2 == 0 else (cfg["producers"], 1)
                measure_producers(tmp, f"r{r}", cfg, results[ISSUE13], order)
            if "launch" in only:
                measure_launch(tmp, f"r{r}", cfg, results[ISSUE13], cel_launch,
                               [(key, s) for key, s, _ in dbos_systems])
                if cel_launch is not None:
                    results[CELERY]["versions"]["redis"] = cel_launch.redis_version
            if "memory" in only and r < cfg["memory_repeats"]:
                measure_memory(tmp, f"r{r}", cfg, results[ISSUE13])
            if "dashboard" in only:
                if dash_db is None:
                    dash_db = prepare_dashboard_db(tmp, cfg)
                measure_dashboard(*dash_db, tmp, f"r{r}-dashboard", cfg, results[DASH])
                # Alternate the order, so drift on the machine does not favour one side.
                for browse in ((False, True) if r % 2 == 0 else (True, False)):
                    tag = f"r{r}-dashboard-drain-{'open' if browse else 'none'}"
                    measure_dashboard_drain(tmp, tag, browse, cfg["tasks"], cfg, results[DASH])
    finally:
        with _uninterrupted():
            cleanup_all()
            shutil.rmtree(tmp, ignore_errors=True)

    S = {label: {k: summary(v) if isinstance(v, list) else v for k, v in res.items()}
         for label, res in results.items()}
    tables = []
    if {"drain", "roundtrip", "idle", "load"} & set(only):
        tables.append(build_table(S, cfg))
    if {"eta", "future"} & set(only):
        tables.append(build_sched_table(S, results, cfg))
    if canvas:
        tables.append(build_canvas_table(S, cfg))
    if "workflows" in only:
        tables.append(build_workflow_table(S, cfg))
    if {"async", "threads", "ratelimit"} & set(only):
        tables.append(build_concurrency_table(S, results, cfg))
    if ISSUE13_GROUPS & set(only):
        tables.append(build_issue13_table(S, results, cfg))
    if "dashboard" in only:
        tables.append(build_dashboard_table(S, results, cfg))
    table = "\n\n".join(tables)
    elapsed = time.monotonic() - started
    notes = (
        f"\nMedian over {cfg['repeat']} repeat(s), (min–max) in brackets. Measurements run: "
        f"{','.join(only)}. "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, litequeue "
        f"{litequeue.__version__} on SQLite {apsw.sqlite_lib_version()} (apsw), huey "
        f"{huey_pkg.__version__} on SQLite {sqlite3.sqlite_version} (sqlite3 module). "
        + (f"PRAGMA synchronous seen on the producer connection: litequeue NORMAL="
           f"{results['litequeue NORMAL'].get('pragma_synchronous')}, litequeue FULL="
           f"{results['litequeue FULL'].get('pragma_synchronous')}, huey="
           f"{results['huey'].get('pragma_synchronous')} (WAL everywhere). "
           if "drain" in only else "") +
        (f"Celery {v['celery']} (kombu {v['kombu']}, redis-py {v['redis_py']}) on "
         f"redis-server {v['redis']} (127.0.0.1 TCP, no persistence) as broker and result "
         f"backend. " if (v := results[CELERY].get("versions")) else "") +
        (f"DBOS Transact {v['dbos']} (SQLAlchemy {v['sqlalchemy']}) on its SQLite system "
         f"database (stdlib sqlite3, SQLite {sqlite3.sqlite_version}; one fresh file per "
         f"measurement, shared by the bench's DBOSClient and the worker"
         + (f"; synchronous and journal as its connections leave them: "
            f"{results[DBOS_DEF].get('pragma_synchronous') or results[DBOS_FAST].get('pragma_synchronous')}"
            if results[DBOS_DEF].get('pragma_synchronous') or
            results[DBOS_FAST].get('pragma_synchronous') else "") + "). "
         if (v := results[DBOS_DEF].get("versions")) else "") +
        (f"gevent {v['gevent']} (huey's greenlet consumer). "
         if (v := results[CONC].get("versions")) else "") +
        (f"Dashboard: its database held {cfg['dashboard_rows']:,} tasks (built once, kept in "
         f"{cfg['cache_dir']}); headless Chromium {v['chromium']} driven by selenium "
         f"{v['selenium']}. " if (v := results[DASH].get("versions")) else "") +
        f"Load average "
        f"{load_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end. Run took "
        f"{elapsed / 60:.1f} min.")
    print(table)
    print(notes)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"config": cfg, "python": platform.python_version(),
                       "cpus": os.cpu_count(), "litequeue": litequeue.__version__,
                       "sqlite_apsw": apsw.sqlite_lib_version(), "huey": huey_pkg.__version__,
                       "sqlite_stdlib": sqlite3.sqlite_version, "results": S,
                       "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
                       "table_markdown": table, "elapsed_s": elapsed}, f, indent=2)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(_sig, _on_signal)
    try:
        sys.exit(main())
    finally:
        with _uninterrupted():
            cleanup_all()
