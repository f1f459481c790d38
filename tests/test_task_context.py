"""Task context: what a running task sees as self.request (Celery's fields), the calling
options Celery's apply_async takes, plain calls of a task, and base classes with their own
attributes and __call__. The worker runs in this process (here), on a real file."""

import datetime as dt
import logging
import time
import warnings

import pytest

import litequeue
from litequeue import SUCCESS, LiteQueue, LitequeueWarning, Task

from .helpers import sql


def test_a_worker_run_sees_celerys_request_fields(project, here):
    w = here(project)
    fields = w.loaded[0].request_fields
    r = fields.apply_async(headers={"x-tenant": "acme"}, expires=600)
    assert w.work() == 1
    got = r.get(timeout=5)
    assert got["id"] == r.id == got["correlation_id"] and got["task"] == "tasks.request_fields"
    assert (got["called_directly"], got["is_eager"], got["ignore_result"]) == (False, False,
                                                                                False)
    assert got["headers"] == {"x-tenant": "acme"}
    assert got["delivery_info"] == {"exchange": "", "routing_key": "default", "priority": 0,
                                    "redelivered": False}
    assert got["timelimit"] == [None, None]          # (hard, soft): msgpack gives a list
    expires = dt.datetime.fromisoformat(got["expires"])
    assert abs(expires.timestamp() - (time.time() + 600)) < 30
    # Celery's defaults for what a broker would carry and litequeue keeps elsewhere.
    assert [got[k] for k in ("reply_to", "origin", "callbacks", "errbacks", "chain", "chord",
                             "argsrepr", "kwargsrepr", "shadow", "eta")] == [None] * 10


def test_a_plain_call_has_a_request_of_its_own_and_gives_the_runs_back(project, here):
    w = here(project)
    fields = w.loaded[0].request_fields
    alone = fields()
    assert alone["called_directly"] is True and alone["id"] is None
    assert fields.request.called_directly is True          # outside any call
    r = fields.delay(inner=True)
    w.work()
    got = r.get(timeout=5)
    # Called from inside a run, the plain call sees its own request; the run gets its
    # own back afterwards.
    assert got["inner"]["called_directly"] is True and got["inner"]["id"] is None
    assert got["called_directly"] is False and got["after"] == r.id


def test_eager_runs_say_so(tmp_path):
    app = LiteQueue(str(tmp_path / "eager.sqlite"), task_always_eager=True)

    @app.task(bind=True)
    def look(self):
        return [self.request.is_eager, self.request.called_directly, self.request.id,
                self.request.headers]
    r = look.apply_async(headers={"h": 1})
    assert r.get() == [True, False, r.id, {"h": 1}]


def test_current_task_and_current_app_stand_for_the_running_task_and_the_app(tmp_path):
    from litequeue import current_app, current_task
    app = LiteQueue(str(tmp_path / "current.sqlite"), task_always_eager=True)

    @app.task
    def look():
        return [current_task.name, current_task.request.id, bool(current_task)]
    r = look.delay()
    assert r.get() == [look.name, r.id, True]
    assert look() == [look.name, None, True]         # a plain call is the task too
    assert not current_task and current_app == app and current_app.main == app.main


def test_a_base_class_with_its_own_call_is_called_once_per_run(project, here):
    w = here(project)
    r = w.loaded[0].wrapped.delay()
    assert w.work() == 1
    assert r.get(timeout=5) == [r.id, False]
    assert (project.marks / "wrapped").read_text().split() == [r.id]


def test_per_call_options_reach_the_request_the_logs_and_the_dashboard(project, here,
                                                                       caplog):
    caplog.set_level(logging.INFO, logger="litequeue")
    w = here(project)
    fields = w.loaded[0].request_fields
    secret = fields.apply_async((), {"inner": False}, argsrepr="()",
                                kwargsrepr="{'inner': '***'}", shadow="reports.nightly")
    quiet = fields.apply_async(ignore_result=True)
    assert w.work() == 2
    got = secret.get(timeout=5)
    assert (got["argsrepr"], got["kwargsrepr"], got["shadow"]) == (
        "()", "{'inner': '***'}", "reports.nightly")
    assert f"Task reports.nightly[{secret.id}] succeeded" in caplog.text
    # The dashboard shows the reprs the caller gave, not the arguments.
    assert project.app.admin.task(secret.id)["kwargs"] == "{'inner': '***'}"
    (listed,), _ = project.app.admin.page(None, None, None, "tasks.request_fields",
                                          secret.id, 50)
    assert listed["kwargs"] == "{'inner': '***'}"
    # Nor does the dashboard's search find the arguments such a call hides; a call
    # without reprs is found by its arguments as before.
    page = lambda text: [t["id"] for t in project.app.admin.page(None, None, None, None,
                                                                  text, 50)[0]]
    plain = fields.delay(inner="needle")
    hidden = fields.apply_async((), {"inner": "needle"}, kwargsrepr="{'inner': '***'}")
    assert page("needle") == [plain.id] and page(hidden.id) == [hidden.id]
    # ignore_result for one call: it ran and succeeded, its result was not kept.
    assert quiet.state == SUCCESS and quiet.result is None
    assert sql(project.db, "SELECT result FROM tasks WHERE id = ?", quiet.id) == [(None,)]


def test_broker_options_are_accepted_with_one_warning_and_bad_ones_refused(tmp_path):
    app = LiteQueue(str(tmp_path / "opts.sqlite"))

    @app.task
    def add(x, y):
        return x + y
    with pytest.warns(LitequeueWarning) as warned:
        add.apply_async((1, 2), serializer="json", compression="zlib", routing_key="k",
                        retry=True, retry_policy={"max_retries": 3})
    assert sorted(str(w.message).split("'")[1] for w in warned) == [
        "compression", "retry", "retry_policy", "routing_key", "serializer"]
    assert all("means nothing without a broker" in str(w.message) for w in warned)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        for _ in range(3):                      # one warning per line that gives it
            add.apply_async((1, 2), serializer="json")
    assert len([w for w in seen if "serializer" in str(w.message)]) == 1
    with pytest.warns(LitequeueWarning, match="'serialiser' is not one litequeue knows"):
        add.apply_async((1, 2), serialiser="json")
    for key, bad in (("headers", ["x"]), ("argsrepr", 5), ("shadow", ""),
                     ("ignore_result", "yes")):
        with pytest.raises(TypeError, match=f"option {key} is"):
            add.apply_async((1, 2), **{key: bad})


def test_a_foreign_rows_wrong_options_are_left_out_not_fatal(project, here):
    """Options of the wrong type in a row another client wrote: the call runs without
    them."""
    w = here(project)
    r = project.app.tasks["tasks.request_fields"].delay()
    envelope = {"args": [], "kwargs": {}, "options": {"headers": "not a map", "shadow": 7,
                                                      "argsrepr": "(1,)"}}
    sql(project.db, "UPDATE tasks SET payload = ? WHERE id = ?",
        litequeue._pack(envelope), r.id)
    w.work()
    got = r.get(timeout=5)
    assert (got["headers"], got["shadow"], got["argsrepr"]) == (None, None, "(1,)")


def test_a_base_classs_attributes_are_the_defaults_of_its_tasks(tmp_path):
    """Celery's guide: class BaseTaskWithRetry(Task) with autoretry_for and a backoff;
    the decorator's own options still win."""
    app = LiteQueue(str(tmp_path / "base.sqlite"), task_always_eager=True)

    class BaseTaskWithRetry(Task):
        autoretry_for = (KeyError,)
        max_retries = 5
        retry_backoff = True
        retry_backoff_max = 700
        retry_jitter = False

    tries = []

    @app.task(base=BaseTaskWithRetry)
    def flaky():
        tries.append(1)
        if len(tries) < 3:
            raise KeyError("not yet")
        return len(tries)

    @app.task(base=BaseTaskWithRetry, max_retries=1, retry_backoff=False)
    def own():
        pass

    assert (flaky.autoretry_for, flaky.max_retries, flaky.retry_backoff,
            flaky.retry_backoff_max, flaky.retry_jitter) == ((KeyError,), 5, True, 700, False)
    assert (own.max_retries, own.retry_backoff, own.autoretry_for) == (1, False, (KeyError,))
    assert flaky.delay().get() == 3
    assert issubclass(app.Task, Task)


def test_options_given_when_applied_win_over_the_signatures(tmp_path):
    app = LiteQueue(str(tmp_path / "sig.sqlite"))

    @app.task
    def add(x, y):
        return x + y
    before = time.time()
    r = add.signature((2, 2), countdown=600, queue="slow").apply_async(countdown=1,
                                                                       queue="fast")
    (eta, queue), = sql(app.path, "SELECT eta, queue FROM tasks WHERE id = ?", r.id)
    assert before + 1 <= eta < before + 60 and queue == "fast"


def test_arguments_the_function_cannot_take_are_refused_in_the_caller(tmp_path):
    """Celery's typing=True: add.delay(8) for add(x, y) raises TypeError where it is
    called and queues nothing; typing=False queues it (and the worker fails it)."""
    app = LiteQueue(str(tmp_path / "typing.sqlite"))

    @app.task
    def add(x, y):
        return x + y

    @app.task(bind=True)
    def bound(self, x, *, scale=1):
        return x * scale

    @app.task(typing=False)
    def loose(x):
        return x

    add.delay(1, 2)
    for call, match in ((lambda: add.delay(8), "missing a required argument: 'y'"),
                        (lambda: add.delay(1, 2, 3), "too many positional arguments"),
                        (lambda: add.delay(1, 2, z=3), "unexpected keyword argument .z."),
                        (lambda: add.s(1).delay(), "missing a required argument"),
                        (lambda: bound.delay(), "missing a required argument: 'x'"),
                        (lambda: add.apply_async((1,), link=add.s(1)), "missing")):
        with pytest.raises(TypeError, match=match):
            call()
    assert sql(app.path, "SELECT count(*) FROM tasks") == [(1,)]
    add.delay(x=1, y=2), add.s(1).delay(2), bound.delay(3, scale=2)
    loose.delay()
    assert sql(app.path, "SELECT count(*) FROM tasks") == [(5,)]


def test_celerys_other_task_options_are_honoured(tmp_path, caplog):
    """retry_kwargs (autoretry's retry() arguments), expires (every call's default),
    throws (an expected error is one INFO line, no traceback), and acks_late,
    track_started and serializer, accepted for what litequeue always does."""
    caplog.set_level(logging.INFO, logger="litequeue")
    app = LiteQueue(str(tmp_path / "opts.sqlite"), task_always_eager=True)
    tries = []

    @app.task(autoretry_for=(KeyError,), retry_kwargs={"max_retries": 2, "countdown": 0})
    def flaky():
        tries.append(1)
        raise KeyError("again")

    @app.task(throws=(ValueError,), acks_late=True, track_started=True, serializer="json")
    def picky():
        raise ValueError("expected")

    r = flaky.delay()
    assert len(tries) == 3 and r.retries == 2 and isinstance(r.result, KeyError)
    caplog.clear()
    picky.delay()
    assert "raised expected: ValueError" in caplog.text and "Traceback" not in caplog.text

    queued = LiteQueue(str(tmp_path / "expires.sqlite"))

    @queued.task(expires=60)
    def soon():
        pass
    before = time.time()
    row = soon.delay()
    (expires,), = sql(queued.path, "SELECT expires FROM tasks WHERE id = ?", row.id)
    assert before + 59 < expires < time.time() + 61
    r2 = soon.apply_async(expires=600)                 # a call's own wins
    (expires,), = sql(queued.path, "SELECT expires FROM tasks WHERE id = ?", r2.id)
    assert expires > before + 590


@pytest.mark.worker
def test_a_task_waiting_on_another_tasks_result_is_refused_unless_allowed(project, workers):
    """Celery's guard against a worker deadlocked on its own subtasks: get() inside a task
    raises RuntimeError; disable_sync_subtasks=False and allow_join_result() let it wait.
    Outside a worker (a producer, eager mode) get() waits as ever."""
    workers.start(project, concurrency=2)
    refused, allowed, inside = project.delay("waits_on_another").get(timeout=60)
    assert "chain the tasks instead" in refused and "disable_sync_subtasks=False" in refused
    assert (allowed, inside) == (42, 42)


def test_before_start_runs_first_in_celerys_hook_order(project, here):
    """A base class's before_start, then the task, then on_success and after_return, in
    a worker's run as in eager mode."""
    calls = []

    class Hooked(Task):
        def before_start(self, task_id, args, kwargs):
            calls.append(("before_start", task_id, args))

        def on_success(self, retval, task_id, args, kwargs):
            calls.append(("on_success", retval))

        def after_return(self, status, retval, task_id, args, kwargs, einfo):
            calls.append(("after_return", status))

    w = here(project)
    app = w.loaded[0].app

    @app.task(base=Hooked, name="tasks.hooked")
    def hooked(x):
        calls.append(("run", x))
        return x * 2
    r = hooked.delay(21)
    w.work()
    assert r.get(timeout=5) == 42
    assert calls == [("before_start", r.id, [21]), ("run", 21), ("on_success", 42),
                     ("after_return", SUCCESS)]


def test_a_task_logger_says_which_task_and_id_logged(tmp_path, caplog):
    """Celery's get_task_logger: the worker's lines of what a running task logs begin
    with its name and id; outside a task, they are left as they are."""
    from litequeue import get_task_logger
    log = get_task_logger("my.tasks")
    caplog.set_level(logging.INFO, logger="my.tasks")
    app = LiteQueue(str(tmp_path / "log.sqlite"), task_always_eager=True)

    @app.task(name="my.add")
    def add(x, y):
        log.info("adding %s and %s (100%% sure)", x, y)
        log.info("no args here: 100%")
        return x + y
    r = add.delay(2, 2)
    log.info("outside")
    # The message stays the task's; the worker's lines put the name and id before it.
    assert [rec.getMessage() for rec in caplog.records] == [
        "adding 2 and 2 (100% sure)", "no args here: 100%", "outside"]
    assert [getattr(rec, "task_id", None) for rec in caplog.records] == [r.id, r.id, None]
    lines = [litequeue._WorkerFormatter().format(rec).split("] ", 1)[1]
             for rec in caplog.records]
    assert lines == [f"my.add[{r.id}]: adding 2 and 2 (100% sure)",
                     f"my.add[{r.id}]: no args here: 100%", "outside"]
    assert get_task_logger("my.tasks") is log and len(log.filters) == 1


def test_a_retrying_tasks_info_is_the_exception_retry_was_given(project, here, caplog):
    """Celery's .info and .result of a task in RETRY: the exc passed to self.retry(); and
    the worker logs "received" for each run, as Celery's does at INFO."""
    w = here(project)
    r = w.loaded[0].retrier.delay("info", 1, 60)
    with caplog.at_level(logging.INFO, logger="litequeue"):
        assert w.work() == 1
    assert r.state == "RETRY" and r.retries == 1
    assert type(r.info).__name__ == "TaskFailed" and str(r.info) == "info try 0"
    assert type(r.result) is type(r.info) and not r.ready()
    assert f"Task tasks.retrier[{r.id}] received" in caplog.messages


def test_ignore_and_reject_record_nothing_and_requeue_redelivers(project, here):
    """Celery's Ignore keeps the state the task set (the tasks guide's custom FAILURE);
    Reject(requeue=False) records nothing; Reject(requeue=True) runs it again without
    spending a retry. detailed_state says what happened."""
    w = here(project)
    set_aside = w.loaded[0].set_aside
    ignored, rejected, requeued = (set_aside.delay(how) for how in ("ignore", "reject",
                                                                     "requeue"))
    w.work_until(lambda: requeued.ready(), 10)
    assert (ignored.state, ignored.detailed_state, ignored.info) == (
        "FAILURE", "IGNORED", {"custom": "kept"})
    assert (rejected.state, rejected.detailed_state, rejected.ready()) == (
        "PENDING", "REJECTED", False)
    assert requeued.get(timeout=5) == ["requeue", 2, 0]
    assert litequeue.states.IGNORED == "IGNORED" and litequeue.states.REJECTED == "REJECTED"


def test_an_exception_class_nested_in_a_class_comes_back_as_itself(project, here):
    w = here(project)
    tasks = w.loaded[0]
    r = tasks.raise_nested.delay("inner")
    assert w.work() == 1
    with pytest.raises(tasks.Errors.Nested, match="inner"):
        r.get(timeout=5)
