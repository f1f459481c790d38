"""Worker, task code: the registry and the modules a worker imports, Celery's seed
tutorial, and tasks a worker does not know.
"""

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import apsw
import msgpack
import pytest

import litequeue
from litequeue import FAILURE, SUCCESS, UNKNOWN, LiteQueue

from .helpers import (
    Folder, assert_canary, create_db, insert_raw, lq, pack, producer, python, sql, tables_rows,
    task_source, wait_until, worker_cmd,
)

pytestmark = pytest.mark.timeout(120)


ZEN = "Beautiful is better than ugly"


def sql_many(db, query, rows):
    """executemany in one transaction, on a fresh apsw connection."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        conn.set_busy_timeout(30_000)
        with conn:
            conn.executemany(query, rows)
    finally:
        conn.close()


LATE_MODULE = task_source("late.py")


class TestRegistryImport:

    @pytest.mark.worker
    @pytest.mark.parametrize("module", ["this.x", "venv.__main__.x", "pip.__main__.x",
                                        "antigravity.x"])
    def test_registry_never_imports_modules_outside_the_project(self, project, workers,
                                                               tmp_path, monkeypatch, module):
        marks = project.marks
        browser = tmp_path / "browser.sh"
        browser.write_text(f"#!/bin/sh\ntouch {marks / 'browser-opened'}\n")
        browser.chmod(0o755)
        monkeypatch.setenv("BROWSER", str(browser))       # what antigravity would open
        monkeypatch.setenv("PYTHONUNBUFFERED", "1")        # a print shows up at once
        create_db(project)
        sql(project.db, "INSERT INTO registry (name, module, updated_at) VALUES (?, ?, ?)",
            module + ".t", module, time.time())
        w = workers.start(project, concurrency=1)
        (bad,) = insert_raw(project.db, [(module + ".t", pack({}))])
        wait_until(lambda: project.state(bad) == FAILURE, 20,
                   lambda: f"{module}.t to fail\n{w.log_text()}")
        assert_canary(project, w)
        # A module registered after the worker started is still found under its directory.
        project.write_module("late", LATE_MODULE)
        assert producer("from late import triple; print(triple.delay(5).get(timeout=20))",
                        project.dir) == "15\n"
        w.signal(signal.SIGTERM)
        assert w.wait(20) == 0, w.log_text()
        text = w.log_text()
        assert ZEN not in text, text
        assert not list(project.dir.rglob("pyvenv.cfg")), list(project.dir.rglob("pyvenv.cfg"))
        assert not (project.dir / "bin").exists()
        assert not (marks / "browser-opened").exists(), "a browser was opened"

    @pytest.mark.worker
    @pytest.mark.parametrize("module", [b"\x00\x01", 42], ids=["blob", "integer"])
    def test_registry_row_of_another_type_does_not_stop_the_worker(self, project, workers,
                                                                  module):
        create_db(project)
        sql(project.db, "INSERT INTO registry (name, module, updated_at) VALUES (?, ?, ?)",
            "odd.t", module, time.time())
        w = workers.start(project, concurrency=1)
        (bad,) = insert_raw(project.db, [("odd.t", pack({}))])
        assert_canary(project, w)
        wait_until(lambda: project.state(bad) == FAILURE, 10, "odd.t to fail")

    def test_only_the_worker_s_own_directory_counts_not_a_venv_inside_it(
            self, tmp_path, monkeypatch):
        """A virtual environment or site-packages inside the project is under the
        worker's directory, but it is not the project's code: its modules, namespace
        packages, __main__ modules and an exit() at import are all kept out."""
        root = tmp_path / "project"
        site = root / ".venv" / "lib" / "site-packages"
        (site / "venvmod").mkdir(parents=True)
        (site / "venvmod" / "__init__.py").write_text("import sys; sys.stderr.write('RAN')\n")
        (root / "nspkg").mkdir()
        (root / "nspkg" / "mod.py").write_text("RAN = True\n")
        (root / "pkg").mkdir()
        (root / "pkg" / "__init__.py").write_text("")
        (root / "pkg" / "__main__.py").write_text("raise RuntimeError('ran __main__')\n")
        (root / "pkg" / "jobs.py").write_text("DEFINED = True\n")
        (root / "quitter.py").write_text("raise SystemExit(3)\n")
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.syspath_prepend(str(root))
        before = set(sys.modules)
        try:
            litequeue._autoimport(["venvmod", "nspkg.mod", "pkg.__main__", "quitter",
                                   "pkg.jobs"], str(root))
            loaded = set(sys.modules) - before
            assert loaded == {"pkg", "pkg.jobs"}, loaded
            assert sys.modules["pkg.jobs"].DEFINED
        finally:
            for name in set(sys.modules) - before:
                del sys.modules[name]

    @pytest.mark.worker
    def test_many_registry_rows_do_not_slow_unknown_tasks_down(self, project, workers):
        create_db(project)
        now = time.time()
        sql_many(project.db, "INSERT INTO registry (name, module, updated_at) VALUES (?, ?, ?)",
                 [(f"junk{i}.mod.t", f"junk{i}.mod", now) for i in range(10_000)])
        w = workers.start(project, concurrency=1)
        queued = time.monotonic()
        ids = insert_raw(project.db, [(f"junk{i}.mod.t", pack({})) for i in range(200)]
                         + [("tasks.add", pack({"args": [4, 4]}))])
        canary = ids[-1]
        wait_until(lambda: project.state(canary) == SUCCESS, 15,
                   lambda: f"the canary queued behind 200 unknown tasks to succeed (state "
                           f"{project.state(canary)}, "
                           f"{sql(project.db, 'SELECT count(*) FROM tasks WHERE state = ?', FAILURE)[0][0]}"
                           " failed so far)")
        elapsed = time.monotonic() - queued
        states = sql(project.db, "SELECT state, count(*) FROM tasks WHERE name LIKE 'junk%' "
                                 "GROUP BY state")
        assert states == [(FAILURE, 200)], states
        assert w.proc.poll() is None
        print(f"canary behind 200 unknown tasks and 10,000 registry rows: {elapsed:.2f} s")


def lines_of(path):
    path = Path(path)
    return path.read_text().splitlines() if path.exists() else []


def stored_error_message(db, task_id):
    """The message of the error stored in a finished task's row."""
    (blob,), = sql(db, "SELECT result FROM tasks WHERE id = ?", task_id)
    return str(msgpack.unpackb(blob, raw=False, strict_map_key=False).get("message"))


# The seed tutorial's files (tasks.py and celeryconfig.py), as a Celery user has them.
SEED_TASKS = task_source("seed/tasks.py")


SEED_CONFIG = task_source("seed/celeryconfig.py")


@pytest.mark.worker
class TestSeedFlow:

    def test_worker_reads_celeryconfig_and_serves_its_imports_at_once(self, tmp_path,
                                                                      workers):
        folder = Folder(tmp_path / "seed", {"tasks": SEED_TASKS, "celeryconfig": SEED_CONFIG})
        assert not os.path.exists(folder.db)
        w = workers.start(folder, cmd=worker_cmd("jobs.sqlite", "-c", 1))
        done = lq("call", "jobs.sqlite", "add", "4", "4", "--wait", "--timeout", 20,
                  cwd=folder.dir)
        assert (done.returncode, done.stdout) == (0, "8\n"), (done.stderr, w.log_text())

        # CELERY_TASK_RESULT_EXPIRES = 2 is honoured: the finished row is pruned.
        (task_id,), = sql(folder.db, "SELECT id FROM tasks WHERE name = 'tasks.add'")
        wait_until(lambda: not sql(folder.db, "SELECT 1 FROM tasks WHERE id = ?", task_id),
                   12, lambda: f"the finished add row to be pruned\n{w.log_text()}")
        assert LiteQueue(folder.db).AsyncResult(task_id).detailed_state == UNKNOWN

        # The periodic task of tasks.py fires without a restart.
        wait_until(lambda: lines_of(folder.marks / "note.tick"), 10,
                   lambda: f"the 1-second periodic task to fire\n{w.log_text()}")
        assert w.proc.poll() is None, w.log_text()

    def test_a_worker_that_serves_no_task_says_so_with_the_fix(self, tmp_path, workers):
        folder = Folder(tmp_path / "empty")
        w = workers.start(folder, cmd=worker_cmd("jobs.sqlite", "-c", 1))

        def warning():
            lines = w.log_text().splitlines()
            return [(i, line) for i, line in enumerate(lines) if "serves no task" in line]
        ((i, line), *_) = wait_until(warning, 5, lambda: f"a 'serves no task' warning\n"
                                                         f"{w.log_text()}")
        assert "WARNING" in line, line
        hint = "\n".join(w.log_text().splitlines()[i:i + 3])
        assert "-A" in hint, hint

    def test_a_module_registered_later_is_loaded_by_the_supervisor_too(self, project,
                                                                        workers):
        w = workers.start(project, concurrency=1)
        project.write_module("more", '''
            import os
            from litequeue import LiteQueue

            app = LiteQueue("jobs.sqlite")
            MARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "marks")


            @app.task
            def triple(x):
                return 3 * x


            @app.task
            def note(tag):
                with open(os.path.join(MARKS, "more." + tag), "a") as f:
                    f.write("ran\\n")


            app.add_periodic_task(1.0, note.s("tick"), name="more-tick")
        ''')
        # A producer registers module 'more' by queueing one of its tasks: the child runs it.
        assert python("import more; print(more.triple.delay(5).get(timeout=20))",
                      project.dir) == "15\n"
        # ... and the supervisor loads it too: its periodic task starts firing.
        wait_until(lambda: lines_of(project.marks / "more.tick"), 20,
                   lambda: f"more.py's periodic task to fire without a restart\n"
                           f"schedules: {tables_rows(project.db, 'schedules')}\n{w.log_text()}")
        assert w.proc.poll() is None, w.log_text()


class TestUnknownTaskMessage:

    @pytest.mark.worker
    def test_registered_name_whose_module_is_not_importable_here_says_so(self, project,
                                                                         workers, tmp_path):
        w = workers.start(project, concurrency=1)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "elsewhere_tasks.py").write_text(textwrap.dedent(f'''
            from litequeue import LiteQueue

            app = LiteQueue({project.db!r})


            @app.task
            def job():
                return "ran"
        '''))
        out = python("import elsewhere_tasks\n"
                     "r = elsewhere_tasks.job.delay()\n"
                     "r.get(timeout=20, propagate=False)\n"
                     "print(r.id, r.state)", elsewhere)
        task_id, state = out.split()
        assert state == FAILURE, w.log_text()
        message = stored_error_message(project.db, task_id)
        assert "elsewhere_tasks" in message and "cannot import" in message, message
        assert "never registered" not in message, message
        assert "has registered it" not in message, message
        assert w.proc.poll() is None, w.log_text()

    def test_a_task_its_imported_module_no_longer_defines_says_so(self, project, here):
        """In the test process (here): the worker imported tasks.py, which has no task
        'renamed'."""
        w = here(project)
        first = project.delay("add", 1, 1)
        w.work()
        assert first.get(timeout=10) == 2                           # tasks is imported
        sql(project.db, "INSERT INTO registry (name, module, updated_at) VALUES "
                        "('tasks.renamed', 'tasks', 0)")
        (task_id,) = insert_raw(project.db, [("tasks.renamed", pack({}))])
        w.work()
        assert project.state(task_id) == FAILURE
        message = stored_error_message(project.db, task_id)
        assert "does not define that task" in message and "cannot import" not in message
