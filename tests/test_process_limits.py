"""Process limits and odd files: descriptors above select()'s ceiling, a database path
that is not a regular file, a worker started on a full disk."""

import os
import signal
import stat
import time
import warnings

import apsw
import pytest

import litequeue
from litequeue import DatabaseError, LiteQueue

from .helpers import Project, alive, fill_disk, lq_here, producer, wait_until

pytestmark = pytest.mark.timeout(120)

# Descriptors a process opens before it waits: past select()'s FD_SETSIZE (1,024).
MANY_FDS = 1100
# Live sleepers in work/: a producer keeps a connected socket to each one it rings.
MANY_SLEEPERS = 2000

# Raises this process's descriptor limit to its hard limit (the tests run as root, as CI
# does, so the hard limit may be raised too).
RAISE_LIMIT = """\
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = max(hard, 8192)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
except (ValueError, OSError):
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
"""


def _raise_limit():
    exec(RAISE_LIMIT, {})


class TestManyDescriptors:

    def test_get_waits_in_a_process_with_descriptors_past_select_s_ceiling(self, project,
                                                                         here):
        here(project).start()                  # a worker child's loop on a thread
        _raise_limit()
        null = os.open(os.devnull, os.O_RDONLY)
        held = [os.dup(null) for _ in range(MANY_FDS)]
        try:
            assert max(held) > 1024
            # The producer app is made now: every descriptor it opens is past the ceiling.
            assert project.delay("add", 2, 3).get(timeout=30) == 5
            # And a get() that surely waits (the task takes 0.3 s).
            assert project.delay("nap", "past", 0.3).get(timeout=30) == "past"
        finally:
            for fd in held + [null]:
                os.close(fd)

    def test_get_waits_with_thousands_of_idle_sleepers_in_work(self, project, here):
        """A producer rings every sleeper in work/ through a socket of its own: with
        thousands there, its get() sleeps on a descriptor past select()'s ceiling."""
        here(project).start()                  # a worker child's loop on a thread
        assert project.delay("add", 1, 1).get(timeout=10) == 2     # work/ exists
        _raise_limit()
        side = litequeue._SideDir(project.db)
        sleepers = []
        try:
            for n in range(MANY_SLEEPERS):
                sleepers.append(litequeue._Sleeper(side, "work", f"idle{n:05d}"))
            assert project.delay("nap", "idle", 0.5).get(timeout=30) == "idle"
        finally:
            for sleeper in sleepers:
                sleeper.close()

    @pytest.mark.worker
    def test_a_producer_near_its_descriptor_limit_rings_what_it_can(self, project, workers):
        """Hundreds of sleepers and a producer allowed 100 descriptors: delay() and get()
        still work (the doorbell keeps sockets for a bounded number of sleepers)."""
        workers.start(project, concurrency=1)
        assert project.delay("add", 1, 1).get(timeout=10) == 2     # work/ exists
        side = litequeue._SideDir(project.db)
        sleepers = [litequeue._Sleeper(side, "work", f"idle{n:05d}") for n in range(300)]
        try:
            out = producer("""
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))
from tasks import add
print(add.delay(2, 3).get(timeout=30))
""", project.dir)
        finally:
            for sleeper in sleepers:
                sleeper.close()
        assert out.split() == ["5"]

    def test_wait_readable_takes_descriptors_and_objects_and_returns_them(self):
        """The one wait: no descriptor ceiling, the ready ones back as they were given."""
        _raise_limit()
        null = os.open(os.devnull, os.O_RDONLY)
        held = [os.dup(null) for _ in range(MANY_FDS)]
        r, w = os.pipe()
        box = litequeue._Mailbox()
        try:
            assert r > 1024
            assert litequeue._wait_readable([r, box], 0) == []
            os.write(w, b"!")
            box.put("done")
            ready = litequeue._wait_readable([r, box], 5)
            assert ready == [r, box] and ready[1] is box
            started = time.monotonic()
            assert litequeue._wait_readable([box.take() and box], 0.05) == []
            assert time.monotonic() - started >= 0.04
        finally:
            box.close()
            for fd in held + [null, r, w]:
                os.close(fd)


def _fifo_project(tmp_path):
    project = Project(tmp_path / "proj")
    os.mkfifo(project.db)
    return project


def _one_line_error(done, code):
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "regular file" in lines[0], lines[0]


class TestNotARegularFile:
    """A database path must name a regular file (or nothing, for commands that create
    it): anything else is refused at once, and nothing is created beside it."""

    @pytest.mark.parametrize("args, code", [
        (("health",), 3),
        (("status",), 1),
        (("call", "{db}", "tasks.add", "1", "1"), 1),
    ])
    def test_a_fifo_is_refused_without_blocking(self, tmp_path, args, code):
        project = _fifo_project(tmp_path)
        before = sorted(os.listdir(project.dir))
        argv = [a.format(db=project.db) for a in args]
        if "{db}" not in args:
            argv.append(project.db)
        started = time.monotonic()
        _one_line_error(lq_here(*argv, cwd=project.dir), code)
        assert time.monotonic() - started < 15
        assert sorted(os.listdir(project.dir)) == before
        assert stat.S_ISFIFO(os.lstat(project.db).st_mode)

    def test_a_fifo_is_refused_by_a_producer(self, tmp_path, capfd):
        project = _fifo_project(tmp_path)
        before = sorted(os.listdir(project.dir))
        app = LiteQueue(project.db)

        @app.task
        def add(x, y):
            return x + y
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            with pytest.raises(DatabaseError, match="regular file"):
                add.delay(1, 1)
        assert warned == [] and capfd.readouterr().err == ""
        assert sorted(os.listdir(project.dir)) == before

    def test_a_character_device_is_refused_by_write_commands(self, tmp_path):
        """A node like /dev/null: SQLite would open it and put a journal beside it."""
        project = Project(tmp_path / "proj")
        try:
            os.mknod(project.db, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("making a device node needs root")
        before = sorted(os.listdir(project.dir))
        _one_line_error(lq_here("call", project.db, "tasks.add", "1", "1", cwd=project.dir), 1)
        _one_line_error(lq_here("health", project.db, cwd=project.dir), 3)
        assert sorted(os.listdir(project.dir)) == before

    def test_a_link_to_a_character_device_is_refused(self, tmp_path):
        project = Project(tmp_path / "proj")
        os.symlink(os.devnull, project.db)
        before = sorted(os.listdir(project.dir))
        dev_before = sorted(os.listdir(os.path.dirname(os.devnull)))
        _one_line_error(lq_here("call", project.db, "tasks.add", "1", "1", cwd=project.dir), 1)
        assert sorted(os.listdir(project.dir)) == before
        assert sorted(os.listdir(os.path.dirname(os.devnull))) == dev_before


@pytest.mark.worker
class TestFullDiskAtStart:

    @pytest.mark.parametrize("reader", [True, False], ids=["file open elsewhere", "alone"])
    def test_a_worker_started_on_a_full_disk_waits_it_out(self, small_fs, workers, reader):
        """With another process holding the file open (a web server), its -wal and -shm
        files stay; alone, SQLite cannot even make them. Either way the worker waits for
        space, saying so, instead of ending."""
        project = Project(small_fs / "proj")
        producer("from tasks import add; add.delay(0, 0)", project.dir)   # creates the db
        held = apsw.Connection(project.db) if reader else None
        if held is not None:
            held.execute("SELECT count(*) FROM tasks").fetchall()
        filler = fill_disk(small_fs)
        try:
            w = workers.start(project, concurrency=1, ready=False)
            wait_until(lambda: "full" in w.log_text(), 20, "the worker to say it waits")
            assert w.proc.poll() is None, w.log_text()
            assert "Traceback" not in w.log_text(), w.log_text()
        finally:
            filler.unlink()
            if held is not None:
                held.close()
        w.wait_ready()
        assert project.delay("add", 2, 2).get(timeout=20) == 4
        assert "Traceback" not in w.log_text(), w.log_text()

    def test_a_replacement_child_on_a_full_disk_waits_it_out(self, small_fs, workers):
        project = Project(small_fs / "proj")
        w = workers.start(project, concurrency=1)
        (old,) = w.children()
        # The supervisor stands still while its child dies and the disk fills, so the
        # page of the dead child's lock file is not there for the new one to reuse.
        w.signal(signal.SIGSTOP)
        try:
            os.kill(old["pid"], signal.SIGKILL)
            wait_until(lambda: not alive(old["pid"]), 10, "the child to die")
            os.unlink(os.path.join(project.db + "-lq", "locks", old["id"] + ".lock"))
            filler = fill_disk(small_fs)
        finally:
            w.signal(signal.SIGCONT)
        try:
            wait_until(lambda: "lock file" in w.log_text() or "No space" in w.log_text(),
                       20, "the replacement child to meet the full disk")
            assert w.proc.poll() is None, w.log_text()
        finally:
            filler.unlink()
        assert project.delay("add", 3, 3).get(timeout=30) == 6
        assert "Traceback" not in w.log_text(), w.log_text()
