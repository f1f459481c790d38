"""Tests of what a new user meets in the first hour: README's commands, the demo, the CLI's
messages and options, config warnings, and the parts of Flower's API that scripts call.

Helpers come from helpers.py, fixtures from conftest.py. Nothing waits a fixed time:
processes are awaited with wait_until or their own exit.
"""

import base64
import datetime as dt
import http.client
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import msgpack
import pytest

import litequeue
from litequeue import (
    EXPIRED, FAILURE, PENDING, REVOKED, SCHEDULED, STARTED, SUCCESS, UNKNOWN, ConfigurationError,
    LiteQueue, crontab,
)

from .helpers import (
    LITEQUEUE_PY, PLAIN_TASKS, UTC, Folder, alive, assert_one_line_error, fire_time, fires_of, lq,
    lq_here, run, sha256, sql, task_source, utc_ts, wait_until, worker_cmd,
)

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def readme_commands():
    """The commands of README's opening block: {"1": line, "2": line}."""
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands, number = {}, None
    for line in block.splitlines():
        heading = re.match(r"# (\d+)\.", line)
        if heading:
            number = heading.group(1)
        elif line.strip() and number:
            commands[number] = line.strip()
    return commands


def usage_error(done, *contains):
    """A usage error: exit 2, no traceback, and every text of contains on stderr."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    for text in contains:
        assert text in done.stderr, done.stderr


def one_line(done, code, *contains):
    """exit code, and exactly one line on stderr that holds every text of contains."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for text in contains:
        assert text in lines[0], lines[0]
    return lines[0]


def register(db, name, module):
    """A registry row, as a producer's first delay() of that task writes it."""
    sql(db, "INSERT INTO registry (name, module, updated_at) VALUES (?, ?, 0)", name, module)


def registered(db):
    return {name for name, in sql(db, "SELECT name FROM registry")}


def assert_status_counts(done, succeeded, failed):
    """`status` answered, with its tasks and workers, and these counts in queue default.
    Returns the command's result."""
    assert done.returncode == 0, done.stderr
    assert "tasks:" in done.stdout and "workers:" in done.stdout
    lines = done.stdout.splitlines()
    for state, n in ((SUCCESS, succeeded), (FAILURE, failed)):
        assert any(line.split() == ["default", state, str(n)] for line in lines), done.stdout
    return done


def call_args(db, task_id):
    (payload,), = sql(db, "SELECT payload FROM tasks WHERE id = ?", task_id)
    envelope = msgpack.unpackb(payload, raw=False)
    return envelope.get("args", []), envelope.get("kwargs", {})


# ---------------------------------------------------------------------------
# README's opening commands
# ---------------------------------------------------------------------------

class TestReadmeCommands:

    @pytest.mark.worker
    def test_the_test_command_installs_what_the_tests_need_first(self):
        """The browser test needs Debian's chromium and chromium-driver, the portability
        test redis-server: command 2 must install them, and CI must run command 2."""
        command = readme_commands()["2"]
        assert command == "bash .ci/run", command
        ci = (ROOT / ".ci" / "run").read_text()
        install = re.search(r"apt-get install(?:[^\n\\]|\\\n)*", ci).group(0)
        for package in ("redis-server", "chromium", "chromium-driver", "python3-venv"):
            assert re.search(rf"(?<![\w-]){package}(?![\w-])", install), (package, install)
        assert "sudo" in ci, "a user who is not root installs the packages through sudo"
        # It runs the test command README names, as its last command, with nothing
        # deselected or skipped on purpose.
        last = [line for line in ci.splitlines() if line.strip() and
                not line.lstrip().startswith("#")][-1].strip()
        assert last == "python -m pytest -q", last
        assert "`python -m pytest -q`" in README
        assert subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")]).returncode == 0

    def test_the_first_command_still_runs_the_demo(self):
        assert readme_commands()["1"] == "pip install -e . && python litequeue.py demo jobs.sqlite"


# ---------------------------------------------------------------------------
# demo, and forgetting a registered name
# ---------------------------------------------------------------------------

class TestDemo:

    @pytest.mark.worker
    def test_demo_refuses_a_database_a_worker_serves(self, project, workers):
        workers.start(project)
        project.delay("add", 1, 1).get(timeout=30)
        before = sql(project.db, "SELECT count(*) FROM tasks")
        done = lq("demo", project.db, cwd=project.dir, timeout=60)
        one_line(done, 2, "worker")
        assert sql(project.db, "SELECT count(*) FROM tasks") == before
        assert not any(name.startswith("litequeue_demo") for name in registered(project.db))

    @pytest.mark.worker
    def test_demo_prints_commands_that_run_again_and_leaves_no_name_behind(self, project):
        done = lq("demo", "jobs.sqlite", "-n", 4, cwd=project.dir, timeout=90)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count(SUCCESS) == 3 and "FAILURE" in done.stdout, done.stdout
        commands = [line.split("$ ", 1)[1] for line in done.stdout.splitlines()
                    if line.lstrip().startswith("$ ")]
        assert len(commands) >= 2, done.stdout
        # Nothing names the demo's temporary module (or its folder, gone once it ends).
        assert not any("litequeue_demo_tasks" in c or " -A " in c for c in commands), commands
        for command in commands:
            again = run(["bash", "-c", command], cwd=project.dir, timeout=60)
            assert again.returncode == 0 and again.stdout.strip(), (command, again.stderr)
        # The user's own tasks come next: the demo's names do not make `add` ambiguous.
        assert not any(name.startswith("litequeue_demo") for name in registered(project.db))
        project.delay("add", 1, 1)
        queued = lq("call", "jobs.sqlite", "add", 4, 4, cwd=project.dir)
        assert queued.returncode == 0, queued.stderr

    def test_unregister_forgets_names_by_task_or_by_module(self, project):
        project.delay("add", 1, 1)
        register(project.db, "litequeue_demo_tasks.add", "litequeue_demo_tasks")
        register(project.db, "litequeue_demo_tasks.divide", "litequeue_demo_tasks")
        register(project.db, "old.add", "old")
        one_line(lq_here("call", project.db, "add", 4, 4, cwd=project.dir), 1, "ambiguous")

        before = sha256(project.db)
        one_line(lq_here("unregister", project.db, "old.add", "nope", cwd=project.dir), 1,
                 "'nope'")
        assert sha256(project.db) == before, "nothing is forgotten when one name is unknown"

        done = lq_here("unregister", project.db, "old.add", "litequeue_demo_tasks",
                       cwd=project.dir)
        assert done.returncode == 0, done.stderr
        for name in ("old.add", "litequeue_demo_tasks.add", "litequeue_demo_tasks.divide"):
            assert name in done.stdout, done.stdout
        assert registered(project.db) == {"tasks.add"}
        assert lq_here("call", project.db, "add", 4, 4, cwd=project.dir).returncode == 0


# ---------------------------------------------------------------------------
# call: the zone of a naive --eta
# ---------------------------------------------------------------------------

def eta_of(db, done):
    assert done.returncode == 0, done.stderr
    return sql(db, "SELECT eta FROM tasks WHERE id = ?", done.stdout.strip())[0][0]


class TestCallTimeZone:

    def test_help_says_a_naive_eta_is_read_in_the_app_s_zone(self, tmp_path):
        done = lq_here("call", "--help", cwd=tmp_path)
        text = " ".join(done.stdout.split())
        assert "[default: UTC]" not in text, text
        assert "timezone" in text and "machine" in text, text

    @pytest.mark.worker
    def test_naive_eta_is_read_in_the_config_zone_else_the_machine_s(self, tmp_path):
        folder = Folder(tmp_path / "proj", {"tasks": PLAIN_TASKS})
        register_app = LiteQueue(folder.db)

        @register_app.task(name="tasks.add")
        def add(x, y):
            return x + y
        add.apply_async((0, 0), countdown=3600)
        env = dict(os.environ, TZ="Asia/Shanghai")

        def call(*extra):
            return run([sys.executable, str(LITEQUEUE_PY), "call", "jobs.sqlite", "add", "1",
                        "2", "--eta", "2030-01-01T09:00:00", *extra], cwd=folder.dir, env=env)
        assert eta_of(folder.db, call()) == utc_ts(2030, 1, 1, 1, 0)      # the machine's zone
        folder.write_module("celeryconfig", 'CELERY_TIMEZONE = "America/New_York"\n')
        assert eta_of(folder.db, call()) == utc_ts(2030, 1, 1, 14, 0)     # the app's setting
        assert eta_of(folder.db, call("--tz", "UTC")) == utc_ts(2030, 1, 1, 9, 0)


# ---------------------------------------------------------------------------
# A task module that cannot be imported
# ---------------------------------------------------------------------------

@pytest.mark.worker
class TestBrokenTaskModule:

    @pytest.mark.parametrize("source, line, error", [
        ("from litequeue import LiteQueue\napp = LiteQueue('jobs.sqlite')\ndef add(x, y)\n"
         "    return x + y\n", 3, "SyntaxError"),
        ("import os\nfrom litequeue import LiteQueue\napp = LiteQueue('jobs.sqlite')\n"
         "raise RuntimeError('DATABASE_URL is not set')\n", 4,
         "RuntimeError: DATABASE_URL is not set"),
    ], ids=["syntax-error", "raise-at-import"])
    def test_worker_says_file_line_and_error_in_one_line(self, tmp_path, source, line, error):
        folder = Folder(tmp_path / "proj", {"broken": source})
        done = lq("worker", "jobs.sqlite", "-A", "broken", "-c", 1, cwd=folder.dir, timeout=30)
        one_line(done, 2, "broken.py", f"line {line}", error)

    def test_a_broken_config_module_is_one_line_too(self, tmp_path):
        folder = Folder(tmp_path / "proj", {"tasks": PLAIN_TASKS,
                                            "celeryconfig": "CELERY_IMPORTS = ('tasks',\n"})
        done = lq("worker", "jobs.sqlite", "-c", 1, cwd=folder.dir, timeout=30)
        one_line(done, 2, "celeryconfig.py", "line 1", "SyntaxError")


# ---------------------------------------------------------------------------
# Flower's API: form-encoded revoke, apply and send-task
# ---------------------------------------------------------------------------

def post(d, path, body, content_type, headers=None, token=True):
    """(status, parsed JSON) of a POST with a raw body, as curl -d sends it (with the
    dashboard's token, as a script that read its token file does, unless token=False)."""
    conn = http.client.HTTPConnection(d.host, timeout=60)
    bearer = {"Authorization": f"Bearer {d.token}"} if token else {}
    try:
        conn.request("POST", path, body=body, headers={
            "Host": d.host, "Content-Type": content_type, **bearer, **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


@pytest.mark.worker
class TestFlowerApi:

    def test_revoke_reads_terminate_from_a_form_encoded_body(self, project, workers,
                                                             dashboards):
        workers.start(project)
        running = project.delay("block", "long")
        wait_until(lambda: project.started("long"), 30, "the task to start")
        d = dashboards(project)
        status, answer = post(d, f"/api/task/revoke/{running.id}", "terminate=True",
                              "application/x-www-form-urlencoded")
        assert status == 200 and "Revoked" in answer["message"], answer
        assert running.state == REVOKED
        status, answer = post(d, f"/api/task/revoke/{running.id}", "terminate=maybe",
                              "application/x-www-form-urlencoded")
        assert status == 400, answer

    def test_apply_waits_for_the_result_and_send_task_returns_the_id(self, project, workers,
                                                                     dashboards):
        workers.start(project)
        project.delay("add", 0, 0).get(timeout=30)
        d = dashboards(project)
        status, answer = post(d, "/api/task/apply/tasks.add", json.dumps({"args": [2, 3]}),
                              "application/json")
        assert status == 200 and answer["state"] == SUCCESS and answer["result"] == 5, answer
        assert project.state(answer["task-id"]) == SUCCESS

        # curl -d sends a JSON body as form-encoded: Flower reads it as JSON all the same.
        status, answer = post(d, "/api/task/apply/tasks.fail",
                              json.dumps({"args": ["boom"]}),
                              "application/x-www-form-urlencoded")
        assert status == 200 and answer["state"] == FAILURE, answer
        assert "boom" in answer["result"] and "TaskFailed" in answer["traceback"], answer

        status, answer = post(d, "/api/task/send-task/tasks.add", json.dumps(
            {"args": [1, 2], "kwargs": {}, "countdown": 600, "queue": "later"}),
            "application/json")
        assert status == 200 and set(answer) == {"task-id", "state"}, answer
        assert answer["state"] == SCHEDULED
        assert project.row(answer["task-id"])["queue"] == "later"
        status, answer = post(d, "/api/task/send-task/tasks.add", json.dumps(
            {"args": [1, 2], "eta": "2030-01-01 09:00:00.000000", "timezone": "UTC"}),
            "application/json")
        assert status == 400 and "timezone" in answer["error"], answer

        for route in ("apply", "send-task"):
            status, answer = post(d, f"/api/task/{route}/tasks.nope", "{}", "application/json")
            assert status == 404 and "tasks.nope" in answer["error"], (route, answer)
            status, answer = post(d, f"/api/task/{route}/tasks.add", '{"args": "1, 2"}',
                                  "application/json")
            assert status == 400, (route, answer)

    def test_apply_and_send_task_respect_auth_and_read_only(self, project, dashboards):
        project.delay("add", 0, 0)
        before = sql(project.db, "SELECT count(*) FROM tasks")
        basic = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}
        env = dict(os.environ, LITEQUEUE_DASHBOARD_PASSWORD="s3cret")
        locked = dashboards(project, "--auth", "ops", "--read-only", env=env)
        for route in ("apply", "send-task"):
            path = f"/api/task/{route}/tasks.add"
            assert post(locked, path, '{"args": [1, 2]}', "application/json",
                        token=False)[0] == 401
            assert post(locked, path, '{"args": [1, 2]}', "application/json",
                        basic, token=False)[0] == 403
        assert sql(project.db, "SELECT count(*) FROM tasks") == before
        guarded = dashboards(project, "--auth", "ops", env=env)
        path = "/api/task/send-task/tasks.add"
        assert post(guarded, path, '{"args": [1, 2]}', "application/json",
                    token=False)[0] == 401
        status, answer = post(guarded, path, '{"args": [1, 2]}', "application/json", basic,
                              token=False)
        assert status == 200 and project.row(answer["task-id"])["state"] == "PENDING"


# ---------------------------------------------------------------------------
# Small CLI and config defects
# ---------------------------------------------------------------------------

class TestCallArguments:

    def test_after_a_double_dash_everything_is_an_argument(self, project):
        project.delay("add", 1, 1)
        done = lq_here("call", project.db, "add", "--queue", "q", "--", "-x", "--wait", "7",
                       cwd=project.dir)
        assert done.returncode == 0, done.stderr
        task_id = done.stdout.strip()
        assert call_args(project.db, task_id) == (["-x", "--wait", 7], {})
        assert project.row(task_id)["queue"] == "q"
        usage_error(lq_here("call", project.db, "add", "-x", cwd=project.dir), "No such option")

    def test_a_priority_out_of_range_is_a_usage_error(self, project):
        project.delay("add", 1, 1)
        before = sha256(project.db)
        done = lq_here("call", project.db, "add", 1, 2, "--priority", "99999999999999999999",
                       cwd=project.dir)
        usage_error(done, "must be between")
        assert "whole number" not in done.stderr, done.stderr
        assert sha256(project.db) == before
        with pytest.raises(ConfigurationError, match="must be between") as caught:
            project.app.tasks["tasks.add"].apply_async((1, 2), priority=2 ** 63)
        assert "whole number" not in str(caught.value)
        with pytest.raises(ConfigurationError, match="whole number"):
            project.app.tasks["tasks.add"].apply_async((1, 2), priority=1.5)


class TestListingCommands:

    def test_tasks_accepts_any_state_name(self, project):
        ids = [project.delay("add", i, i).id for i in range(3)]
        sql(project.db, "UPDATE tasks SET state = 'STARTED', started_at = 1, meta = ? "
                        "WHERE id = ?", msgpack.packb(["PROGRESS", {"current": 1}]), ids[1])
        done = lq_here("tasks", project.db, "--state", "PROGRESS", cwd=project.dir)
        assert done.returncode == 0, done.stderr
        assert [line.split()[:2] for line in done.stdout.splitlines()] == \
            [[ids[1], "PROGRESS"]], done.stdout
        done = lq_here("tasks", project.db, "--state", "pending", cwd=project.dir)
        assert [line.split()[0] for line in done.stdout.splitlines()] == [ids[2], ids[0]]
        done = lq_here("tasks", project.db, "--state", "NOPE", cwd=project.dir)
        assert (done.returncode, done.stdout) == (0, ""), done.stderr

    def test_inspect_prints_arguments_as_json_values(self, project):
        task_id = project.app.tasks["tasks.echo"].apply_async(
            (1, "two", [3]), {"key": {"k": None}}, countdown=600).id
        done = lq_here("inspect", project.db, "scheduled", cwd=project.dir)
        assert done.returncode == 0, done.stderr
        (row,) = json.loads(done.stdout)
        assert row["id"] == task_id
        assert (row["args"], row["kwargs"]) == ([1, "two", [3]], {"key": {"k": None}})

    def test_pausing_a_queue_no_task_names_says_so_in_one_line(self, project):
        project.delay("add", 1, 1)
        done = lq_here("pause", project.db, "nosuchqueue", cwd=project.dir)
        assert done.returncode == 0, done.stderr
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert len(lines) == 1 and "paused" in lines[0], lines
        assert "no task" in lines[0] and "default" in lines[0], lines
        assert "nosuchqueue" in project.app.admin.paused()
        done = lq_here("pause", project.db, "default", cwd=project.dir)
        assert done.stdout.strip() == "queue default paused", done.stdout


CONFIG_WITH_IGNORED = task_source("ignored_settings/celeryconfig.py")


class TestConfigNotices:

    @pytest.mark.worker
    def test_config_warnings_point_at_the_config_file_s_line(self, tmp_path):
        folder = Folder(tmp_path / "proj", {"tasks": PLAIN_TASKS,
                                            "celeryconfig": CONFIG_WITH_IGNORED})
        code = ("from litequeue import LiteQueue\n"
                "app = LiteQueue('jobs.sqlite')\n"
                "app.config_from_object('celeryconfig')\n"
                "LiteQueue('other.sqlite', worker_prefetch_multiplier=4)\n")
        done = run([sys.executable, "-c", code], cwd=folder.dir)
        assert done.returncode == 0, done.stderr
        config = str(folder.dir / "celeryconfig.py")
        assert f"{config}:4: LitequeueWarning: setting task_acks_late is ignored" in \
            done.stderr, done.stderr
        assert "<string>:4: LitequeueWarning: setting worker_prefetch_multiplier" in \
            done.stderr, done.stderr
        assert "litequeue.py" not in done.stderr, done.stderr

    @pytest.mark.worker
    def test_a_worker_notes_each_ignored_setting_once(self, tmp_path, workers):
        folder = Folder(tmp_path / "proj", {"tasks": PLAIN_TASKS,
                                            "celeryconfig": CONFIG_WITH_IGNORED})
        w = workers.start(folder, cmd=worker_cmd("jobs.sqlite", "-c", 2), concurrency=2)
        folder.app.send_task("tasks.add", (1, 2)).get(timeout=30)
        text = w.log_text()
        assert text.count("ignoring BROKER_URL") == 1, text
        assert text.count("task_acks_late is ignored") == 1, text
        assert "litequeue.py:" not in text, text

    @pytest.mark.parametrize("typo, meant", [("CELERY_IMPORT", "CELERY_IMPORTS"),
                                             ("CELERYD_CONCURENCY", "CELERYD_CONCURRENCY"),
                                             ("CELERY_TIMEZNOE", "CELERY_TIMEZONE")])
    def test_an_upper_case_typo_gets_a_suggestion(self, tmp_path, typo, meant):
        app = LiteQueue(str(tmp_path / "jobs.sqlite"))
        with pytest.warns(litequeue.LitequeueWarning, match=f"did you mean '{meant}'"):
            app.config_from_object({typo: 1})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            app.config_from_object({"CELERY_SOMETHING_NEW": 1})
        assert caught and "did you mean" not in str(caught[0].message)


class TestWorkerBanner:

    @pytest.mark.parametrize("pool, processes, threads, coroutines, expected", [
        ("prefork", 1, 0, 100, "1 process running one sync task at a time and up to 100 "
                               "coroutine tasks at once"),
        ("prefork", 2, 0, 100, "2 processes, each running one sync task at a time and up to "
                               "100 coroutine tasks at once"),
        ("prefork", 2, 0, 1, "2 processes, each running one sync task at a time and up to 1 "
                             "coroutine task at once"),
        ("threads", 1, 20, 100, "1 process running sync tasks on 20 threads and up to 100 "
                                "coroutine tasks at once"),
        ("threads", 1, 1, 100, "1 process running sync tasks on 1 thread and up to 100 "
                               "coroutine tasks at once"),
        ("solo", 1, 0, 1, "solo (1 process, 1 task at a time)"),
    ])
    def test_the_pool_in_words(self, pool, processes, threads, coroutines, expected):
        assert litequeue._pool_words(pool, processes, threads, coroutines) == expected

    @pytest.mark.worker
    def test_the_banner_reads_as_a_sentence(self, project, workers):
        w = workers.start(project, "-P", "threads", "-c", 20, cmd=worker_cmd(
            project.db, "-A", "tasks"), concurrency=1)
        line = next(line for line in w.log_text().splitlines() if "litequeue worker" in line)
        assert "1 process running sync tasks on 20 threads" in line, line
        assert "(s)" not in line and "coroutines each" not in line, line


# ---------------------------------------------------------------------------
# README speaks to users
# ---------------------------------------------------------------------------

class TestReadmeText:

    def test_install_instructions_name_what_really_installs(self):
        for match in re.finditer(r"pip install ([^`\n&;]*)", README):
            words = shlex.split(match.group(1).replace("'", ""))
            for word in words:
                assert "litequeue" not in word or word.startswith(("/", ".", "-", "git+")), \
                    match.group(0)

    def test_no_issue_numbers(self):
        found = re.findall(r".{0,30}(?:\bissues? \d+|#\d+).{0,30}", README, re.I)
        assert not found, found


class TestCLINewcomer:

    def test_read_commands_leave_an_older_schema_as_it_is(self, project):
        project.delay("add", 1, 1)
        sql(project.db, "ALTER TABLE schedules DROP COLUMN error")
        sql(project.db, f"PRAGMA user_version = {litequeue.SCHEMA_VERSION - 1}")
        before = sha256(project.db)
        for args in (("status",), ("schedules",)):
            done = lq_here(args[0], project.db, cwd=project.dir)
            assert done.returncode == 1 and "older litequeue" in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
        assert sha256(project.db) == before

    def test_call_with_a_negative_number(self, project, here):
        project.delay("add", 0, 0)      # registers the name, as a worker's supervisor would
        here(project).start()           # a worker child's loop on a thread: no process
        done = lq_here("call", project.db, "add", "-1", "2", "--wait", "--timeout", 20,
                       cwd=project.dir)
        assert (done.returncode, done.stdout) == (0, "1\n"), done.stderr

    def test_huge_priority_is_a_usage_error_and_writes_nothing(self, project):
        project.delay("add", 1, 1)
        before = sql(project.db, "SELECT count(*) FROM tasks")
        done = lq_here("call", project.db, "add", 1, 2, "--priority", "99999999999999999999",
                       cwd=project.dir)
        assert done.returncode == 2, (done.stdout, done.stderr)   # bad arguments exit 2
        assert "Traceback" not in done.stderr, done.stderr
        assert "must be between" in done.stderr.strip().splitlines()[-1], done.stderr
        assert sql(project.db, "SELECT count(*) FROM tasks") == before

    @pytest.mark.parametrize("option", ["--id", "--queue"])
    def test_empty_id_or_queue_is_a_usage_error(self, project, option):
        project.delay("add", 1, 1)
        before = sql(project.db, "SELECT count(*) FROM tasks")
        done = lq_here("call", project.db, "add", 1, 2, option, "", cwd=project.dir)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert sql(project.db, "SELECT count(*) FROM tasks") == before

    @pytest.mark.parametrize("command", [["status"], ["result", "someid"], ["schedules"]],
                             ids=["status", "result", "schedules"])
    def test_read_commands_never_create_or_change_a_file(self, tmp_path, command):
        empty = tmp_path / "empty.sqlite"
        empty.touch()
        done = lq_here(command[0], empty, *command[1:], cwd=tmp_path)
        assert empty.stat().st_size == 0, "a 0-byte file was turned into a database"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]
        assert "Traceback" not in done.stderr, done.stderr
        assert len((done.stdout + done.stderr).strip().splitlines()) == 1, \
            (done.stdout, done.stderr)

        missing = tmp_path / "missing.sqlite"
        done = lq_here(command[0], missing, *command[1:], cwd=tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]
        assert "Traceback" not in done.stderr, done.stderr
        assert len((done.stdout + done.stderr).strip().splitlines()) == 1, \
            (done.stdout, done.stderr)

    @pytest.mark.worker
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
        done = lq_here("status", project.db, cwd=project.dir)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        task_lines = lines[lines.index("tasks:") + 1:lines.index("workers:")]
        assert len(task_lines) == 3, done.stdout
        offsets = {re.match(r"\s*\S+\s+", line).end() for line in task_lines}
        assert len(offsets) == 1, done.stdout

    @pytest.mark.worker
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


class TestCLI:

    def test_call_and_result(self, project, here):
        """call and result's options, with the worker's loop in this process (on a thread);
        test_call_result_and_status runs them as processes, with a worker's."""
        here(project).start()                 # registers the names, as a supervisor would
        db, cwd = project.db, project.dir
        done = lq_here("call", db, "tasks.add", 4, 4, "--wait", "--timeout", 20, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "8\n"), done.stderr
        done = lq_here("call", db, "add", 4, 4, "--wait", "--timeout", 20, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "8\n"), done.stderr
        done = lq_here("call", db, "add", "--args", "[1, 2]", "--wait", "--timeout", 20,
                       cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "3\n"), done.stderr
        done = lq_here("call", db, "add", "--kwargs", '{"x": "a", "y": "b"}', "--wait",
                       "--timeout", 20, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, '"ab"\n'), done.stderr

        done = lq_here("call", db, "add", 20, 22, "--id", "cli-id", "--queue", "default",
                       "--priority", 3, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "cli-id\n"), done.stderr
        done = lq_here("result", db, "cli-id", "--wait", "--timeout", 20, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr
        done = lq_here("result", db, "cli-id", "--json", cwd=cwd)
        out = json.loads(done.stdout)
        assert (out["id"], out["state"], out["result"]) == ("cli-id", SUCCESS, 42)

        done = lq_here("call", db, "fail", "boom", "--wait", "--timeout", 20, cwd=cwd)
        assert done.returncode == 1
        assert done.stdout.startswith("FAILURE: ") and "boom" in done.stdout
        assert "raise TaskFailed(message)" in done.stderr

        assert_status_counts(lq_here("status", db, cwd=cwd), succeeded=5, failed=1)

    @pytest.mark.worker
    def test_call_result_and_status(self, project, workers):
        """The commands as processes, and a worker's: status names its supervisor and
        child (call and result's options: test_call_and_result)."""
        w = workers.start(project, concurrency=1)
        db, cwd = project.db, project.dir
        done = lq("call", db, "tasks.add", 4, 4, "--wait", "--timeout", 20, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "8\n"), done.stderr
        done = lq("call", db, "fail", "boom", cwd=cwd)
        assert done.returncode == 0, done.stderr
        failed = done.stdout.strip()
        done = lq("result", db, failed, "--wait", "--timeout", 20, cwd=cwd)
        assert done.returncode == 1
        assert done.stdout.startswith("FAILURE: ") and "boom" in done.stdout
        assert "raise TaskFailed(message)" in done.stderr

        done = assert_status_counts(lq("status", db, cwd=cwd), succeeded=1, failed=1)
        assert f"pid {w.pid}" in done.stdout and "alive" in done.stdout
        (child,) = w.children()
        assert f"child {child['id']} pid {child['pid']}: idle" in done.stdout

    @pytest.mark.worker
    def test_demo(self, tmp_path):
        """README's first command: a worker on demo tasks, and the user sees them done."""
        done = lq("demo", tmp_path / "demo.sqlite", "-n", 6, cwd=tmp_path, timeout=90)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("SUCCESS") == 5, done.stdout
        assert "FAILURE  ZeroDivisionError" in done.stdout, done.stdout
        status = lq("status", tmp_path / "demo.sqlite", cwd=tmp_path)
        assert "workers:\n  (none)" in status.stdout, status.stdout

    def test_status_of_an_empty_database(self, project):
        litequeue._Storage(project.db).close()
        done = lq_here("status", project.db, cwd=project.dir)
        assert done.returncode == 0
        assert done.stdout.splitlines() == ["tasks:", "  (none)", "workers:", "  (none)"]

    @pytest.mark.parametrize("args, message", [
        (["worker", "{db}", "--bogus"], "No such option"),
        (["worker", "{db}", "-c", "0"], "-c"),
        (["worker", "{db}", "-c", "two"], "-c"),
        (["worker", "{db}", "-l", "LOUD"], "-l"),
        (["call", "{db}", "add", "--args", "not json"], "not valid JSON"),
        (["call", "{db}", "add", "--args", '{"x": 1}'], "must be a JSON array"),
        (["call", "{db}", "add", "--kwargs", "[1]"], "must be a JSON object"),
        (["call", "{db}", "add", "1", "--args", "[1]"], "either positionally or with --args"),
        (["call", "{db}"], "Missing argument"),
        (["result"], "Missing argument"),
        (["frobnicate", "{db}"], "No such command"),
    ], ids=["unknown-option", "c-zero", "c-text", "bad-loglevel", "args-not-json",
            "args-not-array", "kwargs-not-object", "args-twice", "no-task", "no-db",
            "unknown-command"])
    def test_usage_errors_exit_2(self, project, args, message):
        project.delay("add", 1, 1)
        before = sha256(project.db)
        done = lq_here(*[a.replace("{db}", project.db) for a in args], cwd=project.dir)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "Usage:" in done.stderr and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert sha256(project.db) == before

    def test_runtime_errors_exit_1_with_one_line(self, project, tmp_path):
        project.delay("add", 1, 1)
        db, cwd = project.db, project.dir
        corrupt = tmp_path / "corrupt.sqlite"
        corrupt.write_bytes(b"not a database at all\n" * 10)
        missing = tmp_path / "missing.sqlite"
        assert_one_line_error(lq_here("call", db, "nope", cwd=cwd),
                              contains="unknown task 'nope'")
        assert_one_line_error(lq_here("call", db, "tasks.ad", 1, 2, cwd=cwd),
                              contains="did you mean tasks.add")
        assert_one_line_error(lq_here("status", missing, cwd=cwd), contains="no database")
        assert_one_line_error(lq_here("call", missing, "add", cwd=cwd), contains="no database")
        assert not missing.exists()
        assert_one_line_error(lq_here("status", corrupt, cwd=cwd),
                              contains="not a SQLite database")
        assert_one_line_error(lq_here("result", db, "no-such-id", cwd=cwd), contains="no task")
        queued = lq_here("call", db, "add", 1, 2, cwd=cwd)        # no worker runs here
        assert queued.returncode == 0, queued.stderr
        pending = lq_here("result", db, queued.stdout.strip(), cwd=cwd)
        assert (pending.returncode, pending.stdout) == (0, "PENDING\n"), pending.stderr
        foreign = tmp_path / "foreign.sqlite"
        conn = sqlite3.connect(foreign)
        conn.execute("CREATE TABLE t (x)")
        conn.close()
        assert_one_line_error(lq_here("status", foreign, cwd=cwd), contains="did not create")
        assert_one_line_error(lq_here("call", db, "add", 1, 1, "--wait", "--timeout", "0.2",
                                      cwd=cwd), contains="not ready")

    @pytest.mark.worker
    def test_the_worker_s_runtime_errors_exit_1_with_one_line(self, project, tmp_path):
        """The worker command's (the other commands': test_runtime_errors_exit_1_with_one_line)."""
        project.delay("add", 1, 1)
        db, cwd = project.db, project.dir
        corrupt = tmp_path / "corrupt.sqlite"
        corrupt.write_bytes(b"not a database at all\n" * 10)
        assert_one_line_error(lq("worker", tmp_path / "no" / "such" / "dir.sqlite", cwd=cwd,
                                 timeout=30), contains="cannot open")
        assert_one_line_error(lq("worker", corrupt, "-c", 1, cwd=cwd, timeout=30),
                              contains="not a SQLite database")
        worker = lq("worker", db, "-A", "no_such_module", "-c", 1, cwd=cwd, timeout=30)
        assert worker.returncode == 1 and "Traceback" not in worker.stderr, worker.stderr
        assert worker.stderr.strip().splitlines()[-1].startswith("Error: cannot import")

    # -- scheduling (issue 3) ---------------------------------------------------------------

    def test_call_with_countdown_eta_expires_and_tz(self, project, here):
        project.delay("add", 0, 0)      # registers the name, as a worker's supervisor would
        here(project).start()           # a worker child's loop on a thread: no process
        db, cwd = project.db, project.dir

        def timing(task_id):
            return sql(db, "SELECT state, eta, expires FROM tasks WHERE id = ?", task_id)[0]

        sent = time.time()
        done = lq_here("call", db, "add", 1, 2, "--countdown", 3, cwd=cwd)
        assert done.returncode == 0, done.stderr
        countdown_id = done.stdout.strip()
        state, eta, _ = timing(countdown_id)
        assert state == SCHEDULED and sent + 3 <= eta <= time.time() + 3
        shown = lq_here("result", db, countdown_id, cwd=cwd)
        assert (shown.returncode, shown.stdout) == (0, "SCHEDULED\n"), shown.stderr

        # --eta in ISO 8601 with an offset is that instant.
        eta = dt.datetime.now(dt.timezone(dt.timedelta(hours=5, minutes=30))) + \
            dt.timedelta(seconds=2)
        done = lq_here("call", db, "add", 2, 2, "--eta", eta.isoformat(), cwd=cwd)
        assert done.returncode == 0, done.stderr
        offset_id = done.stdout.strip()
        assert timing(offset_id)[:2] == (SCHEDULED, pytest.approx(eta.timestamp(), abs=1e-6))
        # Without an offset it is read in --tz (else UTC).
        done = lq_here("call", db, "add", 3, 3, "--eta", "2030-01-01T09:00:00",
                       "--tz", "Asia/Shanghai", cwd=cwd)
        assert timing(done.stdout.strip())[:2] == (SCHEDULED, utc_ts(2030, 1, 1, 1, 0))
        done = lq_here("call", db, "add", 3, 3, "--eta", "2030-01-01T09:00:00", cwd=cwd)
        assert timing(done.stdout.strip())[:2] == (SCHEDULED, utc_ts(2030, 1, 1, 9, 0))

        # --expires: seconds from now, or an ISO time; one in the past never runs.
        done = lq_here("call", db, "add", 4, 4, "--expires", 60, cwd=cwd)
        assert timing(done.stdout.strip())[2] == pytest.approx(time.time() + 60, abs=10)
        done = lq_here("call", db, "add", 5, 5, "--expires", "2020-01-01T00:00:00+00:00",
                       cwd=cwd)
        expired_id = done.stdout.strip()
        assert timing(expired_id)[2] == utc_ts(2020, 1, 1, 0, 0)
        # The worker's loop may have claimed it a moment ago (STARTED): it ends EXPIRED
        # without running, at its next commit.
        wait_until(lambda: project.state(expired_id) == "EXPIRED", 15,
                   "the expired task to end EXPIRED")
        shown = lq_here("result", db, expired_id, cwd=cwd)
        assert (shown.returncode, shown.stdout) == (0, "EXPIRED\n"), shown.stderr

        for task_id, value in [(countdown_id, "3"), (offset_id, "4")]:
            done = lq_here("result", db, task_id, "--wait", "--timeout", 15, cwd=cwd)
            assert (done.returncode, done.stdout) == (0, value + "\n"), done.stderr
        (started_at, eta_at), = sql(db, "SELECT started_at, ? FROM tasks WHERE id = ?",
                                    eta.timestamp(), offset_id)
        assert started_at >= eta_at
        wait_until(lambda: project.state(expired_id) == EXPIRED, 10, "the worker to mark it")

    @pytest.mark.parametrize("args, message", [
        (["--eta", "tomorrow"], "is not an ISO 8601 date and time"),
        (["--eta", "2030-13-01T00:00:00"], "is not an ISO 8601 date and time"),
        (["--expires", "soon"], "is not an ISO 8601 date and time"),
        (["--eta", "2030-01-01T09:00:00", "--tz", "Mars/Olympus_Mons"],
         "unknown time zone 'Mars/Olympus_Mons'"),
        (["--countdown", "1", "--eta", "2030-01-01T09:00:00+00:00"], "--countdown or --eta"),
        (["--countdown", "-1"], "--countdown"),
        (["--countdown", "soon"], "--countdown"),
    ], ids=["eta-text", "eta-month-13", "expires-text", "unknown-zone", "countdown-and-eta",
            "negative-countdown", "countdown-text"])
    def test_call_bad_timing_exits_2_and_writes_nothing(self, project, args, message):
        project.delay("add", 1, 1)
        before = sha256(project.db)
        done = lq_here("call", project.db, "add", 1, 2, *args, cwd=project.dir)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "Usage:" in done.stderr and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert sha256(project.db) == before

    def test_call_with_expires_before_eta_exits_1_and_writes_nothing(self, project):
        project.delay("add", 1, 1)
        before = sha256(project.db)
        assert_one_line_error(lq_here("call", project.db, "add", 1, 2,
                                      "--eta", "2030-01-01T09:00:00+00:00",
                                      "--expires", "2030-01-01T08:00:00+00:00", cwd=project.dir),
                              contains="expires is earlier than eta")
        assert sha256(project.db) == before

    @staticmethod
    def _parse_schedules(text):
        """{name: {"task", "schedule", "zone", "last", "next": [...]}} from `schedules`."""
        out, current = {}, None
        for line in text.splitlines():
            if not line.startswith(" "):
                name, _, task = line.partition("  ->  ")
                current = out[name] = {"task": task, "next": []}
            elif line.startswith("  schedule  "):
                current["schedule"] = line[len("  schedule  "):]
            elif line.startswith("  zone      "):
                current["zone"] = line[len("  zone      "):]
            elif line.startswith("  last fire "):
                current["last"] = line[len("  last fire "):]
            else:
                current["next"].append(line.split()[-1])
        return out

    @pytest.mark.worker
    def test_schedules_lists_next_fires_in_their_own_zone(self, project, workers):
        project.write_module("beat", '''
            from litequeue import crontab
            from tasks import app, record

            app.add_periodic_task(crontab(minute=0, hour=9, day_of_week="mon-fri",
                                          tz="Asia/Shanghai"), record.s("m"), name="morning")
            app.add_periodic_task(crontab(minute=30, hour=2, tz="America/New_York"),
                                  record.s("n"), name="nightly", catch_up="all")
            app.add_periodic_task(1.0, record.s("t"), name="tick")
        ''')
        before = dt.datetime.now(UTC)
        w = workers.start(project, app=("tasks", "beat"), concurrency=1)
        after = dt.datetime.now(UTC)
        wait_until(lambda: any(s == SUCCESS for s, _ in fires_of(project.db, "tick").values()),
                   10, "a tick")
        w.signal(signal.SIGTERM)
        assert w.wait(20) == 0
        done = lq("schedules", project.db, "-n", 4, cwd=project.dir)
        assert done.returncode == 0, done.stderr
        listed = self._parse_schedules(done.stdout)
        assert list(listed) == ["morning", "nightly", "tick"], done.stdout
        assert {name: (s["task"], s["zone"]) for name, s in listed.items()} == {
            "morning": ("tasks.record", "Asia/Shanghai"),
            "nightly": ("tasks.record", "America/New_York"), "tick": ("tasks.record", "UTC")}
        assert listed["morning"]["schedule"].startswith("0 9 * * mon-fri  (cron, catch_up=once")
        assert listed["nightly"]["schedule"].startswith("30 2 * * *  (cron, catch_up=all")
        assert listed["tick"]["schedule"].startswith("1.0  (every, catch_up=once")

        # The next four fire times, in the schedule's own zone, as next_after gives them
        # from the time the worker synced them.
        for name, cron in [
                ("morning", crontab(minute=0, hour=9, day_of_week="mon-fri", tz="Asia/Shanghai")),
                ("nightly", crontab(minute=30, hour=2, tz="America/New_York"))]:
            candidates = []
            for t in (before, after):
                upcoming = [cron.next_after(t)]
                for _ in range(3):
                    upcoming.append(cron.next_after(upcoming[-1]))
                candidates.append([f.isoformat() for f in upcoming])
            assert listed[name]["next"] in candidates, (name, done.stdout)
        assert listed["morning"]["next"][0].endswith("T09:00:00+08:00")

        # The tick fired: its last fire and the times after it, in UTC.
        (last_fire, next_fire), = sql(project.db, "SELECT last_fire, next_fire FROM schedules "
                                      "WHERE name = 'tick'")
        assert listed["tick"]["last"] == dt.datetime.fromtimestamp(last_fire, UTC).isoformat()
        assert listed["tick"]["next"] == [
            dt.datetime.fromtimestamp(next_fire + k, UTC).isoformat() for k in range(4)]
        assert fire_time(max(fires_of(project.db, "tick"))) == last_fire

        fewer = self._parse_schedules(lq("schedules", project.db, "-n", 1, cwd=project.dir).stdout)
        assert all(len(s["next"]) == 1 for s in fewer.values())
        litequeue._Storage(str(project.dir / "empty.sqlite")).close()
        empty = lq("schedules", project.dir / "empty.sqlite", cwd=project.dir)
        assert empty.returncode == 0 and "no periodic tasks" in empty.stdout

    @pytest.mark.worker
    def test_schedules_shows_never_for_a_schedule_that_has_not_fired(self, project, workers):
        project.write_module("beat", '''
            from litequeue import crontab
            from tasks import app, record
            app.add_periodic_task(crontab(minute=0, hour=9, day_of_month=1, month_of_year=1,
                                          tz="Asia/Shanghai"), record.s("m"), name="new-year")
        ''')
        w = workers.start(project, app=("tasks", "beat"), concurrency=1)
        w.signal(signal.SIGTERM)
        assert w.wait(20) == 0
        done = lq("schedules", project.db, cwd=project.dir)
        assert done.returncode == 0, done.stderr
        listed = self._parse_schedules(done.stdout)
        assert fires_of(project.db, "new-year") == {}                 # it never fired
        assert listed["new-year"]["last"] == "never", done.stdout

    # -- failure handling (issue 4) ---------------------------------------------------------

    def test_result_shows_every_attempt_s_error(self, project, here):
        db, cwd = project.db, project.dir
        recovered = project.delay("flaky", "cli", 2)
        failed = project.delay("flaky", "clifail", 99)
        # A worker's steps in this process, again until the retries' countdowns have come.
        here(project).work_until(lambda: recovered.ready() and failed.ready(), 20,
                                 "both tasks to end, retries included")
        assert recovered.get(timeout=20) == 2
        failed.get(timeout=20, propagate=False)
        done = lq_here("result", db, recovered.id, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "2\n"), done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 2, done.stderr
        for n, line in enumerate(lines):
            assert line.startswith(f"  attempt {n + 1} at 20"), line
            assert line.endswith(f": builtins.OSError: cli failed on retry {n}"), line
        done = lq_here("result", db, failed.id, cwd=cwd)
        assert done.returncode == 1
        assert done.stdout.startswith("FAILURE: ") and "clifail failed on retry 3" in done.stdout
        assert "raise IOError" in done.stderr                       # the traceback
        assert done.stderr.count("  attempt ") == 4
        out = json.loads(lq_here("result", db, recovered.id, "--json", cwd=cwd).stdout)
        assert (out["state"], out["result"], out["retries"]) == (SUCCESS, 2, 2)
        assert [(e["type"], e["message"], e["attempt"]) for e in out["errors"]] == \
            [("builtins.OSError", f"cli failed on retry {n}", n + 1) for n in range(2)]
        assert all(isinstance(e["time"], float) for e in out["errors"])
        out = json.loads(lq_here("result", db, failed.id, "--json", cwd=cwd).stdout)
        assert (out["state"], out["retries"], len(out["errors"])) == (FAILURE, 3, 4)

    def test_retry_queues_a_finished_task_again(self, project, here):
        db, cwd = project.db, project.dir
        revoked = project.delay("add", 2, 3)                         # no worker running
        assert revoked.revoke() is True
        failed = project.delay("fail", "again")
        w = here(project).start()       # a worker child's loop on a thread: no process
        assert failed.get(timeout=20, propagate=False) is not None and failed.state == FAILURE
        done_ok = project.delay("add", 1, 1)
        assert done_ok.get(timeout=20) == 2
        for res in (revoked, failed):
            done = lq_here("retry", db, res.id, cwd=cwd)
            assert (done.returncode, done.stdout) == (0, f"queued {res.id} again\n"), done.stderr
        # Fresh handles: an AsyncResult keeps a finished row it has read, as Celery's does.
        revoked, failed = (project.app.AsyncResult(r.id) for r in (revoked, failed))
        assert revoked.get(timeout=20) == 5 and revoked.state == SUCCESS
        assert failed.get(timeout=20, propagate=False) is not None
        assert failed.state == FAILURE and len(failed.errors) == 2   # both attempts kept
        done = lq_here("retry", db, done_ok.id, cwd=cwd)
        assert done.returncode == 1 and "the task is SUCCESS" in done.stderr, done.stderr
        assert_one_line_error(lq_here("retry", db, "no-such-id", cwd=cwd), contains="no task")
        assert w.alive()       # the worker's loop still runs

    def test_purge_deletes_waiting_tasks_only(self, project, here):
        db, cwd = project.db, project.dir
        w = here(project).start()     # a worker child's loop on a thread
        finished = project.delay("add", 1, 1)
        assert finished.get(timeout=20) == 2
        running = project.delay("block", "purge")
        wait_until(lambda: project.started("purge"), 10, "the task to start")
        other = [project.app.tasks["tasks.add"].apply_async((n, n), queue="other")
                 for n in range(3)]
        later = [project.app.tasks["tasks.add"].apply_async((n, n), countdown=600)
                 for n in range(2)]
        waiting = [project.delay("add", n, n) for n in range(4)]       # behind the block
        done = lq_here("purge", db, cwd=cwd)                             # no tty: it asks
        assert done.returncode == 1 and "Aborted" in done.stderr, done.stderr
        assert {r.detailed_state for r in waiting + later} == {PENDING, SCHEDULED}
        done = lq_here("purge", db, "--queue", "other", "--yes", cwd=cwd)
        assert (done.returncode, done.stdout) == \
            (0, "purged 3 waiting task(s) from queue 'other'\n"), done.stderr
        assert {r.detailed_state for r in other} == {UNKNOWN}
        done = lq_here("purge", db, "-y", cwd=cwd)
        assert (done.returncode, done.stdout) == \
            (0, "purged 6 waiting task(s) from every queue\n"), done.stderr
        assert {r.detailed_state for r in waiting + later} == {UNKNOWN}
        assert finished.state == SUCCESS and running.state == STARTED
        project.go("purge")
        assert running.get(timeout=20) == "purge"
        assert w.alive()       # the worker's loop still runs

    def test_revoke(self, project, here):
        db, cwd = project.db, project.dir
        queued = project.delay("stamp", "cli")                      # no worker running
        done = lq_here("revoke", db, queued.id, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, f"revoked {queued.id}\n"), done.stderr
        assert queued.state == REVOKED
        done = lq_here("revoke", db, queued.id, cwd=cwd)
        assert (done.returncode, done.stdout) == (1, "not revoked: the task is REVOKED\n")
        assert_one_line_error(lq_here("revoke", db, "no-such-id", cwd=cwd), contains="no task")
        w = here(project)               # a worker child's steps, in this process
        finished = project.delay("add", 1, 1)
        w.work()
        assert finished.get(timeout=20) == 2
        done = lq_here("revoke", db, finished.id, cwd=cwd)
        assert (done.returncode, done.stdout) == (1, "not revoked: the task is SUCCESS\n")
        done = lq_here("result", db, queued.id, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "REVOKED\n"), done.stderr
        assert project.stamps("cli") == []

    @pytest.mark.worker
    def test_revoke_terminate_kills_the_running_task_s_child(self, project, workers):
        """A running task, with a worker's processes (the rest: test_revoke)."""
        db, cwd = project.db, project.dir
        w = workers.start(project, concurrency=1)
        running = project.delay("block", "cli")
        ((_, pid),) = wait_until(lambda: project.started("cli"), 10, "the task to start")
        done = lq("revoke", db, running.id, cwd=cwd)
        assert done.returncode == 1 and "STARTED (use --terminate)" in done.stdout, done.stdout
        done = lq("revoke", db, running.id, "--terminate", cwd=cwd)
        assert (done.returncode, done.stdout) == (0, f"revoked {running.id}\n"), done.stderr
        wait_until(lambda: not alive(pid), 5, "the child to be killed")
        wait_until(lambda: len(w.live_children()) == 1, 10, "a replacement child")
        done = lq("result", db, running.id, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "REVOKED\n"), done.stderr
