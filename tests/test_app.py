"""The app and the task API: LiteQueue, Task, delay() and apply_async() options,
AsyncResult, eager mode, periodic registration and the database's path.
"""

import datetime as dt
import importlib
import os
import sys
import textwrap
import time
import types
import zoneinfo

import msgpack
import pytest
from hypothesis import given, settings as hsettings, strategies as st

import litequeue
from litequeue import (
    EXPIRED, FAILURE, PENDING, REVOKED, SCHEDULED, SUCCESS, UNKNOWN, ConfigurationError,
    DuplicateTaskId,
    GroupResult, LiteQueue, SerializationError, TaskNotFound, TaskRevoked, UnknownTask, crontab,
    group,
)

from .helpers import (
    PLAIN_TASKS, UTC, Folder, insert_finished, lq, msgpack_values, pack, same, sha256, sql,
    sql_write, tables_rows, utc_ts, wait_until,
)

pytestmark = pytest.mark.timeout(120)


class TestApp:

    def test_the_admin_surface(self, project):
        """What the CLI (and later the dashboard) uses: counts, listing, requeue, purge."""
        app = project.app
        first = project.delay("add", 1, 1)
        mailed = app.tasks["tasks.record"].apply_async([1], queue="mail")
        failed = insert_finished(project.db, FAILURE, result=pack({"type": "x.Y"}))
        admin = app.admin
        assert sorted(admin.counts()) == [("default", FAILURE, 1), ("default", PENDING, 1),
                                          ("mail", PENDING, 1)]
        assert [t["id"] for t in admin.tasks()] == [failed, mailed.id, first.id]
        assert [t["id"] for t in admin.tasks(queue="mail")] == [mailed.id]
        assert [t["id"] for t in admin.tasks(state=PENDING, limit=1)] == [mailed.id]
        assert [t["id"] for t in admin.tasks(name="tasks.add")] == [failed, first.id]
        assert admin.registry()["tasks.add"] == "tasks"
        assert admin.requeue(failed) and app.AsyncResult(failed).state == PENDING
        assert not admin.requeue(first.id)                     # only finished ones
        with pytest.raises(TaskNotFound):
            admin.requeue("nobody")
        assert admin.purge("mail") == 1 and admin.purge() == 2
        assert admin.counts() == [] and admin.workers() == [] and admin.schedules() == []

    def test_group_queues_every_signature_in_one_transaction_or_none(self, tmp_path):
        app = LiteQueue(str(tmp_path / "g.sqlite"))

        @app.task
        def add(x, y):
            return x + y

        g = group(add.s(i, i) for i in range(300)).apply_async()
        assert isinstance(g, GroupResult) and len(g) == 300
        assert {r.state for r in g} == {PENDING} and not g.ready() and g.waiting()
        later = group(add.s(1, 1), add.s(2, 2)).apply_async(countdown=60)
        assert [r.detailed_state for r in later] == [SCHEDULED, SCHEDULED]
        assert len(group([add.s(5, 5)])()) == 1 and len(group().apply_async()) == 0
        count = lambda: sql(str(tmp_path / "g.sqlite"), "SELECT count(*) FROM tasks")[0][0]
        assert count() == 303
        # One bad member, at the end of a big group: nothing is written.
        with pytest.raises(SerializationError):
            group([add.s(i, i) for i in range(500)] + [add.s(1, {2})]).apply_async()
        with pytest.raises(DuplicateTaskId):
            group(add.s(1, 1).set(task_id="same"), add.s(2, 2).set(task_id="same")).apply_async()
        with pytest.raises(TypeError, match="signatures"):
            group(1, "add")
        assert group(add, add).tasks == [add.s(), add.s()]     # tasks themselves, as Celery
        assert count() == 303

    def test_group_in_eager_mode_runs_inline(self, tmp_path):
        app = LiteQueue(str(tmp_path / "eager.sqlite"), task_always_eager=True)

        @app.task
        def div(x, y):
            return x / y

        g = group(div.s(6, 3), div.s(1, 0)).apply_async()
        assert g.ready() and g.failed() and not g.successful() and g.completed_count() == 1
        assert g.get(propagate=False)[0] == 2.0
        with pytest.raises(ZeroDivisionError):
            g.get()
        assert g.revoke() == 0                  # they have run already
        assert not (tmp_path / "eager.sqlite").exists()

    def test_eager_mode_runs_inline_and_writes_nothing(self, tmp_path):
        db = tmp_path / "eager.sqlite"
        app = LiteQueue(str(db), task_always_eager=True)

        @app.task
        def echo(*args, **kwargs):
            return [list(args), kwargs]

        @app.task
        def boom(message):
            raise ValueError(message)  # the raise line

        when = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
        result = echo.delay(1, (2, 3), b"x", when, k={"a": None})
        assert result.get() == [[1, [2, 3], b"x", when], {"k": {"a": None}}]  # what a worker sees
        assert result.state == SUCCESS and result.successful() and result.ready()

        failed = boom.apply_async(["bad"])
        assert failed.state == FAILURE and failed.failed() and not failed.successful()
        assert isinstance(failed.result, ValueError)
        assert "raise ValueError(message)  # the raise line" in failed.traceback
        with pytest.raises(ValueError, match="bad"):
            failed.get()
        assert isinstance(failed.get(propagate=False), ValueError)
        with pytest.raises(SerializationError):
            echo.delay({1})
        assert not db.exists()

    def test_config_from_object(self, tmp_path, monkeypatch):
        db = str(tmp_path / "conf.sqlite")
        module = types.ModuleType("celeryconfig")
        module.CELERY_TASK_RESULT_EXPIRES = 3600
        module.CELERY_IMPORTS = "tasks"
        module.CELERY_TIMEZONE = "Asia/Shanghai"
        module.BROKER_URL = "redis://ignored"
        module.worker_prefetch = 4
        app = LiteQueue(db)
        app.config_from_object(module)
        assert app.conf["result_expires"] == 3600
        assert tuple(app.conf["imports"]) == ("tasks",)
        assert app.conf["timezone"] == "Asia/Shanghai"
        assert app.conf["worker_prefetch"] == 4
        assert "BROKER_URL" not in app.conf

        (tmp_path / "lq_test_settings.py").write_text("task_default_queue = 'mail'\n"
                                                      "CELERYD_CONCURRENCY = 3\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        app.config_from_object("lq_test_settings")
        assert app.conf["task_default_queue"] == "mail"
        assert app.conf["worker_concurrency"] == 3

        class Settings:
            task_max_retries = 7
        app.config_from_object(Settings)
        app.config_from_object({"synchronous": "FULL"})
        assert app.conf["task_max_retries"] == 7 and app.conf["synchronous"] == "FULL"

    @pytest.mark.parametrize("settings, message", [
        ({"bogus": 1}, "unknown setting 'bogus'"),
        ({"result_expire": 1}, "did you mean 'result_expires'"),
        ({"synchronous": "SOMETIMES"}, "synchronous"),
        ({"worker_concurrency": 0}, "worker_concurrency"),
        ({"busy_timeout": -1}, "busy_timeout"),
        ({"worker_poll_interval": 0}, "worker_poll_interval must be a number >= 0.01"),
    ], ids=["unknown", "misspelt", "synchronous", "concurrency", "busy-timeout", "poll-0"])
    def test_bad_settings(self, tmp_path, settings, message):
        with pytest.raises(ConfigurationError, match=message):
            LiteQueue(str(tmp_path / "x.sqlite"), **settings)
        app = LiteQueue(str(tmp_path / "x.sqlite"))
        with pytest.raises(ConfigurationError, match=message):
            app.conf.update(settings)                  # checked at once, as Celery's is not
        assert app.conf == LiteQueue(str(tmp_path / "y.sqlite")).conf
        if "unknown setting" in message:
            # A config module holds other names too (imports, helpers): they are skipped.
            app.config_from_object(settings)
            assert not set(settings) & set(app.conf)
        else:
            # A misspelt setting in a config module is refused with a suggestion.
            with pytest.raises(ConfigurationError, match=message):
                app.config_from_object(settings)

    def test_task_decorator(self, tmp_path):
        app = LiteQueue(str(tmp_path / "t.sqlite"))

        @app.task
        def plain(x):
            return x * 2

        @app.task(name="custom.name", bind=True)
        def bound(self, x):
            return [self.name, self.request.id, x]

        assert plain.name == f"{__name__}.{plain.__wrapped__.__qualname__}"
        assert plain.name in app.tasks and app.tasks["custom.name"] is bound
        assert plain(21) == 42                      # calling runs inline
        assert bound(1) == ["custom.name", None, 1]
        assert not (tmp_path / "t.sqlite").exists()  # and writes nothing
        with pytest.raises(ConfigurationError, match="unknown task option"):
            app.task(retries=3)
        with pytest.raises(ConfigurationError):
            app.task(42)

    def test_delay_commits_the_row(self, project):
        result = project.delay("add", 4, 4)
        # Another connection sees it at once: the row was committed before delay returned.
        name, queue, priority, state, payload = sql(
            project.db, "SELECT name, queue, priority, state, payload FROM tasks WHERE id = ?",
            result.id)[0]
        assert (name, queue, priority, state) == ("tasks.add", "default", 0, PENDING)
        assert msgpack.unpackb(payload) == {"args": [4, 4], "kwargs": {}}
        assert sql(project.db,
                   "SELECT module FROM registry WHERE name = 'tasks.add'") == [("tasks",)]

    def test_apply_async_options(self, tmp_path):
        app = LiteQueue(str(tmp_path / "opts.sqlite"))

        @app.task(queue="mail", priority=5)
        def send(to):
            return to

        r = send.apply_async(["a"], task_id="my-id")
        assert r.id == "my-id" and r.state == PENDING and r.name == send.name
        r2 = send.apply_async(args=("b",), kwargs={}, priority=-1, queue="other")
        rows = dict((row[0], row[1:]) for row in sql(
            app.path, "SELECT id, queue, priority FROM tasks"))
        assert rows == {"my-id": ("mail", 5), r2.id: ("other", -1)}
        with pytest.raises(DuplicateTaskId):
            send.apply_async(["c"], task_id="my-id")
        with pytest.warns(litequeue.LitequeueWarning, match="'countdown_typo' is not one"):
            send.apply_async(["c"], countdown_typo=3)     # Celery ignores it too: queued
        with pytest.raises(TypeError, match="args must be a list or tuple"):
            send.apply_async("abc")
        with pytest.raises(TypeError, match="kwargs must be a dict"):
            send.apply_async([], ["x"])
        assert sql(app.path, "SELECT count(*) FROM tasks") == [(3,)]

    def test_send_task(self, project, tmp_path):
        project.delay("add", 1, 1)                  # a producer registered tasks.add
        other = LiteQueue(project.db)               # this one does not import it
        result = other.send_task("tasks.add", [2, 3], queue="q", priority=3)
        assert project.row(result.id)["name"] == "tasks.add"
        assert (project.row(result.id)["queue"], project.row(result.id)["priority"]) == ("q", 3)
        with pytest.raises(UnknownTask, match=r"unknown task 'tasks.ad'.*did you mean tasks.add"):
            other.send_task("tasks.ad", [1, 2])
        assert sql(project.db, "SELECT count(*) FROM tasks") == [(2,)]

    def test_async_result_of_unknown_and_pending_ids(self, project):
        unknown = project.app.AsyncResult("no-such-id")
        assert unknown.detailed_state == UNKNOWN and not unknown.ready() and unknown.result is None
        assert unknown.state == unknown.status == PENDING       # Celery's answer for any id
        with pytest.raises(TaskNotFound):
            unknown.get(timeout=5)

        pending = project.delay("add", 1, 2)
        assert pending.state == PENDING and not pending.ready() and pending.result is None
        assert pending.date_done is None and pending.traceback is None
        started = time.monotonic()
        with pytest.raises(litequeue.TimeoutError, match="not ready"):
            pending.get(timeout=0.2)
        assert time.monotonic() - started < 5
        with pytest.raises(TimeoutError):           # the builtin catches it too
            pending.get(timeout=0.05)
        pending.forget()
        assert pending.detailed_state == UNKNOWN
        assert sql(project.db, "SELECT count(*) FROM tasks") == [(0,)]

    @pytest.mark.parametrize("args, kwargs", [
        (({1, 2},), {}), ((object(),), {}), ((), {"x": {1}}),
    ], ids=["set", "object", "kwarg-set"])
    def test_unencodable_arguments_write_no_row(self, project, args, kwargs):
        project.delay("add", 1, 1)
        with pytest.raises(SerializationError, match="tasks.add"):
            project.delay("add", *args, **kwargs)
        assert sql(project.db, "SELECT count(*) FROM tasks") == [(1,)]

    # -- scheduling options (issue 3) ------------------------------------------------------

    @staticmethod
    def _timing(db, task_id):
        state, eta, expires = sql(db, "SELECT state, eta, expires FROM tasks WHERE id = ?",
                                  task_id)[0]
        return state, eta, expires

    def test_countdown_eta_and_expires_set_the_row(self, tmp_path):
        db = str(tmp_path / "eta.sqlite")
        app = LiteQueue(db, timezone="Asia/Shanghai")

        @app.task
        def job(x):
            return x

        before = time.time()
        r = job.apply_async([1], countdown=30)
        after = time.time()
        state, eta, expires = self._timing(db, r.id)
        assert state == SCHEDULED and before + 30 <= eta <= after + 30 and expires is None
        assert r.detailed_state == SCHEDULED and not r.ready() and r.result is None
        r = job.apply_async([1], countdown=dt.timedelta(minutes=2))
        assert self._timing(db, r.id)[1] == pytest.approx(time.time() + 120, abs=5)

        # An aware eta is that instant; a naive one is wall time in the app's zone, so a
        # Shanghai user's 09:00 is 01:00 UTC, never eight hours off.
        aware = dt.datetime(2030, 1, 1, 9, 0, tzinfo=zoneinfo.ZoneInfo("America/New_York"))
        r = job.apply_async([1], eta=aware)
        assert self._timing(db, r.id)[:2] == (SCHEDULED, utc_ts(2030, 1, 1, 14, 0))
        r = job.apply_async([1], eta=dt.datetime(2030, 1, 1, 9, 0))
        assert self._timing(db, r.id)[:2] == (SCHEDULED, utc_ts(2030, 1, 1, 1, 0))
        utc_app = LiteQueue(db)
        r = utc_app.send_task(job.name, [1], eta=dt.datetime(2030, 1, 1, 9, 0))
        assert self._timing(db, r.id)[:2] == (SCHEDULED, utc_ts(2030, 1, 1, 9, 0))

        # An eta in the past: ready at once.
        r = job.apply_async([1], eta=dt.datetime.now(UTC) - dt.timedelta(hours=1))
        assert self._timing(db, r.id) == (PENDING, None, None) and r.state == PENDING
        r = job.apply_async([1], countdown=-5)
        assert self._timing(db, r.id) == (PENDING, None, None)

        # expires: seconds from now, an aware datetime, or a naive one in the app's zone.
        r = job.apply_async([1], expires=60)
        assert self._timing(db, r.id)[2] == pytest.approx(time.time() + 60, abs=5)
        r = job.apply_async([1], expires=aware)
        assert self._timing(db, r.id)[2] == utc_ts(2030, 1, 1, 14, 0)
        r = job.apply_async([1], countdown=10, expires=dt.datetime(2030, 1, 1, 9, 0))
        assert self._timing(db, r.id)[0::2] == (SCHEDULED, utc_ts(2030, 1, 1, 1, 0))

    def test_expires_before_the_eta_is_queued_and_expires_unstarted_as_in_celery(self, project):
        """Celery accepts it, and the task ends REVOKED without running; litequeue also
        warns, since it is most likely a mistake."""
        with pytest.warns(litequeue.LitequeueWarning, match="expires is earlier than eta"):
            r = project.app.tasks["tasks.add"].apply_async([1, 1], countdown=0.2, expires=0.1)
        wait_until(lambda: r.state == REVOKED, 10, "the unstarted task to expire")
        assert r.detailed_state == EXPIRED
        with pytest.raises(TaskRevoked, match="expired"):
            r.get(timeout=5)

    @pytest.mark.parametrize("options, message", [
        ({"countdown": 5, "eta": "future"}, "countdown or eta, not both"),
        ({"eta": "2030-01-01T00:00:00"}, "eta must be a datetime"),
        ({"eta": 1893456000}, "eta must be a datetime"),
        ({"countdown": "5"}, "countdown must be a number"),
        ({"countdown": float("nan")}, "countdown must be a number"),
        ({"countdown": True}, "countdown must be a number"),
        ({"expires": "tomorrow"}, "expires must be a datetime or a number"),
        ({"expires": float("nan")}, "expires"),
    ], ids=["countdown-and-eta", "eta-text", "eta-number", "countdown-text",
            "countdown-nan", "countdown-bool", "expires-text", "expires-nan"])
    def test_bad_timing_options_are_refused_and_write_nothing(self, project, options, message):
        future = dt.datetime.now(UTC) + dt.timedelta(hours=1)
        options = {k: {"future": future, "past": future - dt.timedelta(minutes=10)}.get(v, v)
                   if isinstance(v, str) else v for k, v in options.items()}
        project.delay("add", 1, 1)
        before = sha256(project.db)
        task = project.app.tasks["tasks.add"]
        try:
            task.apply_async([1, 2], **options)
        except ConfigurationError as exc:
            assert message in str(exc)
        else:
            pytest.fail(f"apply_async accepted {options}")
        assert sha256(project.db) == before
        assert sql(project.db, "SELECT count(*) FROM tasks") == [(1,)]

    def test_expired_before_it_could_start(self, project):
        """No worker runs here: the state reads EXPIRED as soon as expires passes, and
        get() says the task was expired instead of waiting forever."""
        for expires in (-1, dt.datetime.now(UTC) - dt.timedelta(minutes=1)):
            r = project.app.tasks["tasks.add"].apply_async([1, 1], expires=expires)
            assert r.detailed_state == EXPIRED and r.ready() and not r.successful()
            assert r.state == REVOKED and r.state in litequeue.states.READY_STATES
            # A worker that claims it (before marking it) must not make it read STARTED.
            sql_write(project.db, f"UPDATE tasks SET state = 'STARTED', started_at = "
                                  f"{time.time()} WHERE id = '{r.id}'")
            r._row = None
            assert r.detailed_state == EXPIRED and r.ready()
            sql_write(project.db, f"UPDATE tasks SET state = 'EXPIRED' WHERE id = '{r.id}'")
            r._row = None
            with pytest.raises(TaskRevoked, match="expired"):
                r.get(timeout=5)
            assert r.get(timeout=5, propagate=False) is None
        r = project.app.tasks["tasks.add"].apply_async([1, 1], countdown=30, expires=40)
        assert r.detailed_state == SCHEDULED and r.state == PENDING
        assert litequeue.READY_STATES == {"SUCCESS", "FAILURE", "REVOKED"}

    def test_periodic_task_registration(self, tmp_path):
        db = tmp_path / "beat.sqlite"
        app = LiteQueue(str(db), timezone="Europe/London")

        @app.task
        def add(x, y):
            return x + y

        @app.periodic_task(crontab(minute=0, hour=7, tz="Asia/Shanghai"), name="morning",
                           args=(1,), kwargs={"y": 2})
        def report(x, y):
            return x + y

        assert isinstance(report, litequeue.Task) and report(1, y=2) == 3
        assert app.tasks[report.name] is report
        assert app.add_periodic_task(dt.timedelta(minutes=5), add.s(2, 2),
                                     name="add-every-5-min") == "add-every-5-min"
        assert app.add_periodic_task(30, add, args=(1, 2), name="add-30s", catch_up="all") \
            == "add-30s"
        assert app.add_periodic_task(crontab(minute="*/5"), "tasks.remote", name="remote",
                                     catch_up="none", queue="q") == "remote"
        assert app.add_periodic_task(60.0, add) == add.name          # named after its task

        def definition(name):
            d = dict(app.periodic[name])
            d["payload"] = litequeue._unpack_envelope(d["payload"])
            return {k: d[k] for k in ("task", "module", "schedule", "tz", "payload", "queue",
                                      "catch_up")}
        assert definition("morning") == {
            "task": report.name, "module": __name__, "schedule": "cron:0 7 * * *",
            "tz": "Asia/Shanghai", "payload": ([1], {"y": 2}), "queue": "default",
            "catch_up": "once"}
        assert definition("add-every-5-min") == {
            "task": add.name, "module": __name__, "schedule": "every:300.0",
            "tz": "Europe/London", "payload": ([2, 2], {}), "queue": "default",
            "catch_up": "once"}
        assert definition("add-30s")["schedule"] == "every:30.0"
        assert definition("add-30s")["payload"] == ([1, 2], {})
        assert definition("add-30s")["catch_up"] == "all"
        assert definition("remote") == {
            "task": "tasks.remote", "module": __name__, "schedule": "cron:*/5 * * * *",
            "tz": "Europe/London", "payload": ([], {}), "queue": "q", "catch_up": "none"}

        with pytest.raises(ConfigurationError, match="'morning' is already defined"):
            app.add_periodic_task(10, add, name="morning")
        with pytest.raises(ConfigurationError, match="already defined"):
            app.add_periodic_task(10, add)
        with pytest.raises(ConfigurationError, match="catch_up must be one of"):
            app.add_periodic_task(10, add, name="x", catch_up="sometimes")
        assert set(app.periodic) == {"morning", "add-every-5-min", "add-30s", "remote", add.name}
        assert not db.exists()                  # defining schedules writes nothing

    # -- failure handling and serialization (issue 4) ---------------------------------------

    @staticmethod
    def _unopened_app(**settings):
        """An app whose database is never opened (the tests below do no I/O)."""
        return LiteQueue(os.path.join(os.sep, "nonexistent", "never-opened.sqlite"), **settings)

    @hsettings(max_examples=300, deadline=None, database=None)
    @given(factor=st.just(True) | st.integers(1, 10) | st.floats(0.01, 100),
           cap=st.floats(0.01, 3600), retries=st.integers(0, 1000), jitter=st.booleans())
    def test_backoff_stays_within_zero_and_the_capped_exponential(self, factor, cap,
                                                                  retries, jitter):
        app = self._unopened_app()
        task = app.task(lambda: None, name="t", retry_backoff=factor, retry_backoff_max=cap,
                        retry_jitter=jitter)
        ceiling = min(cap, (1 if factor is True else factor) * 2 ** retries)
        countdown = task.backoff(retries)
        assert isinstance(countdown, float)
        if jitter:
            assert 0 <= countdown <= ceiling
        else:
            assert countdown == pytest.approx(ceiling)
        fixed = app.task(lambda: None, name="u", default_retry_delay=7)
        assert fixed.backoff(retries) == 7.0                   # no retry_backoff

    def test_jittered_backoff_spreads_over_the_whole_range(self):
        task = self._unopened_app().task(lambda: None, name="t", retry_backoff=True,
                                         retry_backoff_max=600, retry_jitter=True)
        samples = [task.backoff(3) for _ in range(2000)]        # uniform in [0, 8]
        assert 0 <= min(samples) < 0.5 and 7.5 < max(samples) <= 8
        assert 3.5 < sum(samples) / len(samples) < 4.5

    def test_backoff_of_a_late_retry_is_capped_not_an_overflow(self):
        task = self._unopened_app().task(lambda: None, name="t", max_retries=5000,
                                         retry_backoff=0.5, retry_backoff_max=600,
                                         retry_jitter=False)
        assert task.backoff(1024) == 600.0

    @hsettings(max_examples=200, deadline=None, database=None)
    @given(args=st.lists(msgpack_values(), max_size=4),
           kwargs=st.dictionaries(st.text(), msgpack_values(), max_size=3))
    def test_eager_mode_round_trips_every_supported_value(self, args, kwargs):
        app = self._unopened_app(task_always_eager=True)

        @app.task
        def echo(*a, **k):
            return [list(a), k]
        result = echo.apply_async(args, kwargs)
        assert result.state == SUCCESS, result.result
        got_args, got_kwargs = result.get()
        assert same(args, got_args), (args, got_args)
        assert same(kwargs, got_kwargs), (kwargs, got_kwargs)


@pytest.mark.worker
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


class TestRelativePaths:

    def test_a_relative_path_is_resolved_against_the_module_creating_the_app(
            self, project, here, tmp_path, monkeypatch):
        other = tmp_path / "other"
        other.mkdir()
        # The calling program runs in another directory and imports tasks.py from the
        # project's (here() puts it first on sys.path, as `sys.path.insert(0, ...)`).
        monkeypatch.chdir(other)
        w = here(project)
        tasks = w.loaded[0]
        assert tasks.app.path == f"{project.dir / 'jobs.sqlite'}"
        r = tasks.add.delay(2, 3)
        assert w.work() == 1                # a worker child of project.db, in this process
        assert r.get(timeout=10) == 5
        assert not [p.name for p in other.iterdir() if p.name.startswith("jobs.sqlite")]
        # Without a module file (python -c's __main__ has no __file__) a relative path is
        # read from the cwd.
        names = {"__name__": "__main__"}
        exec("from litequeue import LiteQueue; app = LiteQueue('x.sqlite')", names)
        assert names["app"].path == f"{other / 'x.sqlite'}"

    def test_a_subclass_s_init_elsewhere_does_not_move_the_file(self, tmp_path, monkeypatch):
        (tmp_path / "lib").mkdir()
        (tmp_path / "lib" / "basequeue.py").write_text(
            "from litequeue import LiteQueue\n"
            "class MyQueue(LiteQueue):\n"
            "    def __init__(self, path, **settings):\n"
            "        super().__init__(path, **settings)\n")
        (tmp_path / "app").mkdir()
        (tmp_path / "app" / "jobs.py").write_text("from basequeue import MyQueue\n"
                                                  "app = MyQueue('jobs.sqlite')\n")
        monkeypatch.chdir(tmp_path / "app")
        monkeypatch.syspath_prepend(str(tmp_path / "app"))
        monkeypatch.syspath_prepend(str(tmp_path / "lib"))
        for name in ("jobs", "basequeue"):          # a module of that name imported before
            monkeypatch.delitem(sys.modules, name, raising=False)
        try:
            jobs = importlib.import_module("jobs")
            assert jobs.app.path == f"{tmp_path / 'app' / 'jobs.sqlite'}"
        finally:
            for name in ("jobs", "basequeue"):
                sys.modules.pop(name, None)


def test_unnamed_periodic_calls_of_one_task_are_named_by_their_call(tmp_path):
    """Celery names an unnamed periodic entry by its signature: two calls of one task with
    other arguments are two schedules, not a clash."""
    app = LiteQueue(str(tmp_path / "beat.sqlite"))

    @app.task
    def add(x, y):
        return x + y
    names = [app.add_periodic_task(10, add.s(1, 2)), app.add_periodic_task(30, add, (3,),
                                                                           {"y": 4}),
             app.add_periodic_task(60, add), app.add_periodic_task(5, add.s("x" * 400, 1))]
    assert names[:3] == [f"{add.name}(1, 2)", f"{add.name}(3, y=4)", add.name]
    assert len(names[3]) == 255 and names[3].startswith(f"{add.name}('xxx")
    assert set(app.periodic) == set(names)
    with pytest.raises(ConfigurationError, match="already defined"):
        app.add_periodic_task(10, add.s(1, 2))        # the same call twice is a mistake


def test_delays_short_path_writes_the_row_apply_async_writes(tmp_path):
    """delay() of a registered task with no options takes a shorter path than
    apply_async(); the rows must not differ but for the id and the time."""
    app = LiteQueue(str(tmp_path / "same.sqlite"), task_routes={"*.routed": "elsewhere"},
                    task_default_priority=3)

    @app.task(max_retries=7)
    def routed(x, y=0):
        return x + y

    @app.task(priority=9)
    def plain(x):
        return x

    def row(result):
        found = sql(app.path, "SELECT * FROM tasks WHERE id = ?", result.id)
        names = [r[1] for r in sql(app.path, "PRAGMA table_info(tasks)")]
        got = dict(zip(names, found[0]))
        return {k: v for k, v in got.items() if k not in ("seq", "id", "created_at")}

    routed.apply_async((0,))                      # registers the name: delay() is short now
    plain.apply_async((0,))
    for task, args, kwargs in ((routed, (1,), {"y": 2}), (plain, (5,), {})):
        assert row(task.delay(*args, **kwargs)) == row(task.apply_async(args, kwargs))
    assert row(routed.delay(1))["queue"] == "elsewhere"
    assert row(plain.delay(1))["priority"] == 9
    assert row(routed.delay(1))["max_retries"] == 7


def test_new_ids_are_uuid7_text_unique_and_in_time_order_by_millisecond():
    import uuid as _uuid
    ids = [litequeue._new_id() for _ in range(200_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[::997]:
        parsed = _uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, _uuid.RFC_4122, text)
    # The first 48 bits are milliseconds: ids of later milliseconds sort after.
    stamps = [int(text[:8] + text[9:13], 16) for text in ids]
    assert stamps == sorted(stamps) and abs(stamps[-1] - time.time() * 1000) < 60_000


@pytest.mark.worker
def test_a_forked_child_opens_its_own_connection(tmp_path):
    app = LiteQueue(str(tmp_path / "fork.sqlite"))
    mine = app._storage()
    pid = os.fork()
    if pid == 0:                                  # the child: a connection of its own
        os._exit(0 if app._storage() is not mine else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert app._storage() is mine                 # the parent keeps its own
