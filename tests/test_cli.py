"""Tests of what a new user meets in the first hour: README's commands, the demo, the CLI's
messages and options, config warnings, and the parts of Flower's API that scripts call.

Helpers come from helpers.py, fixtures from conftest.py. Nothing waits a fixed time:
processes are awaited with wait_until or their own exit.
"""

import base64
import http.client
import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import msgpack
import pytest

import litequeue
from litequeue import FAILURE, REVOKED, SCHEDULED, SUCCESS, ConfigurationError, LiteQueue

from .helpers import (
    LITEQUEUE_PY, PLAIN_TASKS, Folder, lq, run, sha256, sql, task_source, utc_ts, wait_until,
    worker_cmd,
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


def call_args(db, task_id):
    (payload,), = sql(db, "SELECT payload FROM tasks WHERE id = ?", task_id)
    envelope = msgpack.unpackb(payload, raw=False)
    return envelope.get("args", []), envelope.get("kwargs", {})


# ---------------------------------------------------------------------------
# README's opening commands
# ---------------------------------------------------------------------------

class TestReadmeCommands:

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

    def test_demo_refuses_a_database_a_worker_serves(self, project, workers):
        workers.start(project)
        project.delay("add", 1, 1).get(timeout=30)
        before = sql(project.db, "SELECT count(*) FROM tasks")
        done = lq("demo", project.db, cwd=project.dir, timeout=60)
        one_line(done, 2, "worker")
        assert sql(project.db, "SELECT count(*) FROM tasks") == before
        assert not any(name.startswith("litequeue_demo") for name in registered(project.db))

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
        one_line(lq("call", project.db, "add", 4, 4, cwd=project.dir), 1, "ambiguous")

        before = sha256(project.db)
        one_line(lq("unregister", project.db, "old.add", "nope", cwd=project.dir), 1, "'nope'")
        assert sha256(project.db) == before, "nothing is forgotten when one name is unknown"

        done = lq("unregister", project.db, "old.add", "litequeue_demo_tasks", cwd=project.dir)
        assert done.returncode == 0, done.stderr
        for name in ("old.add", "litequeue_demo_tasks.add", "litequeue_demo_tasks.divide"):
            assert name in done.stdout, done.stdout
        assert registered(project.db) == {"tasks.add"}
        assert lq("call", project.db, "add", 4, 4, cwd=project.dir).returncode == 0


# ---------------------------------------------------------------------------
# call: the zone of a naive --eta
# ---------------------------------------------------------------------------

def eta_of(db, done):
    assert done.returncode == 0, done.stderr
    return sql(db, "SELECT eta FROM tasks WHERE id = ?", done.stdout.strip())[0][0]


class TestCallTimeZone:

    def test_help_says_a_naive_eta_is_read_in_the_app_s_zone(self, tmp_path):
        done = lq("call", "--help", cwd=tmp_path)
        text = " ".join(done.stdout.split())
        assert "[default: UTC]" not in text, text
        assert "timezone" in text and "machine" in text, text

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
        done = lq("call", project.db, "add", "--queue", "q", "--", "-x", "--wait", "7",
                  cwd=project.dir)
        assert done.returncode == 0, done.stderr
        task_id = done.stdout.strip()
        assert call_args(project.db, task_id) == (["-x", "--wait", 7], {})
        assert project.row(task_id)["queue"] == "q"
        usage_error(lq("call", project.db, "add", "-x", cwd=project.dir), "No such option")

    def test_a_priority_out_of_range_is_a_usage_error(self, project):
        project.delay("add", 1, 1)
        before = sha256(project.db)
        done = lq("call", project.db, "add", 1, 2, "--priority", "99999999999999999999",
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
        done = lq("tasks", project.db, "--state", "PROGRESS", cwd=project.dir)
        assert done.returncode == 0, done.stderr
        assert [line.split()[:2] for line in done.stdout.splitlines()] == \
            [[ids[1], "PROGRESS"]], done.stdout
        done = lq("tasks", project.db, "--state", "pending", cwd=project.dir)
        assert [line.split()[0] for line in done.stdout.splitlines()] == [ids[2], ids[0]]
        done = lq("tasks", project.db, "--state", "NOPE", cwd=project.dir)
        assert (done.returncode, done.stdout) == (0, ""), done.stderr

    def test_inspect_prints_arguments_as_json_values(self, project):
        task_id = project.app.tasks["tasks.echo"].apply_async(
            (1, "two", [3]), {"key": {"k": None}}, countdown=600).id
        done = lq("inspect", project.db, "scheduled", cwd=project.dir)
        assert done.returncode == 0, done.stderr
        (row,) = json.loads(done.stdout)
        assert row["id"] == task_id
        assert (row["args"], row["kwargs"]) == ([1, "two", [3]], {"key": {"k": None}})

    def test_pausing_a_queue_no_task_names_says_so_in_one_line(self, project):
        project.delay("add", 1, 1)
        done = lq("pause", project.db, "nosuchqueue", cwd=project.dir)
        assert done.returncode == 0, done.stderr
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert len(lines) == 1 and "paused" in lines[0], lines
        assert "no task" in lines[0] and "default" in lines[0], lines
        assert "nosuchqueue" in project.app.admin.paused()
        done = lq("pause", project.db, "default", cwd=project.dir)
        assert done.stdout.strip() == "queue default paused", done.stdout


CONFIG_WITH_IGNORED = task_source("ignored_settings/celeryconfig.py")


class TestConfigNotices:

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
