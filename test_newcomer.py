"""Tests of issue 9, Part B: what a newcomer and a Celery user hit first.

One class per item of Part B. Each test encodes the behaviour the fix promises and failed
on the code before it. Like test_litequeue.py: real processes, real SQLite files, no
mocks, no fixed sleeps (wait_until against a deadline), every process reaped.
"""

import datetime as dt
import json
import os
import re
import sys
import textwrap
import types
from pathlib import Path

import apsw
import msgpack
import pytest

from litequeue import (
    FAILURE, SUCCESS, UNKNOWN, ConfigurationError, EagerResult, LiteQueue, SerializationError,
)
from test_litequeue import (  # noqa: F401  (project and workers are fixtures)
    LITEQUEUE_PY, Project, lq, project, python, run, sql, wait_until, workers,
)

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

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


def lines_of(path):
    path = Path(path)
    return path.read_text().splitlines() if path.exists() else []


def stored_error_message(db, task_id):
    """The message of the error stored in a finished task's row."""
    (blob,), = sql(db, "SELECT result FROM tasks WHERE id = ?", task_id)
    return str(msgpack.unpackb(blob, raw=False, strict_map_key=False).get("message"))


def tables_rows(db, table):
    """Rows of a table, or [] if the file or the table does not exist."""
    if not os.path.exists(db):
        return []
    try:
        return sql(db, f"SELECT * FROM {table}")
    except apsw.Error:
        return []


def utc_ts(*fields):
    return dt.datetime(*fields, tzinfo=dt.timezone.utc).timestamp()


# The seed tutorial's files (tasks.py and celeryconfig.py), as a Celery user has them.
SEED_TASKS = '''
import os
from litequeue import LiteQueue

app = LiteQueue("jobs.sqlite")
app.config_from_object("celeryconfig")

MARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "marks")


@app.task
def add(x, y):
    return x + y


@app.task
def note(tag):
    with open(os.path.join(MARKS, "note." + tag), "a") as f:
        f.write("ran\\n")


app.add_periodic_task(1.0, note.s("tick"), name="tick")
'''

SEED_CONFIG = '''
BROKER_URL = "amqp://guest:guest@localhost:5672//"
CELERY_RESULT_BACKEND = "amqp"
CELERY_IMPORTS = ("tasks",)
CELERY_TASK_RESULT_EXPIRES = 2
'''

PLAIN_TASKS = '''
from litequeue import LiteQueue

app = LiteQueue("jobs.sqlite")


@app.task
def add(x, y):
    return x + y
'''


# ---------------------------------------------------------------------------
# 1. Priority inside a claimed batch
# ---------------------------------------------------------------------------

class TestPriorityOrder:

    def test_every_higher_priority_task_runs_before_any_lower_one(self, project, workers):
        record = project.app.tasks["tasks.record"]
        low = [record.apply_async([n], priority=0) for n in range(6)]
        high = [record.apply_async([100 + n], priority=9) for n in range(6)]
        workers.start(project, concurrency=1)       # all 12 are queued before it starts
        assert [r.get(timeout=20) for r in low + high] == \
            list(range(6)) + list(range(100, 106))
        (ledger,) = project.marks.glob("ledger.*")  # one child ran them, in this order
        order = [int(line.split()[1]) for line in ledger.read_text().splitlines()]
        assert sorted(order[:6]) == list(range(100, 106)), f"run order: {order}"
        assert sorted(order[6:]) == list(range(6)), f"run order: {order}"


# ---------------------------------------------------------------------------
# 2. The seed's own flow: worker first, no -A, fresh database
# ---------------------------------------------------------------------------

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
        assert LiteQueue(folder.db).AsyncResult(task_id).state == UNKNOWN

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


# ---------------------------------------------------------------------------
# 3. Unknown task whose module this worker cannot import
# ---------------------------------------------------------------------------

class TestUnknownTaskMessage:

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


# ---------------------------------------------------------------------------
# 4. Worker on the wrong database
# ---------------------------------------------------------------------------

class TestWrongDatabase:

    def test_worker_on_another_file_than_the_app_s_is_refused(self, tmp_path):
        folder = Folder(tmp_path / "proj", {"tasks": PLAIN_TASKS + textwrap.dedent('''
            app.add_periodic_task(3600.0, add.s(1, 1), name="hourly")
        ''')})
        other = folder.dir / "other.sqlite"
        done = lq("worker", "other.sqlite", "-A", "tasks", "-c", 1, cwd=folder.dir,
                  timeout=20)
        assert done.returncode != 0, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert "jobs.sqlite" in last and "other.sqlite" in last, done.stderr
        assert tables_rows(str(other), "schedules") == []


# ---------------------------------------------------------------------------
# 5. Relative paths
# ---------------------------------------------------------------------------

class TestRelativePaths:

    def test_a_relative_path_is_resolved_against_the_module_creating_the_app(
            self, project, workers, tmp_path):
        other = tmp_path / "other"
        other.mkdir()
        workers.start(project, concurrency=1)
        setup = f"import sys; sys.path.insert(0, {str(project.dir)!r}); import tasks\n"
        assert python(setup + "print(tasks.app.path)", other) == f"{project.dir / 'jobs.sqlite'}\n"
        assert python(setup + "print(tasks.add.delay(2, 3).get(timeout=10))", other) == "5\n"
        assert not [p.name for p in other.iterdir() if p.name.startswith("jobs.sqlite")]
        # Without a module file (python -c) a relative path is read from the cwd.
        assert python("from litequeue import LiteQueue; print(LiteQueue('x.sqlite').path)",
                      other) == f"{other / 'x.sqlite'}\n"


# ---------------------------------------------------------------------------
# 6. Celery settings
# ---------------------------------------------------------------------------

BEAT_TASKS = PLAIN_TASKS.replace('app = LiteQueue("jobs.sqlite")\n',
                                 'app = LiteQueue("jobs.sqlite")\n'
                                 'app.config_from_object("celeryconfig")\n')


class TestCelerySettings:

    @pytest.mark.parametrize("setting, schedule, fires", [
        ("beat_schedule", "1.0", True),
        ("CELERYBEAT_SCHEDULE", "datetime.timedelta(seconds=1)", True),
        ("beat_schedule", "crontab(minute='*/5')", False),
    ], ids=["beat_schedule-seconds", "CELERYBEAT_SCHEDULE-timedelta", "crontab"])
    def test_beat_schedule_from_config_fires(self, tmp_path, workers, setting, schedule,
                                             fires):
        config = textwrap.dedent(f'''
            import datetime
            from litequeue import crontab

            {setting} = {{
                "every-second": {{"task": "tasks.add", "schedule": {schedule}, "args": (1, 2)}},
            }}
        ''')
        folder = Folder(tmp_path / "proj", {"tasks": BEAT_TASKS, "celeryconfig": config})
        w = workers.start(folder, cmd=worker_cmd(folder.db, "-A", "tasks", "-c", 1))
        rows = sql(folder.db, "SELECT name, task FROM schedules")
        assert rows == [("every-second", "tasks.add")], w.log_text()
        if not fires:
            return

        def fired():
            rows = sql(folder.db, "SELECT id, name, result FROM tasks WHERE id LIKE ? AND "
                                  "state = ?", "every-second@%", SUCCESS)
            return rows
        (task_id, name, result), *_ = wait_until(fired, 10, lambda: f"a fire to succeed\n"
                                                                   f"{w.log_text()}")
        assert name == "tasks.add" and msgpack.unpackb(result) == 3

    @pytest.mark.parametrize("setting", ["task_routes", "CELERY_ROUTES"])
    def test_task_routes_by_name_and_glob(self, tmp_path, setting):
        db = str(tmp_path / "jobs.sqlite")
        app = LiteQueue(db)
        app.config_from_object({setting: {"tasks.add": {"queue": "math"},
                                          "tasks.mail_*": {"queue": "mail"}}})

        @app.task(name="tasks.add")
        def add(x, y):
            return x + y

        @app.task(name="tasks.mail_send")
        def mail_send():
            pass

        @app.task(name="tasks.other")
        def other():
            pass

        def queue_of(result):
            return sql(db, "SELECT queue FROM tasks WHERE id = ?", result.id)[0][0]
        assert queue_of(add.delay(1, 2)) == "math"
        assert queue_of(mail_send.delay()) == "mail"
        assert queue_of(other.delay()) == "default"
        assert queue_of(add.apply_async((1, 2), queue="explicit")) == "explicit"
        assert queue_of(mail_send.apply_async(queue="explicit")) == "explicit"

    def test_celery_config_module_names_the_config_module(self, tmp_path, workers):
        folder = Folder(tmp_path / "proj", {
            "tasks": PLAIN_TASKS,
            "myconfig": 'CELERY_IMPORTS = ("tasks",)\n',
            "celeryconfig": 'CELERY_IMPORTS = ("decoy",)\n',
            "decoy": 'import os\n'
                     'open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "marks", '
                     '"decoy-imported"), "w").close()\n'})
        w = workers.start(folder, cmd=worker_cmd("jobs.sqlite", "-c", 1,
                                                 env={"CELERY_CONFIG_MODULE": "myconfig"}))
        done = lq("call", "jobs.sqlite", "add", "4", "4", "--wait", "--timeout", 20,
                  cwd=folder.dir)
        assert (done.returncode, done.stdout) == (0, "8\n"), (done.stderr, w.log_text())
        assert not (folder.marks / "decoy-imported").exists(), "celeryconfig.py was read"

    def test_conf_attribute_access_and_a_bad_zone_refused_at_once(self, tmp_path):
        app = LiteQueue(str(tmp_path / "jobs.sqlite"), timezone="Asia/Shanghai")
        assert app.conf.timezone == "Asia/Shanghai"
        assert app.conf["timezone"] == "Asia/Shanghai"
        with pytest.raises(ConfigurationError, match="Nope/Zone"):
            app.conf.update(timezone="Nope/Zone")
        assert app.conf.timezone == "Asia/Shanghai"
        assert app.conf["timezone"] == "Asia/Shanghai"

    def test_max_retries_none_honours_every_retry_request(self, project, workers):
        project.write_module("forever", '''
            from litequeue import LiteQueue

            app = LiteQueue("jobs.sqlite")


            @app.task(bind=True, max_retries=None)
            def persistent(self, times):
                if self.request.retries < times:
                    raise self.retry(countdown=0.01)
                return self.request.retries
        ''')
        w = workers.start(project, app=("tasks", "forever"), concurrency=1)
        out = python("import forever\n"
                     "r = forever.persistent.delay(6)\n"
                     "r.get(timeout=30, propagate=False)\n"
                     "print(r.id, r.state)", project.dir)
        task_id, state = out.split()
        row = project.row(task_id)
        assert (state, row["state"], row["retries"]) == (SUCCESS, SUCCESS, 6), \
            (row, w.log_text())
        assert msgpack.unpackb(row["result"]) == 6

    def test_celery_names_with_no_meaning_warn_on_stderr_without_logging_set_up(
            self, tmp_path):
        (tmp_path / "celeryconfig.py").write_text(
            "task_acks_late = True\n"
            "worker_prefetch_multiplier = 1\n"
            "broker_transport_options = {'visibility_timeout': 3600}\n")
        code = ("from litequeue import LiteQueue\n"
                "app = LiteQueue('jobs.sqlite')\n"
                "app.config_from_object('celeryconfig')\n"
                "print('configured')\n")
        done = run([sys.executable, "-c", code], cwd=tmp_path)
        assert (done.returncode, done.stdout) == (0, "configured\n"), done.stderr
        for name in ("task_acks_late", "worker_prefetch_multiplier",
                     "broker_transport_options"):
            assert name in done.stderr, done.stderr

    @pytest.mark.parametrize("kind", ["module", "mapping"])
    def test_misspelled_setting_in_config_is_refused_with_a_suggestion(self, tmp_path, kind):
        app = LiteQueue(str(tmp_path / "jobs.sqlite"))
        if kind == "module":
            config = types.ModuleType("celeryconfig")
            config.result_expire = 10
        else:
            config = {"result_expire": 10}
        with pytest.raises(ConfigurationError, match="result_expires"):
            app.config_from_object(config)


# ---------------------------------------------------------------------------
# 7. Eager mode matches the worker
# ---------------------------------------------------------------------------

class TestEagerRoundTrip:

    @pytest.fixture
    def app(self, tmp_path):
        return LiteQueue(str(tmp_path / "jobs.sqlite"), task_always_eager=True)

    def test_a_tuple_comes_back_a_list(self, app):
        @app.task
        def pair():
            return (1, 2)
        result = pair.delay()
        value = result.get()
        assert value == [1, 2] and type(value) is list
        assert result.state == SUCCESS

    def test_a_set_is_a_serialization_error(self, app):
        @app.task
        def numbers():
            return {1, 2}
        result = numbers.delay()
        assert isinstance(result, EagerResult)
        assert result.state == FAILURE
        assert isinstance(result.result, SerializationError), repr(result.result)
        with pytest.raises(SerializationError):
            result.get()


# ---------------------------------------------------------------------------
# 8. CLI
# ---------------------------------------------------------------------------

class TestCLINewcomer:

    def test_call_with_a_negative_number(self, project, workers):
        workers.start(project, concurrency=1)
        done = lq("call", project.db, "add", "-1", "2", "--wait", "--timeout", 20,
                  cwd=project.dir)
        assert (done.returncode, done.stdout) == (0, "1\n"), done.stderr

    def test_huge_priority_is_one_line_and_writes_nothing(self, project):
        project.delay("add", 1, 1)
        before = sql(project.db, "SELECT count(*) FROM tasks")
        done = lq("call", project.db, "add", 1, 2, "--priority", "99999999999999999999",
                  cwd=project.dir)
        assert done.returncode != 0, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert sql(project.db, "SELECT count(*) FROM tasks") == before

    @pytest.mark.parametrize("option", ["--id", "--queue"])
    def test_empty_id_or_queue_is_a_usage_error(self, project, option):
        project.delay("add", 1, 1)
        before = sql(project.db, "SELECT count(*) FROM tasks")
        done = lq("call", project.db, "add", 1, 2, option, "", cwd=project.dir)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert sql(project.db, "SELECT count(*) FROM tasks") == before

    @pytest.mark.parametrize("command", [["status"], ["result", "someid"], ["schedules"]],
                             ids=["status", "result", "schedules"])
    def test_read_commands_never_create_or_change_a_file(self, tmp_path, command):
        empty = tmp_path / "empty.sqlite"
        empty.touch()
        done = lq(command[0], empty, *command[1:], cwd=tmp_path)
        assert empty.stat().st_size == 0, "a 0-byte file was turned into a database"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]
        assert "Traceback" not in done.stderr, done.stderr
        assert len((done.stdout + done.stderr).strip().splitlines()) == 1, \
            (done.stdout, done.stderr)

        missing = tmp_path / "missing.sqlite"
        done = lq(command[0], missing, *command[1:], cwd=tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]
        assert "Traceback" not in done.stderr, done.stderr
        assert len((done.stdout + done.stderr).strip().splitlines()) == 1, \
            (done.stdout, done.stderr)

    def test_a_module_name_where_the_database_belongs_gets_a_hint(self, project):
        assert not (project.dir / "tasks").exists()
        done = lq("worker", "tasks", "-c", 1, cwd=project.dir, timeout=20)
        assert done.returncode != 0, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert "-A" in done.stderr.strip().splitlines()[-1], done.stderr
        assert not (project.dir / "tasks").exists()

    def test_status_columns_align_for_a_long_queue_name(self, project):
        add = project.app.tasks["tasks.add"]
        add.delay(1, 1)
        add.apply_async((1, 1), queue="q" * 30)
        add.apply_async((1, 1), queue="mail", countdown=3600)
        done = lq("status", project.db, cwd=project.dir)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        task_lines = lines[lines.index("tasks:") + 1:lines.index("workers:")]
        assert len(task_lines) == 3, done.stdout
        offsets = {re.match(r"\s*\S+\s+", line).end() for line in task_lines}
        assert len(offsets) == 1, done.stdout

    def test_a_failed_task_s_traceback_is_in_the_worker_log_at_error(self, project,
                                                                     workers):
        w = workers.start(project, concurrency=1)
        result = project.delay("fail", "boom")
        result.get(timeout=20, propagate=False)
        assert result.state == FAILURE

        def traceback_logged():
            text = w.log_text()
            return "Traceback (most recent call last)" in text and \
                "raise TaskFailed(message)" in text and text
        text = wait_until(traceback_logged, 5, lambda: f"the traceback in the worker log\n"
                                                       f"{w.log_text()}")
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines)
                     if "Traceback (most recent call last)" in line)
        header = next(line for line in reversed(lines[:start]) if line.startswith("["))
        assert "ERROR" in header, header


# ---------------------------------------------------------------------------
# 9. The machine's time zone is the default
# ---------------------------------------------------------------------------

ZONE_PROBE = '''
import datetime, json, sys
from litequeue import LiteQueue

db = sys.argv[1]
app = LiteQueue(db)
utc = LiteQueue(db, timezone="UTC")


@app.task(name="tasks.add")
def add(x, y):
    return x + y


@utc.task(name="tasks.add")
def add_utc(x, y):
    return x + y


eta = datetime.datetime(2030, 1, 1, 9, 0)
print(json.dumps({"zone": app.conf["timezone"], "utc_zone": utc.conf["timezone"],
                  "id": add.apply_async((1, 2), eta=eta).id,
                  "utc_id": add_utc.apply_async((1, 2), eta=eta).id}))
'''


def _localtime_is_utc():
    try:
        target = os.path.realpath("/etc/localtime")
    except OSError:
        return True
    if not os.path.exists("/etc/localtime"):
        return True
    return target.rsplit("zoneinfo/", 1)[-1] in ("UTC", "Etc/UTC", "Etc/UCT", "UCT",
                                                  "Universal", "Zulu", "Etc/Universal",
                                                  "Etc/Zulu")


class TestLocalTimeZone:

    def test_default_zone_is_the_machine_s(self, tmp_path):
        db = tmp_path / "jobs.sqlite"
        env = dict(os.environ, TZ="Asia/Shanghai")
        done = run([sys.executable, "-c", ZONE_PROBE, str(db)], cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["zone"] == "Asia/Shanghai"
        assert sql(db, "SELECT eta FROM tasks WHERE id = ?", out["id"]) == \
            [(utc_ts(2030, 1, 1, 1, 0),)]
        # timezone="UTC" given explicitly wins over the machine's zone.
        assert out["utc_zone"] == "UTC"
        assert sql(db, "SELECT eta FROM tasks WHERE id = ?", out["utc_id"]) == \
            [(utc_ts(2030, 1, 1, 9, 0),)]

        if _localtime_is_utc():      # TZ unset: /etc/localtime (UTC here, or missing)
            env = {k: v for k, v in os.environ.items() if k != "TZ"}
            done = run([sys.executable, "-c", ZONE_PROBE, str(tmp_path / "utc.sqlite")],
                       cwd=tmp_path, env=env)
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["zone"] == "UTC"

    def test_worker_logs_its_zone_at_start(self, project, workers):
        w = workers.start(project, cmd=worker_cmd(project.db, "-A", "tasks", "-c", 1,
                                                  env={"TZ": "Asia/Shanghai"}))
        wait_until(lambda: "Asia/Shanghai" in w.log_text(), 5,
                   lambda: f"the zone in the worker log\n{w.log_text()}")
