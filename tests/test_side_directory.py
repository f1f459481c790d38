"""The side directory (DB-lq/): wake-up sockets, lock files, its privacy and symlink
safety, and the hygiene of stale sockets and descriptors.
"""

import concurrent.futures
import contextlib
import gc
import hashlib
import os
import secrets
import shutil
import socket
import stat
import statistics
import time
from pathlib import Path

import pytest

import litequeue
from litequeue import PENDING, LiteQueue

from .helpers import (
    Project, create_db, files_in, log_lines, make_victim, need_root, python, sql,
    stand_in_app, wait_until,
)

pytestmark = pytest.mark.timeout(120)


#
# A negative check ("X never happens") waits for a positive event that proves the system
# has moved past the point where X would have happened: a canary task queued after the
# bad row has succeeded, or a task of a dead worker has been rescued, which proves a
# rescue pass ran.

NOBODY = 65534          # uid (and gid) of "another user"


@contextlib.contextmanager
def spy_socket(directory, name="spy"):
    """A datagram socket bound in a wake-up directory, as a sleeper would be: every
    ring of that directory leaves a datagram in it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.path.join(directory, name)
    try:
        sock.bind(path)
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)


def rang(sock):
    """True if anything rang the spy (delay() rings before it returns)."""
    try:
        sock.recv(64)
        return True
    except BlockingIOError:
        return False


def old_temp_side_dir(db):
    """Where the released code put the sockets of a deep database path."""
    real = os.path.realpath(db)
    digest = hashlib.blake2b(real.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return os.path.join(os.environ.get("TMPDIR", "/tmp"), "litequeue-" + digest)


def private_dir(path):
    """mkdir with mode 0o700 (what litequeue itself creates), whatever the umask."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


@pytest.fixture
def short_tmp(tmp_path):
    """tmp_path seen through a short alias (a symlink /tmp/lqh-XXXXXXXX), so that the
    socket paths beside a database in it fit in sun_path's 107 bytes. The released code
    put the sockets of deeper databases in the temp dir instead, so without the alias it
    would never touch the side directories these tests booby-trap."""
    alias = Path(os.environ.get("TMPDIR", "/tmp")) / f"lqh-{secrets.token_hex(4)}"
    alias.symlink_to(tmp_path)
    try:
        yield alias
    finally:
        alias.unlink()


@pytest.fixture
def near_project(short_tmp):
    """A Project (tasks.py, jobs.sqlite) under the short alias."""
    return Project(short_tmp / "proj")


class TestSideDirectory:

    @pytest.mark.parametrize("link", ["work", "side"])
    def test_delay_does_not_follow_a_symlinked_side_directory(self, short_tmp, link):
        tmp_path = short_tmp
        db = tmp_path / "x.sqlite"
        victim = tmp_path / "victim"
        if link == "work":
            before = make_victim(victim)
            private_dir(tmp_path / "x.sqlite-lq")
            (tmp_path / "x.sqlite-lq" / "work").symlink_to(victim)
        else:
            before = make_victim(victim / "work")
            (tmp_path / "x.sqlite-lq").symlink_to(victim)
        before = files_in(victim)
        app = stand_in_app(db)
        r = app.tasks["tasks.add"].delay(1, 2)
        assert files_in(victim) == before
        # The task was queued all the same.
        assert sql(db, "SELECT state FROM tasks WHERE id = ?", r.id) == [(PENDING,)]

    def test_deep_path_never_rings_into_the_old_temp_directory(self, tmp_path):
        proj = Project(tmp_path / ("d" * 100))
        assert len(proj.db + "-lq/work/") > 107
        old = old_temp_side_dir(proj.db)
        assert not os.path.lexists(old), f"{old} exists before the test"
        victim = tmp_path / "victim"
        try:
            before = make_victim(victim)
            os.makedirs(old)
            os.symlink(victim, os.path.join(old, "work"))
            r = proj.delay("add", 1, 2)
            assert files_in(victim) == before
            assert sql(proj.db, "SELECT state FROM tasks WHERE id = ?", r.id) == [(PENDING,)]
        finally:
            shutil.rmtree(old, ignore_errors=True)

    def test_deep_path_worker_keeps_its_sockets_beside_the_database(self, tmp_path, here):
        proj = Project(tmp_path / ("d" * 100))
        old = old_temp_side_dir(proj.db)
        assert not os.path.lexists(old), f"{old} exists before the test"
        w = here(proj)
        try:
            w.start()                   # a worker child's loop on a thread: no process
            assert proj.delay("add", 2, 2).get(timeout=10) == 4
            work = proj.db + "-lq/work"
            assert os.path.isdir(work) and os.listdir(work), \
                f"no worker socket in {work}: {os.listdir(proj.db + '-lq') if os.path.isdir(proj.db + '-lq') else 'no side dir'}"
            assert not os.path.lexists(old), f"the worker used {old}"
        finally:
            w.stop()
            shutil.rmtree(old, ignore_errors=True)

    def test_regular_files_in_the_socket_directories_are_never_deleted(self, near_project, here):
        project = near_project
        side = private_dir(project.db + "-lq")
        work, done = private_dir(side / "work"), private_dir(side / "done")
        task_id = "decoy-task"
        # Names a ring of this task's waiters would match (the waiter prefix is a hash of
        # the task id), and names no prefix would.
        prefix = hashlib.blake2b(task_id.encode(), digest_size=5).hexdigest()
        for d in (work, done):
            for name in (f"{prefix}.1.2.3", "notes.txt", "zzz"):
                (d / name).write_text(f"not a socket: {name}\n")
        decoys = lambda: (files_in(work), files_in(done))
        before = decoys()
        add = project.app.tasks["tasks.add"]
        add.delay(1, 1)                                  # rings work/ with no worker
        assert decoys() == before
        here(project).start()                  # a worker child's loop on a thread
        assert add.apply_async((2, 3), task_id=task_id).get(timeout=10) == 5   # rings done/
        assert [add.delay(i, i).get(timeout=10) for i in range(5)] == [0, 2, 4, 6, 8]
        # The supervisor's sweep of sockets left by killed processes, as at its start.
        litequeue._sweep_stale_sockets(litequeue._SideDir(project.db))
        assert decoys() == before

    def test_every_get_of_a_task_is_woken_by_its_end_not_by_polling(self, near_project, here,
                                                                     monkeypatch):
        """Two get()s of one task and one of another, each a socket in done/: every one
        wakes when its task ends. With the first poll ten minutes away, none could wake
        any other way within the test's deadline."""
        project = near_project
        here(project).start()
        assert project.delay("add", 1, 1).get(timeout=10) == 2
        monkeypatch.setattr(litequeue, "_POLL_MIN", 600.0)
        done = private_dir(Path(project.db + "-lq") / "done")
        block = project.app.tasks["tasks.block"]
        one, other = block.delay("one"), block.delay("other")
        waiters = []
        for result in (one, one, other):
            pool = concurrent.futures.ThreadPoolExecutor(1)
            waiters.append((pool, pool.submit(result.get, timeout=60)))
        wait_until(lambda: len(os.listdir(done)) == 3, 10,
                   lambda: f"three waiters bound (done/ holds {os.listdir(done)})")
        project.go("one")
        project.go("other")
        try:
            assert [future.result(timeout=15) for _, future in waiters] == \
                ["one", "one", "other"]
        finally:
            project.abort_all()
            for pool, _ in waiters:
                pool.shutdown(wait=True)
        wait_until(lambda: not os.listdir(done), 10, "every waiter's socket removed")

    def test_side_directory_and_its_subdirectories_are_private(self, near_project, here):
        project = near_project
        w = here(project)
        litequeue._SideDir(project.db).check()  # as `litequeue worker` does at its start
        w.start()                               # a worker child's loop on a thread
        assert project.delay("add", 2, 2).get(timeout=10) == 4
        side = Path(project.db + "-lq")
        dirs = [side] + [p for p in side.iterdir() if p.is_dir()]
        assert {p.name for p in dirs} >= {side.name, "work", "done", "locks"}, dirs
        modes = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in dirs}
        assert set(modes.values()) == {"0o700"}, modes

    @pytest.mark.worker
    @pytest.mark.parametrize("unsafe", ["foreign_owner", "world_writable", "group_writable",
                                        "symlink", "regular_file", "symlinked_work"])
    def test_unsafe_side_directory_is_refused(self, near_project, workers, tmp_path, unsafe):
        project = near_project
        if unsafe == "foreign_owner":
            need_root()
        create_db(project)
        side = Path(project.db + "-lq")
        shutil.rmtree(side, ignore_errors=True)
        spy_dir = None
        if unsafe in ("foreign_owner", "world_writable", "group_writable"):
            spy_dir = private_dir(side / "work")
            if unsafe == "foreign_owner":
                os.chown(side, NOBODY, NOBODY)
            else:
                side.chmod(0o777 if unsafe == "world_writable" else 0o770)
        elif unsafe == "symlink":
            target = private_dir(tmp_path / "elsewhere")
            spy_dir = private_dir(target / "work")
            side.symlink_to(target)
        elif unsafe == "regular_file":
            side.write_text("not a directory\n")
        else:
            private_dir(side)
            spy_dir = private_dir(tmp_path / "elsewhere-work")
            (side / "work").symlink_to(spy_dir)
        with spy_socket(spy_dir) if spy_dir else contextlib.nullcontext() as spy:
            # A producer still queues: the row is committed, without a ring.
            r = project.delay("add", 1, 2)
            assert project.state(r.id) == PENDING
            if spy is not None:
                assert not rang(spy), "delay() rang through an unsafe side directory"
        # The worker refuses to run, with one line naming the side directory.
        w = workers.start(project, concurrency=1, ready=False)
        code = w.wait(30)
        assert code != 0, w.log_text()
        text = w.log_text()
        assert "Traceback" not in text, text
        lines = log_lines(text)
        assert len(lines) == 1 and "-lq" in lines[0], text
        assert project.state(r.id) == PENDING

    def test_producer_with_a_refused_side_directory_still_gets_results(self, near_project, here):
        """A worker is running; then the side directory turns foreign. A new producer
        neither rings nor binds there, yet its task runs (the worker's fallback poll) and
        get() sees the result (its own fallback poll). (Passes on the released code too:
        it guards the refusal against breaking producers.) The worker child's loop runs on
        a thread; the new producer is a new app (a process's apps share no side directory
        state)."""
        project = near_project
        need_root()
        here(project).start()
        assert project.delay("add", 1, 1).get(timeout=10) == 2
        os.chown(project.db + "-lq", NOBODY, NOBODY)
        app = LiteQueue(project.db)
        assert app.send_task("tasks.add", (20, 22)).get(timeout=20) == 42


STALE_SOCKETS = """\
import os, secrets, socket, sys
for i in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    # The name a waiter of this process would bind; closed without unlinking, as by a
    # process that was killed.
    s.bind(f"{secrets.token_hex(5)}.{os.getpid()}.{i % 999983}.{i}")
    s.close()
"""


class TestWakeupHygiene:

    def test_short_lived_apps_leave_no_descriptors_open(self, near_project, request):
        """A program that makes an app per request must not run out of descriptors.
        Live sleepers in work/ and sched/ stand in for a worker's (no worker runs: a
        worker's connection in this process would hold the file's lock, and SQLite would
        keep every closed connection's descriptor until it is released)."""
        stand_in_app(near_project.db).tasks["tasks.add"].delay(0, 0)     # makes the file
        side = litequeue._SideDir(near_project.db)
        sleepers = [litequeue._Sleeper(side, kind, "stand-in") for kind in ("work", "sched")]
        request.addfinalizer(lambda: [sleeper.close() for sleeper in sleepers])

        def open_fds():
            return len(os.listdir("/proc/self/fd"))
        for _ in range(3):                         # warm-up: caches and the first app
            stand_in_app(near_project.db).tasks["tasks.add"].delay(1, 1)
        gc.collect()
        before = open_fds()
        for _ in range(200):
            stand_in_app(near_project.db).tasks["tasks.add"].delay(1, 1)
        gc.collect()
        assert open_fds() - before < 20, open_fds() - before

    def test_a_lock_file_that_cannot_be_read_means_alive_and_a_fifo_never_blocks(
            self, near_project):
        """Only a missing lock file, or a free lock, means a dead worker: anything this
        process cannot read as a lock counts as alive, and opening never blocks."""
        near_project.delay("add", 0, 0)           # makes the file
        side = litequeue._SideDir(near_project.db)
        locks = litequeue._Locks(side)
        try:
            locks_dir = Path(side.path) / "locks"
            os.mkfifo(locks_dir / "0123456789ab.lock")
            (locks_dir / "0123456789ac.lock").mkdir()
            assert not locks.dead("0123456789ab") and not locks.dead("0123456789ac")
            assert locks.record("0123456789ab") == ([], ())
            assert locks.dead("0123456789ad")              # no file: dead
            assert locks.dead("not-an-id/../x")            # never a path: dead, nothing read
        finally:
            locks.close()

    @pytest.mark.worker
    def test_stale_done_sockets_are_cleaned_up(self, near_project, workers):
        project = near_project
        create_db(project)
        side = private_dir(project.db + "-lq")
        done = private_dir(side / "done")
        python(STALE_SOCKETS, done, 10_000)
        entries = os.listdir(done)
        assert len(entries) == 10_000
        assert stat.S_ISSOCK(os.lstat(done / entries[0]).st_mode)
        w = workers.start(project, concurrency=1)
        wait_until(lambda: len(os.listdir(done)) < 100, 30,
                   lambda: f"stale sockets in done/ cleaned up ({len(os.listdir(done))} left)")
        assert project.delay("add", 2, 3).get(timeout=10) == 5
        assert w.proc.poll() is None

    def test_junk_directories_in_work_cost_delay_nothing(self, near_project):
        project = near_project
        # The file, made by another app: project.app first looks at work/ with the junk.
        stand_in_app(project.db).tasks["tasks.add"].delay(0, 0)
        work = private_dir(Path(project.db + "-lq") / "work")
        for i in range(2000):
            (work / f"junk{i:04d}").mkdir()
        add = project.app.tasks["tasks.add"]
        times = []
        for i in range(200):
            started = time.perf_counter()
            add.delay(i, i)
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        assert median < 0.002, f"median delay() {median * 1000:.2f} ms"
        assert len([p for p in work.iterdir() if p.is_dir()]) == 2000
