"""Helpers shared by the test files: waiting with a deadline, running commands and
workers as reaped subprocesses, the projects the workers serve, reading the database.

The fixtures that use them are in conftest.py. The task modules the workers import are
real files under tests/tasks/, copied into each test's temporary directory: the tests
take task names and options from them (TASK_NAMES, TASK_OPTIONS).

Nothing here mocks SQLite or multiprocessing. Workers are started as subprocesses in
their own session (``start_new_session=True``), so teardown can kill the supervisor and
every child it spawned with one ``os.killpg``. Nothing waits a fixed time for a state:
``wait_until`` polls a condition against a deadline and fails saying what it waited for.
"""

import ast
import collections
import contextlib
import datetime as dt
import hashlib
import importlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import uuid
from pathlib import Path

import apsw
import msgpack
import pytest
from hypothesis import strategies as st

import litequeue
from litequeue import LiteQueue

LITEQUEUE_PY = Path(__file__).resolve().parent.parent / "litequeue.py"
# The task modules (and the few settings modules) the tests' projects use, as real files.
TASKS_DIR = Path(__file__).resolve().with_name("tasks")


def task_source(name):
    """The text of tests/tasks/NAME, for a test that writes it into a project."""
    return (TASKS_DIR / name).read_text()


def wait_until(predicate, timeout=10.0, message="condition", interval=0.01):
    """Poll predicate() until it returns something truthy, and return that.

    Fails the test after timeout seconds; message (a string or a callable giving one)
    says what was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            pytest.fail(f"timed out after {timeout} s waiting for: {text}")
        time.sleep(interval)


def _declared_tasks(path):
    """{name: max_retries or None} of the functions a task module decorates with
    @app.task, read from its source (nothing is imported)."""
    tasks = {}
    for node in ast.parse(Path(path).read_text()).body:
        for deco in getattr(node, "decorator_list", []):
            call = deco if isinstance(deco, ast.Call) else None
            target = call.func if call else deco
            if ast.unparse(target) == "app.task":
                options = {k.arg: ast.literal_eval(k.value)
                           for k in (call.keywords if call else []) if k.arg == "max_retries"}
                tasks[node.name] = options.get("max_retries")
    return tasks


_TASKS = _declared_tasks(TASKS_DIR / "tasks.py")
# The tasks of tasks.py: the test process's stand-ins (Project.app) carry these names.
TASK_NAMES = tuple(_TASKS)
# Tasks whose options a producer does not know, as one that did not import tasks.py:
# flaky_max1's max_retries is set on the task only.
_OPTIONS_UNKNOWN_TO_PRODUCERS = {"flaky_max1"}
# Options the test process's stand-ins carry, as a producer that imported tasks.py would:
# a task's max_retries is written into its row at delay().
TASK_OPTIONS = {name: {"max_retries": retries} for name, retries in _TASKS.items()
                if retries is not None and name not in _OPTIONS_UNKNOWN_TO_PRODUCERS}


def write_tasks_module(directory, vendored=False):
    """Copy tasks.py (and make marks/) into directory; with vendored, copy litequeue.py
    too."""
    directory = Path(directory)
    (directory / "marks").mkdir(parents=True, exist_ok=True)
    shutil.copy(TASKS_DIR / "tasks.py", directory / "tasks.py")
    if vendored:
        shutil.copy(LITEQUEUE_PY, directory / "litequeue.py")
    return directory / "tasks.py"


def sql(db, query, *params):
    """Rows of one query, on a fresh connection that never creates the file.

    It uses apsw, the SQLite library litequeue uses, and not the stdlib sqlite3 module:
    two copies of SQLite in one process break each other's POSIX locks (closing one's
    file descriptor drops the other's locks), which leaves litequeue's connection in this
    process reading a stale snapshot. Clients using stdlib sqlite3 run in subprocesses.
    """
    if not os.path.exists(db):
        raise FileNotFoundError(db)
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        conn.set_busy_timeout(30_000)
        return [tuple(row) for row in conn.execute(query, params)]
    finally:
        conn.close()


def foreign(db, query, *params):
    """A write by another client (its own connection, as the sqlite3 shell would)."""
    conn = apsw.Connection(str(db))
    try:
        conn.set_busy_timeout(30_000)
        conn.execute(query, params)
    finally:
        conn.close()


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _proc_stat(pid):
    """(state, pgrp) of a process, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[2])


def parent_of(pid):
    """The parent pid of a process, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None


def chaos_kill(supervisors, start_supervisor, rng, group_chance=0.1):
    """One step of a chaos loop over several supervisors: start again the ones that died,
    then SIGKILL a random one's whole process group (group_chance) or one of its children.
    Returns (kind, pids): "group" with the children it had, "child" with the one killed,
    or (None, []) when nothing was killed."""
    for i, s in enumerate(supervisors):
        if s.proc.poll() is not None:
            supervisors[i] = start_supervisor()
    target = rng.choice(supervisors)
    if target.proc.poll() is not None:
        return None, []
    target.id = target.id or target.supervisor_row()
    pids = [c["pid"] for c in target.live_children() if parent_of(c["pid"]) == target.proc.pid]
    if rng.random() < group_chance:
        target.killpg(signal.SIGKILL)
        target.proc.wait()
        return "group", pids
    if not pids:
        return None, []
    pid = rng.choice(pids)
    with _suppress_lookup():
        os.kill(pid, signal.SIGKILL)
    return "child", [pid]


def alive(pid):
    """True if the process exists and is not a zombie (PID 1 here does not reap)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def group_members(pgid):
    """Live (non-zombie) processes of a process group."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat and stat[1] == pgid and stat[0] not in ("Z", "X"):
                pids.append(int(entry))
    return pids


def run(cmd, cwd, timeout=60, env=None):
    """Run a command to completion in its own session; on timeout kill its whole group."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with _suppress_lookup():
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd} did not finish in {timeout} s\nstdout:\n{out}\nstderr:\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def lq(*args, cwd, timeout=60):
    """Run `python litequeue.py ARGS...` (the repository's file)."""
    return run([sys.executable, str(LITEQUEUE_PY), *map(str, args)], cwd=cwd, timeout=timeout)


def lq_here(*args, cwd):
    """`litequeue ARGS...` run in this process by click's test runner, in cwd, for a command
    that starts nothing (no worker, no dashboard): what lq() gives, a CompletedProcess.
    An exception that escapes the CLI is exit 1 with its traceback on stderr, as the
    interpreter would print it; the file's bootstrap as a script is left to lq()."""
    from click.testing import CliRunner
    args = [str(arg) for arg in args]
    with contextlib.chdir(cwd):
        result = CliRunner().invoke(litequeue.cli, args, prog_name="litequeue")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess(["litequeue", *args], result.exit_code,
                                       result.stdout, stderr)


def python(code, cwd, *args, timeout=60, isolated=False):
    """Run `python -c code args...` in cwd; fails the test if it exits non-zero."""
    cmd = [sys.executable] + (["-I"] if isolated else []) + ["-c", code, *map(str, args)]
    done = run(cmd, cwd=cwd, timeout=timeout)
    assert done.returncode == 0, \
        f"{cmd[:3]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


class _suppress_lookup:
    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        return typ is not None and issubclass(typ, ProcessLookupError)


class Project:
    """A temp directory holding tasks.py and jobs.sqlite, as a user's project would."""

    def __init__(self, directory, vendored=False):
        self.dir = Path(directory)
        write_tasks_module(self.dir, vendored=vendored)
        self.db = str(self.dir / "jobs.sqlite")
        self.marks = self.dir / "marks"
        self._app = None

    @property
    def app(self):
        """A producer app in this (the test) process. It does not import tasks.py: its
        tasks are stand-ins named tasks.<name>, so delay() registers module 'tasks' as a
        real producer would. Calling one inline is an error."""
        if self._app is None:
            self._app = LiteQueue(self.db)
            for name in TASK_NAMES:
                def stand_in(*args, **kwargs):
                    raise AssertionError("runs only in a worker")
                stand_in.__module__, stand_in.__qualname__ = "tasks", name
                stand_in.__name__ = name
                self._app.task(stand_in, **TASK_OPTIONS.get(name, {}))
        return self._app

    def delay(self, name, *args, **kwargs):
        return self.app.tasks[f"tasks.{name}"].delay(*args, **kwargs)

    def row(self, task_id):
        cols = ("id", "name", "queue", "priority", "state", "attempt", "retries", "worker",
                "pid", "result", "traceback")
        rows = sql(self.db, f"SELECT {', '.join(cols)} FROM tasks WHERE id = ?", task_id)
        return dict(zip(cols, rows[0])) if rows else None

    def state(self, task_id):
        row = self.row(task_id)
        return row and row["state"]

    def started(self, name):
        """[(attempt, pid), ...] of the runs of block(name) that have begun."""
        runs = []
        for path in self.marks.glob(f"{name}.started.*"):
            attempt, pid = path.name.rsplit(".", 2)[1:]
            runs.append((int(attempt), int(pid)))
        return sorted(runs)

    def go(self, name):
        (self.marks / f"{name}.go").touch()

    def stamps(self, tag):
        """[(unix start time, task id), ...] of the runs of stamp(tag), in order."""
        path = self.marks / f"stamp.{tag}"
        if not path.exists():
            return []
        return [(float(t), task_id) for t, task_id in
                (line.split() for line in path.read_text().splitlines())]

    def ledger(self):
        """Counter of task id -> runs of record(), from every process's ledger."""
        runs = collections.Counter()
        for ledger in self.marks.glob("ledger.*"):
            for line in ledger.read_text().splitlines():
                runs[line.split()[0]] += 1
        return runs

    def runs(self, name):
        """[(retries, attempt, pid, unix time), ...] of the runs a task logged with _runs."""
        path = self.marks / f"runs.{name}"
        if not path.exists():
            return []
        return [(int(retries), int(attempt), int(pid), float(when)) for retries, attempt, pid, when
                in (line.split() for line in path.read_text().splitlines())]

    def marked(self, pattern):
        """Names of the marks matching a glob pattern, sorted."""
        return sorted(path.name for path in self.marks.glob(pattern))

    def write_module(self, name, source):
        """Write NAME.py beside tasks.py (dropping its bytecode: a rewrite within the
        same second with the same size would otherwise import the old code)."""
        (self.dir / f"{name}.py").write_text(textwrap.dedent(source))
        for cached in self.dir.glob(f"__pycache__/{name}.*"):
            cached.unlink()

    def schedules(self):
        """{name: row} of the schedules table."""
        cols = ("name", "task", "module", "schedule", "tz", "payload", "queue", "priority",
                "catch_up", "last_fire", "next_fire")
        rows = sql(self.db, f"SELECT {', '.join(cols)} FROM schedules")
        return {row[0]: dict(zip(cols, row)) for row in rows}

    def abort_all(self):
        (self.marks / "ABORT").touch()


class Worker:
    """One worker supervisor subprocess (the leader of its own process group)."""

    def __init__(self, proc, log, db, concurrency, cmd):
        self.proc = proc
        self.pid = self.pgid = proc.pid
        self.log = log
        self.db = db
        self.concurrency = concurrency
        self.cmd = cmd
        self.id = None

    def log_text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _fail(self, text):
        pytest.fail(f"{text}\ncommand: {self.cmd}\nworker log:\n{self.log_text()}")

    def supervisor_row(self):
        try:
            rows = sql(self.db, "SELECT id FROM workers WHERE pid = ? AND parent IS NULL",
                       self.pid)
        except (FileNotFoundError, apsw.SQLError):
            return None
        return rows[0][0] if rows else None

    def children(self):
        """[{'id', 'pid'}] of this supervisor's children registered in the workers table."""
        if self.id is None:
            return []
        rows = sql(self.db, "SELECT id, pid FROM workers WHERE parent = ? ORDER BY pid", self.id)
        return [{"id": r[0], "pid": r[1]} for r in rows]

    def live_children(self):
        return [c for c in self.children() if alive(c["pid"])]

    def wait_ready(self, timeout=30):
        """Wait until the supervisor and all its children are registered."""
        def ready():
            if self.proc.poll() is not None:
                self._fail(f"worker exited with {self.proc.returncode} while starting")
            self.id = self.id or self.supervisor_row()
            return self.id and len(self.live_children()) == self.concurrency
        wait_until(ready, timeout, lambda: f"worker ready with {self.concurrency} children\n"
                   f"log:\n{self.log_text()}")
        return self

    def wait(self, timeout):
        """The exit code, once the supervisor exits within timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._fail(f"worker did not exit within {timeout} s")

    def signal(self, sig):
        os.kill(self.pid, sig)

    def killpg(self, sig):
        with _suppress_lookup():
            os.killpg(self.pgid, sig)


class Workers:
    """Starts worker supervisors and always reaps them and every process they spawned."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.started = []
        self.projects = []

    def start(self, project, *extra, concurrency=1, app=("tasks",), loglevel="INFO",
              cmd=None, ready=True, settings=None):
        """Start `python litequeue.py worker DB -A tasks -c N` in the project's directory;
        cmd replaces everything before the options. settings go to tasks.py's LiteQueue.
        Waits until it is ready unless told not to."""
        if cmd is None:
            cmd = [sys.executable, str(LITEQUEUE_PY), "worker", project.db]
            for module in app:
                cmd += ["-A", module]
            cmd += ["-c", str(concurrency), "-l", loglevel]
        cmd = [*cmd, *map(str, extra)]
        log = self.tmp_path / f"worker-{len(self.started)}.log"
        env = dict(os.environ, LQ_TEST_SETTINGS=json.dumps(settings or {}))
        with open(log, "wb") as err:
            proc = subprocess.Popen(cmd, cwd=project.dir, stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env)
        worker = Worker(proc, log, project.db, concurrency, cmd)
        self.started.append(worker)
        if project not in self.projects:
            self.projects.append(project)
        if ready:
            worker.wait_ready()
        return worker

    def reap(self):
        for project in self.projects:
            with contextlib.suppress(OSError):     # its filesystem may be gone or full
                project.abort_all()  # blocked tasks end, so a warm stop is quick
        for worker in self.started:
            if worker.proc.poll() is None:
                worker.killpg(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for worker in self.started:
            try:
                worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for worker in self.started:
            worker.killpg(signal.SIGKILL)  # children left behind, orphans included
            worker.proc.wait()
        for worker in self.started:
            wait_until(lambda: not group_members(worker.pgid), 10,
                       f"process group {worker.pgid} to be gone")
        for worker in self.started:
            print(f"----- {worker.log.name}: {worker.cmd}, exit {worker.proc.returncode}")
            print(worker.log_text())


@contextlib.contextmanager
def closed_at_the_end(make):
    """A fixture's factory: each call makes one (make(*args)), and every one made is
    closed when the block ends, the last first."""
    made = []

    def factory(*args, **kwargs):
        made.append(make(*args, **kwargs))
        return made[-1]
    try:
        yield factory
    finally:
        while made:
            made.pop().close()


class InProcess:
    """A project's worker run in this process: its task modules imported here (from the
    project's directory, under their own names) and a worker child's own steps, with no
    process started and no signal handler installed. work() drives them until no row is
    ready and none runs (_Child.work_until_empty, as huey's work_on_tasks); start() runs
    the child's loop on a thread until stop() (as celery.contrib.testing's start_worker),
    for calling programs that wait on results; supervisor() opens a supervisor as a
    worker's start does, for its scheduler's step(now) on a clock the test chooses. For
    what a task does and how its row ends: kills, time limits and several processes
    need a real worker."""

    def __init__(self, project, modules=("tasks",), settings=None):
        self.project, self.modules = project, list(modules)
        self.saved_modules = {m: sys.modules.pop(m) for m in self.modules if m in sys.modules}
        self.saved_path = list(sys.path)
        self.saved_env = os.environ.get("LQ_TEST_SETTINGS")
        self.thread = None
        self.supervisors = []          # opened by supervisor(), closed by close()
        # Signal handlers the modules connect as they are imported go when this closes, as
        # they go with a worker's process: else they would see every later task here.
        self.saved_receivers = {sig: list(sig.receivers) for sig in _signals()}
        os.environ["LQ_TEST_SETTINGS"] = json.dumps(settings or {})
        sys.path.insert(0, str(project.dir))
        try:
            self.loaded = [importlib.import_module(m) for m in self.modules]
            self._register()
        except BaseException:
            self.close()
            raise

    def _register(self):
        """As a supervisor does when it starts: the file exists and names the tasks served,
        with their rate limits."""
        now = time.time()
        litequeue._collect_apps(self.project.db)      # finalized, as a worker loads them
        storage = litequeue._Storage(self.project.db)
        try:
            storage.upsert_registry([task._registry_row(now) for m in self.loaded
                                     for task in m.app.tasks.values()])
        finally:
            storage.close()

    def child(self, queues=("default",)):
        """A worker child of the project's file, as a supervisor would spec it."""
        return litequeue._Child(litequeue._ChildSpec(
            db=self.project.db, worker_id=litequeue._new_worker_id(), parent_id=None,
            queues=list(queues), modules=self.modules, loglevel="INFO",
            settings=dict(self.loaded[0].app.conf), autoimport=False, poll_interval=0.05,
            cwd=str(self.project.dir), hostname="in-process", time_limit=None,
            soft_time_limit=None, max_tasks=None, max_memory=None))

    @contextlib.contextmanager
    def _real_tasks(self):
        """Producer apps of the test (the project's stand-ins, say) name the same tasks on
        the same file: hidden while the child loads its code, so that it finds the real
        ones of the loaded modules."""
        real = {id(getattr(m, "app", None)) for m in self.loaded}
        path = os.path.realpath(self.project.db)
        hidden = [app for app in list(litequeue._apps)
                  if id(app) not in real and os.path.realpath(app.path) == path]
        for app in hidden:
            litequeue._apps.discard(app)
        try:
            yield
        finally:
            for app in hidden:
                litequeue._apps.add(app)

    def supervisor(self, queues=None):
        """The project's worker supervisor opened in this process as `litequeue worker DB
        -A MODULES` opens it at its start (_Supervisor._open: the database, its lock file,
        bells and workers row, the served task names and periodic definitions synced, and
        the scheduler), with no child started, no signal handler installed and no loop:
        the test drives sup.scheduler.step(now) on a clock it chooses (then work() runs
        what it queued). The code is the loaded modules' (auto-import off, as child()).
        Closed by close(), as the supervisor's run() closes it; close_supervisor() stops
        one earlier."""
        db = self.project.db
        with self._real_tasks():
            tasks, conf, periodic, autoimport = litequeue._load_worker_code(
                db, str(self.project.dir), self.modules, False, None)
        sup = litequeue._configured_supervisor(db, conf, tasks, periodic, autoimport,
                                               modules=self.modules, loglevel="INFO",
                                               concurrency=1, queues=queues)
        sup._open()
        self.supervisors.append(sup)
        return sup

    def close_supervisor(self, sup):
        """Close what supervisor() opened, as the end of its run() does (its wake-up
        socket, its workers row, lock file, bells and database)."""
        self.supervisors.remove(sup)
        sup.close()

    def work(self, queues=("default",)):
        """Run every ready row of the queues, and what their ends queue. Returns how many
        rows ran."""
        child = self.child(queues)
        # A soft time limit is a SIGALRM, which the child's handler turns into the task's
        # exception: installed for the run, as the child's run() would.
        previous = signal.signal(signal.SIGALRM, child._on_soft_limit)
        try:
            with self._real_tasks():
                return child.work_until_empty()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def work_until(self, predicate, timeout=10.0, message="condition", queues=("default",)):
        """work() again until predicate() holds (rows with an eta wait their turn)."""
        wait_until(lambda: self.work(queues) is not None and predicate(), timeout, message)

    def start(self, queues=("default",)):
        """Run the child's loop on a thread until stop() (or the fixture's teardown)."""
        child = self.child(queues)
        with self._real_tasks():
            child._open()
        child.running = True
        self.thread = _ChildThread(child)
        return self

    def client(self, code):
        """Run a calling program here, with its module's names; it prints one JSON value."""
        out = io.StringIO()
        names = dict(vars(self.loaded[0]))
        here = os.getcwd()
        os.chdir(self.project.dir)          # as the calling program would run
        try:
            return self._client(code, names, out)
        finally:
            os.chdir(here)

    @staticmethod
    def _client(code, names, out):
        exec("import json, time, uuid\n"
             "from litequeue import chain, chord, group, signature, ChordError\n", names)
        with contextlib.redirect_stdout(out):
            exec(textwrap.dedent(code), names)
        return json.loads(out.getvalue())

    def alive(self):
        """Whether the loop start() began still runs."""
        return self.thread is not None and self.thread.thread.is_alive()

    def stop(self):
        """Stop the loop start() began, as a warm shutdown (the running task finishes)."""
        if self.thread is not None:
            thread, self.thread = self.thread, None
            thread.stop()

    def close(self):
        """At the test's end: a block() still running ends (marks/ABORT, as the workers
        fixture's reap does) so that the loop can stop; then the modules go."""
        try:
            if self.thread is not None:
                with contextlib.suppress(OSError):
                    self.project.abort_all()
            try:
                self.stop()
            finally:
                while self.supervisors:
                    self.close_supervisor(self.supervisors[-1])
        finally:
            for name in self.modules:
                sys.modules.pop(name, None)
            sys.modules.update(self.saved_modules)
            sys.path[:] = self.saved_path
            for sig, receivers in self.saved_receivers.items():
                sig.receivers = receivers
                sig._count()
            if self.saved_env is None:
                os.environ.pop("LQ_TEST_SETTINGS", None)
            else:
                os.environ["LQ_TEST_SETTINGS"] = self.saved_env


def _signals():
    return [sig for sig in vars(litequeue.signals).values() if isinstance(sig, litequeue.Signal)]


class _ChildThread:
    """A worker child's loop on a daemon thread; stop() asks it to stop as SIGTERM would,
    wakes it, joins it and closes the child. An error of the loop fails the test."""

    def __init__(self, child):
        self.child, self.error = child, None
        self.thread = threading.Thread(target=self._loop, name="in-process worker",
                                       daemon=True)
        self.thread.start()

    def _loop(self):
        try:
            self.child._loop()
        except BaseException as exc:      # noqa: BLE001 (re-raised by stop())
            self.error = exc

    def stop(self):
        self.child.stopping = True
        os.write(self.child._sig_w, b"\0")
        self.thread.join(30)
        assert not self.thread.is_alive(), "the in-process worker did not stop in 30 s"
        self.child.close()
        if self.error is not None:
            raise self.error


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def insert_raw(db, rows):
    """INSERT (id, name, payload) rows directly, as a foreign writer would: nothing
    rings the wake-up channel. Returns the ids."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        conn.set_busy_timeout(30_000)
        ids = []
        with conn:
            for name, payload in rows:
                task_id = str(uuid.uuid4())
                conn.execute("INSERT INTO tasks (id, name, payload) VALUES (?, ?, ?)",
                             (task_id, name, payload))
                ids.append(task_id)
        return ids
    finally:
        conn.close()


def msgpack_values(max_leaves=12):
    """Every kind of value litequeue documents as supported, nested. Tuples come back as
    lists. Dict keys are scalars (tuple keys: see test_tuple_dict_keys_round_trip).
    Datetimes stay inside years 2..9998, so that converting to UTC cannot leave the range
    of datetime (see test_datetimes_near_the_ends_of_the_range)."""
    scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
               | st.floats(allow_nan=True, allow_infinity=True) | st.text() | st.binary()
               | st.datetimes(min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 1, 1),
                              timezones=st.timezones()))
    keys = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats()
            | st.text() | st.binary())
    return st.recursive(
        scalars,
        lambda children: (st.lists(children, max_size=4) | st.tuples(children, children)
                          | st.dictionaries(keys, children, max_size=4)),
        max_leaves=max_leaves)


def same(sent, got):
    """True if got is what litequeue promises for sent: exactly equal, with the same types
    (True is not 1, 1 is not 1.0, -0.0 is not 0.0), nan matching nan, tuples as lists and
    datetimes as the same instant in UTC."""
    if isinstance(sent, tuple):
        sent = list(sent)
    if isinstance(sent, list):
        return type(got) is list and len(got) == len(sent) and \
            all(same(a, b) for a, b in zip(sent, got))
    if isinstance(sent, dict):
        return type(got) is dict and len(got) == len(sent) and \
            all(same(k, k2) and same(v, v2)
                for (k, v), (k2, v2) in zip(sent.items(), got.items()))
    if isinstance(sent, float):
        if type(got) is not float:
            return False
        if math.isnan(sent):
            return math.isnan(got)
        return got == sent and math.copysign(1, got) == math.copysign(1, sent)
    if isinstance(sent, dt.datetime):
        # Compare instants: under PEP 495, == between zones is always False for a wall
        # time in a fold or gap (1919-11-24 00:00 in Africa/Accra is one).
        return (type(got) is dt.datetime and got.utcoffset() == dt.timedelta(0)
                and got.timestamp() == sent.timestamp())
    return type(got) is type(sent) and got == sent


UTC = dt.timezone.utc


def utc_ts(*fields):
    return dt.datetime(*fields, tzinfo=UTC).timestamp()


def fire_time(task_id):
    """The fire time (unix seconds) in a periodic task's id, 'name@<UTC ISO time>'."""
    return dt.datetime.fromisoformat(task_id.rpartition("@")[2]).timestamp()


def fires_of(db, schedule):
    """{task id: (state, created_at)} of a schedule's fires."""
    rows = sql(db, "SELECT id, state, created_at FROM tasks WHERE id LIKE ?", f"{schedule}@%")
    return {task_id: (state, created) for task_id, state, created in rows}


def fill_disk(directory):
    """Fill the filesystem of directory with one file; returns its path."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def stand_in_app(db):
    """A producer app in this process with a stand-in for tasks.add (as Project.app)."""
    app = litequeue.LiteQueue(db)

    def add(x, y):
        raise AssertionError("runs only in a worker")
    add.__module__, add.__qualname__ = "tasks", "add"
    app.task(add)
    return app


def producer(code, cwd):
    """python() with this litequeue.py first on sys.path (the one under test, not
    whichever one is installed)."""
    return python(f"import sys; sys.path.insert(0, {str(LITEQUEUE_PY.parent)!r})\n" + code, cwd)


def create_db(project):
    """Create the project's database as a user would: a producer (another process, so
    nothing about the side directory is cached in this one) queues a task."""
    producer("from tasks import add; add.delay(0, 0)", project.dir)


def files_in(directory):
    """{relative path: bytes} of the regular files under a directory."""
    directory = Path(directory)
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and not p.is_symlink()}


def make_victim(directory, names=("a.txt", "b.lock", "poetry.lock")):
    """A directory of regular files someone would hate to lose. Returns {name: bytes}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_bytes(f"precious {name}\n".encode())
    return files_in(directory)


def assert_canary(project, w, timeout=20):
    """A task queued now succeeds, and the worker and all its children are alive."""
    canary = project.delay("add", 40, 2)
    assert canary.get(timeout=timeout) == 42
    assert w.proc.poll() is None, w.log_text()
    assert len(w.live_children()) == w.concurrency, w.log_text()


def log_lines(text):
    return [line for line in text.strip().splitlines() if line.strip()]


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")


SCHEDULE_COLUMNS = ("name", "task", "module", "schedule", "tz", "payload", "queue", "priority",
                    "catch_up", "last_fire", "next_fire", "updated_at", "fires")


def insert_schedule(db, name, **overrides):
    now = time.time()
    row = {"name": name, "task": "tasks.add", "module": "elsewhere", "schedule": "every:60.0",
           "tz": "UTC", "payload": pack({"args": [1, 1]}), "queue": "default", "priority": 0,
           "catch_up": "once", "last_fire": None, "next_fire": now - 1, "updated_at": now,
           "fires": 0}
    row.update(overrides)
    sql(db, f"INSERT INTO schedules ({', '.join(SCHEDULE_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(SCHEDULE_COLUMNS))})",
        *(row[c] for c in SCHEDULE_COLUMNS))


def insert_finished(db, state, result=None, errors=None):
    task_id = str(uuid.uuid4())
    sql(db, "INSERT INTO tasks (id, name, payload, state, result, errors, attempt, "
            "finished_at) VALUES (?, 'tasks.add', ?, ?, ?, ?, 1, ?)",
        task_id, pack({"args": [1, 2]}), state, result, errors, time.time())
    return task_id


class Folder(Project):
    """A user's folder holding only the files a test writes (no test tasks.py), usable
    with the workers fixture like a Project: its database is jobs.sqlite in it."""

    def __init__(self, directory, files=None):
        self.dir = Path(directory)
        self.marks = self.dir / "marks"
        self.marks.mkdir(parents=True, exist_ok=True)
        self.db = str(self.dir / "jobs.sqlite")
        self._app = None
        for name, source in (files or {}).items():
            self.write_module(name, source)


def worker_cmd(db, *args, env=None):
    """`python litequeue.py worker DB ARGS...`, through env(1) when env is given (env
    execs python, so the supervisor keeps the pid the workers fixture started)."""
    prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
    return [*prefix, sys.executable, str(LITEQUEUE_PY), "worker", str(db), *map(str, args)]


def tables_rows(db, table):
    """Rows of a table, or [] if the file or the table does not exist."""
    if not os.path.exists(db):
        return []
    try:
        return sql(db, f"SELECT * FROM {table}")
    except apsw.Error:
        return []


PLAIN_TASKS = task_source("plain/tasks.py")


def assert_one_line_error(done, code=1, contains=""):
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert contains in lines[0], lines[0]


class CanvasProject(Project):
    """A project whose worker runs canvas_tasks.py; calling programs run as separate
    producer processes (python -c), as a user's would."""

    MODULE = "canvas_tasks"     # tests/tasks/MODULE.py, copied beside tasks.py

    def __init__(self, directory):
        super().__init__(directory)
        shutil.copy(TASKS_DIR / f"{self.MODULE}.py", self.dir / f"{self.MODULE}.py")

    def client(self, code, timeout=60):
        """Run a calling program in the project; it prints one JSON value."""
        prelude = f"import json, time, uuid\nfrom {self.MODULE} import *\n" \
                  "from litequeue import chain, chord, group, signature, ChordError\n"
        return json.loads(python(prelude + textwrap.dedent(code), self.dir, timeout=timeout))

    def logged(self, name):
        path = self.marks / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def count(self, where="1"):
        return sql(self.db, f"SELECT count(*) FROM tasks WHERE {where}")[0][0]


def sql_write(db, *statements):
    """Run statements in one transaction on a fresh connection (a foreign writer)."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        conn.set_busy_timeout(30_000)
        with conn:
            for statement in statements:
                conn.execute(statement)
    finally:
        conn.close()


class Dashboard:
    """A `litequeue dashboard` subprocess on a free port; always stopped by its fixture."""

    def __init__(self, project, *extra, env=None):
        self.log = project.dir / "dashboard.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(LITEQUEUE_PY), "dashboard", project.db, "--port", "0",
                 *map(str, extra)], cwd=project.dir, stdin=subprocess.DEVNULL, stdout=err,
                stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            found = wait_until(lambda: self.proc.poll() is None and re.search(
                r"on (http://\S+/).*\n.*(http://\S+/#token=\S+)", self.log.read_text()), 20,
                lambda: f"the dashboard to listen; log: {self.log.read_text()}")
        except BaseException:          # the fixture never gets this object: stop it here
            self.stop()
            raise
        self.url, self.login_url = found.group(1), found.group(2)
        # What a browser opens: the dashboard's own host name (RANDOM.localhost on loopback).
        self.site_url = self.login_url.partition("#")[0]
        self.host = self.url.split("/")[2]
        self.port = int(self.host.rpartition(":")[2])
        # The token as a script reads it: from the 0600 file beside the database.
        self.token_file = Path(project.db + "-lq", f"dashboard-{self.port}.token")
        self.token = self.token_file.read_text().strip()

    def request(self, path, method="GET", body=None, headers=None, auth=True):
        """(status, headers, body text) of one request, with the token unless auth is
        False or headers carry an Authorization; never raises for a status."""
        import http.client
        conn = http.client.HTTPConnection(self.host, timeout=30)
        try:
            data = None if body is None else json.dumps(body).encode()
            bearer = {"Authorization": f"Bearer {self.token}"} if auth else {}
            conn.request(method, path, body=data, headers={
                "Host": self.host, **({"Content-Type": "application/json"} if data else {}),
                **bearer, **(headers or {})})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode()
        finally:
            conn.close()

    def json(self, path, method="GET", body=None, headers=None, status=200):
        code, _, text = self.request(path, method, body, headers)
        assert code == status, (path, code, text)
        return json.loads(text)

    def stop(self):
        if self.proc.poll() is None:
            with _suppress_lookup():
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with _suppress_lookup():
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def page_click(browser, by, selector):
    """Click an element of a page that redraws itself (the dashboard, every second): find
    it again if it was replaced between the find and the click."""
    from selenium.common.exceptions import StaleElementReferenceException
    for _ in range(50):
        try:
            browser.find_element(by, selector).click()
            return
        except StaleElementReferenceException:
            continue
    pytest.fail(f"could not click {selector}")


def _chromium(tmp_path):
    """A real headless Chromium (Debian's), driven over WebDriver by chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    for binary in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        assert os.path.exists(binary), f"{binary} is missing: .ci/run installs chromium " \
                                       "and chromium-driver"
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1300,1000",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


class AioProject(CanvasProject):
    """A project whose worker runs aio_tasks.py (coroutines, threads, rate limits)."""

    MODULE = "aio_tasks"

    def starts(self, name):
        """The start lines a task logged to marks/NAME: [fields..., pid, time]."""
        return [line for line in self.logged(name) if line[0] == "start"]


def most_in_a_second(times):
    """The largest number of the given instants in any half-open window of 1 s."""
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t < start + 1.0)
                for i, start in enumerate(times)), default=0)


def start_aio_worker(workers, aio, *extra, concurrency=1, **kwargs):
    return workers.start(aio, *extra, concurrency=concurrency, app=("aio_tasks",), **kwargs)
