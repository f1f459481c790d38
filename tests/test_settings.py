"""Settings: Celery's names and config modules, beat_schedule and task_routes from a
config, and the checks that refuse a bad setting at once.
"""

import sys
import textwrap
import types

import msgpack
import pytest

import litequeue
from litequeue import SUCCESS, ConfigurationError, LiteQueue

from .helpers import PLAIN_TASKS, Folder, lq, run, sql, wait_until, worker_cmd

pytestmark = pytest.mark.timeout(120)


BEAT_TASKS = PLAIN_TASKS.replace('app = LiteQueue("jobs.sqlite")\n',
                                 'app = LiteQueue("jobs.sqlite")\n'
                                 'app.config_from_object("celeryconfig")\n')


class TestCelerySettings:

    @pytest.mark.worker
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

    @pytest.mark.worker
    def test_the_worker_s_config_module_applies_to_the_app_without_it_loading_it(
            self, tmp_path, workers):
        """The seed's layout: tasks.py never calls config_from_object; the worker reads
        celeryconfig.py, and its schedule, routes and zone are the app's in the worker."""
        config = textwrap.dedent('''
            CELERY_IMPORTS = ("tasks",)
            CELERY_TIMEZONE = "Asia/Shanghai"
            CELERY_ROUTES = {"tasks.*": {"queue": "math"}}
            CELERYBEAT_SCHEDULE = {"tick": {"task": "tasks.add", "schedule": 1.0, "args": (2, 2)}}
        ''')
        folder = Folder(tmp_path / "proj", {"tasks": PLAIN_TASKS, "celeryconfig": config})
        w = workers.start(folder, cmd=worker_cmd(folder.db, "-Q", "math", "-c", 1))
        assert sql(folder.db, "SELECT name, tz, queue FROM schedules") == \
            [("tick", "Asia/Shanghai", "math")], w.log_text()
        wait_until(lambda: sql(folder.db, "SELECT 1 FROM tasks WHERE id LIKE 'tick@%' AND "
                                          "state = ?", SUCCESS), 10,
                   lambda: f"a routed fire to run on queue math\n{w.log_text()}")

    def test_django_style_and_unsupported_celery_names_warn_instead_of_failing(self, tmp_path):
        app = LiteQueue(str(tmp_path / "x.sqlite"))
        with pytest.warns(litequeue.LitequeueWarning) as caught:
            app.config_from_object({"CELERY_TASK_ROUTES": {"tasks.add": "fast"},
                                    "CELERY_TASK_ACKS_LATE": True,
                                    "CELERYBEAT_SCHEDULER": "django_celery_beat.Scheduler",
                                    "CELERY_SOMETHING_NEW": 1})
        assert app.conf.task_routes == {"tasks.add": "fast"}
        text = " ".join(str(w.message) for w in caught)
        assert all(name in text for name in ("CELERY_TASK_ACKS_LATE", "CELERYBEAT_SCHEDULER",
                                             "CELERY_SOMETHING_NEW")), text

    def test_periodic_fires_follow_task_routes(self, tmp_path):
        app = LiteQueue(str(tmp_path / "x.sqlite"), task_routes={"tasks.*": {"queue": "math"}})
        app.add_periodic_task(60, "tasks.add", name="minutely")
        assert app._all_periodic()["minutely"]["queue"] == "math"

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

    @pytest.mark.worker
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

    def test_max_retries_none_honours_every_retry_request(self, project, here):
        project.write_module("forever", '''
            from litequeue import LiteQueue

            app = LiteQueue("jobs.sqlite")


            @app.task(bind=True, max_retries=None)
            def persistent(self, times):
                if self.request.retries < times:
                    raise self.retry(countdown=0.01)
                return self.request.retries
        ''')
        # The worker's loop on a thread, and the calling program, both in this process.
        w = here(project, ("tasks", "forever")).start()
        task_id, state = w.client("""
            import forever
            r = forever.persistent.delay(6)
            r.get(timeout=30, propagate=False)
            print(json.dumps([r.id, r.state]))
        """)
        row = project.row(task_id)
        assert (state, row["state"], row["retries"]) == (SUCCESS, SUCCESS, 6), row
        assert msgpack.unpackb(row["result"]) == 6

    @pytest.mark.worker
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
