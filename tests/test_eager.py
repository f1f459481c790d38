"""Eager mode and .apply() run a task through the worker's own path: the same hooks, the
same signals with the same arguments, and the same retry policy (a retry runs again at
once, as in Celery's eager mode).

Eager mode needs no worker; one test runs the same tasks module under a worker child's
loop (in this process) and eagerly, and compares what its handlers saw. Last, values
and failures come back from eager mode as they would from a worker (TestEagerRoundTrip).
"""

import pytest

from litequeue import (
    FAILURE, RETRY, SUCCESS, EagerResult, LiteQueue, MaxRetriesExceededError, SerializationError,
    Task, chain, signals,
)

from .helpers import CanvasProject

pytestmark = pytest.mark.timeout(120)

RUN_SIGNALS = ("task_prerun", "task_postrun", "task_success", "task_failure", "task_retry")
PUBLISH_SIGNALS = ("before_task_publish", "after_task_publish")


class Recording(Task):
    """A base class whose hooks note their calls in Recording.seen (the `seen` fixture's
    list), beside the signals."""

    seen = []

    def on_success(self, retval, task_id, args, kwargs):
        self.seen.append(("on_success", self, {"retval": retval, "task_id": task_id,
                                               "args": args, "kwargs": kwargs}))

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        self.seen.append(("on_failure", self, {"exc": exc, "task_id": task_id, "args": args,
                                               "kwargs": kwargs, "einfo": einfo}))

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        self.seen.append(("on_retry", self, {"exc": exc, "task_id": task_id, "args": args,
                                             "kwargs": kwargs, "einfo": einfo}))

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        self.seen.append(("after_return", self, {"status": status, "retval": retval,
                                                 "task_id": task_id, "args": args,
                                                 "kwargs": kwargs, "einfo": einfo}))


@pytest.fixture
def seen():
    """[(hook or signal name, self or sender, arguments)] of every hook and signal call."""
    calls = Recording.seen = []
    handlers = []
    for name in RUN_SIGNALS + PUBLISH_SIGNALS:
        def handler(sender=None, signal=None, _name=name, **kwargs):
            calls.append((_name, sender, kwargs))
        getattr(signals, name).connect(handler)
        handlers.append((getattr(signals, name), handler))
    try:
        yield calls
    finally:
        for sig, handler in handlers:
            sig.disconnect(handler)
        Recording.seen = []


def names(calls):
    return [c[0] for c in calls]


def only(calls, name):
    """The arguments of the one call of name."""
    found = [c for c in calls if c[0] == name]
    assert len(found) == 1, names(calls)
    return found[0]


@pytest.fixture(params=["delay", "apply"])
def runner(request, tmp_path):
    """(app, run): run(task, *args, **kwargs) runs a task inline, by delay() under
    task_always_eager or by .apply() of a plain app; either way nothing is written."""
    db = tmp_path / "eager.sqlite"
    if request.param == "delay":
        app = LiteQueue(str(db), task_always_eager=True)
        yield app, lambda task, *args, **kwargs: task.delay(*args, **kwargs)
    else:
        app = LiteQueue(str(db))
        yield app, lambda task, *args, **kwargs: task.apply(args, kwargs)
    assert not db.exists()


def test_a_success_fires_the_hooks_and_signals_in_celerys_order(runner, seen):
    app, run = runner

    @app.task(base=Recording)
    def add(x, y):
        return x + y

    result = run(add, 2, 3)
    assert result.get() == 5
    assert names(seen) == ["task_prerun", "on_success", "task_success", "after_return",
                           "task_postrun"]
    tid = result.id
    assert only(seen, "task_prerun") == ("task_prerun", add, {
        "task_id": tid, "task": add, "args": [2, 3], "kwargs": {}})
    assert only(seen, "on_success") == ("on_success", add, {
        "retval": 5, "task_id": tid, "args": [2, 3], "kwargs": {}})
    assert only(seen, "task_success") == ("task_success", add, {"result": 5})
    assert only(seen, "after_return") == ("after_return", add, {
        "status": SUCCESS, "retval": 5, "task_id": tid, "args": [2, 3], "kwargs": {},
        "einfo": None})
    assert only(seen, "task_postrun") == ("task_postrun", add, {
        "task_id": tid, "task": add, "args": [2, 3], "kwargs": {}, "retval": 5,
        "state": SUCCESS})


def test_a_failure_fires_on_failure_and_task_failure(runner, seen):
    app, run = runner

    @app.task(base=Recording)
    def boom(message, loud=False):
        raise KeyError(message)

    result = run(boom, "gone", loud=True)
    assert result.state == FAILURE
    with pytest.raises(KeyError):
        result.get()
    assert names(seen) == ["task_prerun", "on_failure", "task_failure", "after_return",
                           "task_postrun"]
    tid, exc = result.id, result.result
    hook = only(seen, "on_failure")[2]
    assert hook["exc"] is exc and hook["task_id"] == tid
    assert hook["args"] == ["gone"] and hook["kwargs"] == {"loud": True}
    assert hook["einfo"].exception is exc and hook["einfo"].type is KeyError
    assert "raise KeyError(message)" in hook["einfo"].traceback
    _, sender, failure = only(seen, "task_failure")
    assert sender is boom
    assert set(failure) == {"task_id", "exception", "args", "kwargs", "traceback", "einfo"}
    assert failure["task_id"] == tid and failure["exception"] is exc
    assert failure["args"] == ["gone"] and failure["kwargs"] == {"loud": True}
    assert "raise KeyError(message)" in failure["traceback"]
    assert failure["einfo"].exception is exc
    after = only(seen, "after_return")[2]
    assert after["status"] == FAILURE and after["retval"] is exc
    post = only(seen, "task_postrun")[2]
    assert post["state"] == FAILURE and post["retval"] is exc


def test_an_unencodable_result_fails_with_its_hooks_as_in_a_worker(runner, seen):
    app, run = runner

    @app.task(base=Recording)
    def odd():
        return {1, 2}

    result = run(odd)
    assert result.state == FAILURE and isinstance(result.result, SerializationError)
    assert names(seen) == ["task_prerun", "on_failure", "task_failure", "after_return",
                           "task_postrun"]
    assert only(seen, "on_failure")[2]["exc"] is result.result


def test_a_sync_task_that_returns_a_coroutine_fails_saying_so(runner, seen):
    app, run = runner

    async def later():
        return 1

    @app.task(base=Recording)
    def hands_back():
        return later()

    result = run(hands_back)
    assert result.state == FAILURE and isinstance(result.result, TypeError)
    assert "returned a coroutine: define it with async def" in str(result.result)
    assert only(seen, "on_failure")[2]["exc"] is result.result


def test_retry_runs_again_at_once_and_fires_on_retry_and_task_retry(runner, seen):
    app, run = runner
    runs = []

    @app.task(base=Recording, bind=True, max_retries=3)
    def flaky(self, x):
        runs.append((self.request.id, self.request.retries))
        if self.request.retries < 2:
            raise self.retry(exc=OSError(f"try {self.request.retries}"), countdown=3600)
        return x * 2

    result = run(flaky, 21)
    # The countdown is not waited for: Celery's eager mode runs a retry at once.
    assert result.get() == 42 and result.state == SUCCESS
    assert runs == [(result.id, 0), (result.id, 1), (result.id, 2)]
    assert result.retries == 2
    assert [e["message"] for e in result.errors] == ["try 0", "try 1"]
    # Celery's order; after_return follows the last run only.
    assert names(seen) == ["task_prerun", "on_retry", "task_retry", "task_postrun"] * 2 + [
        "task_prerun", "on_success", "task_success", "after_return", "task_postrun"]
    retries = [c for c in seen if c[0] == "on_retry"]
    assert [type(c[2]["exc"]).__name__ for c in retries] == ["OSError", "OSError"]
    assert [str(c[2]["exc"]) for c in retries] == ["try 0", "try 1"]
    assert all(c[2]["task_id"] == result.id and c[2]["args"] == [21] for c in retries)
    assert all(c[2]["einfo"].exception is c[2]["exc"] for c in retries)
    signalled = [c for c in seen if c[0] == "task_retry"]
    assert [c[1] for c in signalled] == [flaky, flaky]
    assert [set(c[2]) for c in signalled] == [{"request", "reason", "einfo"}] * 2
    assert [(c[2]["request"].id, c[2]["request"].retries) for c in signalled] == [
        (result.id, 0), (result.id, 1)]
    # The reason is Celery's Retry: its countdown and the exception it retries for.
    assert [str(c[2]["reason"]) for c in signalled] == [
        "Retry in 3600s: OSError('try 0')", "Retry in 3600s: OSError('try 1')"]
    assert [c[2]["status"] for c in seen if c[0] == "after_return"] == [SUCCESS]
    assert [c[2]["state"] for c in seen if c[0] == "task_postrun"] == [RETRY, RETRY, SUCCESS]


def test_retries_past_the_budget_fail_with_the_last_error(runner, seen):
    app, run = runner
    runs = []

    @app.task(base=Recording, bind=True, max_retries=2)
    def stubborn(self):
        runs.append(self.request.retries)
        raise self.retry(exc=OSError("still down"))

    result = run(stubborn)
    assert runs == [0, 1, 2]
    assert result.state == FAILURE and isinstance(result.result, OSError)
    assert result.retries == 2 and len(result.errors) == 3
    assert names(seen).count("on_retry") == 2 and names(seen).count("task_retry") == 2
    assert only(seen, "on_failure")[2]["exc"] is result.result
    assert only(seen, "task_failure")[2]["exception"] is result.result
    assert [c[2]["status"] for c in seen if c[0] == "after_return"] == [FAILURE]


def test_a_retry_without_exc_past_the_budget_is_max_retries_exceeded(runner, seen):
    app, run = runner

    @app.task(base=Recording, bind=True, max_retries=1)
    def again(self):
        raise self.retry()

    result = run(again)
    assert result.state == FAILURE
    assert isinstance(result.result, MaxRetriesExceededError)
    with pytest.raises(MaxRetriesExceededError):
        result.get()
    assert only(seen, "on_failure")[2]["exc"] is result.result
    assert only(seen, "task_failure")[2]["exception"] is result.result


def test_autoretry_for_retries_inline(runner, seen):
    app, run = runner
    runs = []

    @app.task(base=Recording, autoretry_for=(ConnectionError,), max_retries=5,
              retry_backoff=True)
    def fetch(url):
        runs.append(url)
        if len(runs) < 3:
            raise ConnectionError("refused")
        return "page"

    result = run(fetch, "http://x")
    assert result.get() == "page" and runs == ["http://x"] * 3
    assert names(seen).count("on_retry") == 2 and names(seen).count("task_retry") == 2
    assert only(seen, "on_success")[2]["retval"] == "page"


def test_a_coroutine_task_fires_the_same_hooks(runner, seen):
    app, run = runner

    @app.task(base=Recording, bind=True)
    async def double(self, x):
        return [self.request.id, x * 2]

    result = run(double, 4)
    assert result.get() == [result.id, 8]
    assert names(seen) == ["task_prerun", "on_success", "task_success", "after_return",
                           "task_postrun"]


def test_handlers_and_hooks_that_raise_change_nothing(runner, seen, caplog):
    app, run = runner

    class Breaking(Task):
        def on_success(self, retval, task_id, args, kwargs):
            raise RuntimeError("a hook that breaks")

    def breaks(sender=None, **kwargs):
        raise RuntimeError("a handler that breaks")

    @app.task(base=Breaking)
    def fine():
        return "fine"

    for name in RUN_SIGNALS:
        getattr(signals, name).connect(breaks)
    try:
        assert run(fine).get() == "fine"
    finally:
        for name in RUN_SIGNALS:
            getattr(signals, name).disconnect(breaks)
    assert "its on_success hook raised" in caplog.text
    assert "handler" in caplog.text and "raised" in caplog.text


def test_every_step_of_an_applied_chain_and_its_errback_fire_hooks(tmp_path, seen):
    app = LiteQueue(str(tmp_path / "eager.sqlite"))

    @app.task(base=Recording)
    def add(x, y):
        return x + y

    @app.task(base=Recording)
    def boom(x):
        raise ValueError(x)

    @app.task(base=Recording)
    def eb(task_id):
        return f"saw {task_id}"

    result = chain(add.s(1, 2), boom.s(), add.s(1)).on_error(eb.s()).apply()
    assert result.state == FAILURE
    assert [c[1].name for c in seen if c[0] == "task_prerun"] == [add.name, boom.name,
                                                                  eb.name]
    assert [c[1].name for c in seen if c[0] == "on_success"] == [add.name, eb.name]
    assert [c[1].name for c in seen if c[0] == "on_failure"] == [boom.name]
    assert only(seen, "task_failure")[2]["args"] == [3]


def test_eager_delay_publishes_nothing_as_in_celery(tmp_path, seen):
    """Celery's apply_async under task_always_eager calls apply() and never reaches the
    producer, so before/after_task_publish fire only for a call that is really queued."""
    app = LiteQueue(str(tmp_path / "eager.sqlite"), task_always_eager=True)

    @app.task
    def add(x, y):
        return x + y

    assert add.delay(1, 1).get() == 2 and add.apply_async((1, 2)).get() == 3
    assert not set(names(seen)) & set(PUBLISH_SIGNALS)
    assert names(seen).count("task_prerun") == 2
    app.conf.task_always_eager = False
    add.delay(2, 2)
    assert [n for n in names(seen) if n in PUBLISH_SIGNALS] == list(PUBLISH_SIGNALS)


# ---------------------------------------------------------------------------
# The same handlers under a real worker and in eager mode
# ---------------------------------------------------------------------------

class EagerProject(CanvasProject):
    # tasks/eager_tasks.py: its hooks and signal handlers write what they receive, reduced
    # to JSON, to marks/worker or marks/eager (by the app's mode in the process they run in).
    MODULE = "eager_tasks"


# The calls both runs make, one at a time, with fixed ids so that both logs name them.
CALLS = '''
for task_id, mode in (("t-ok", "ok"), ("t-fail", "fail"), ("t-retry", "retry"),
                      ("t-give-up", "give up")):
    job.apply_async((mode,), {"n": 3}, task_id=task_id).get(timeout=60, propagate=False)
print(json.dumps("done"))
'''


def test_a_handler_sees_the_same_arguments_in_eager_mode_as_from_a_worker(tmp_path, here):
    project = EagerProject(tmp_path / "proj")
    # A worker child's loop on a thread, and the calling program, in this process: each
    # handler logs by the app's mode when it runs, so the worker stops before eager mode.
    w = here(project, modules=(project.MODULE,)).start()
    assert w.client(CALLS) == "done"
    w.stop()
    assert w.client("app.conf.task_always_eager = True\n" + CALLS) == "done"
    from_worker, eager = project.logged("worker"), project.logged("eager")
    published = [e for e in from_worker if e[0] in PUBLISH_SIGNALS]
    assert len(published) == 2 * 4            # the producer's, for each call
    assert not [e for e in eager if e[0] in PUBLISH_SIGNALS]     # as in Celery
    ran = [e for e in from_worker if e[0] not in PUBLISH_SIGNALS]
    assert ran == eager
    # And they are what a handler expects (one look at a few of them).
    assert ["on_retry", ["task", "eager_tasks.job"],
            ["tuple", [["exception", "OSError", "try again"], "t-retry", ["list", ["retry"]],
                       {"n": 3}, ["einfo", ["exception", "OSError", "try again"], "OSError",
                                  True]]]] in eager
    assert [e[0] for e in eager if e[0] in ("on_success", "on_failure", "on_retry")] == [
        "on_success", "on_failure", "on_retry", "on_success", "on_retry", "on_failure"]


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

    def test_a_failure_keeps_the_history_a_worker_would(self, app):
        @app.task
        def boom():
            raise ValueError("no")
        errors = boom.delay().errors
        assert [(e["type"], e["message"], e["attempt"]) for e in errors] == \
            [("builtins.ValueError", "no", 1)]
