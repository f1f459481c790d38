"""celery.contrib.pytest for litequeue: the session app is a LiteQueue on a fresh SQLite
file in a temporary directory, and the session worker is a real `litequeue.py worker`
process (prefork) that imports the suite's task modules, with the session app's
database and settings made by celery.contrib.testing.worker_app; it is stopped, and its process
group reaped, at the end of the session.

Harness adapters (the only things in the shim that are not renames). Celery's integration
conftest calls them around every test, and they do no task, canvas or result work:
- app.set_current(), app.set_default(): nothing to do; litequeue's current app is the
  latest one made, which is this one (the only app in the test process).
- app.amqp.queues: the app's queues as litequeue's settings say: {task_default_queue}.
  The app is made with task_default_queue="celery", Celery's default queue name, and the
  worker serves that queue (-Q celery).
- app.backend.ensure_chords_allowed(): returns, because litequeue's database runs chords
  (88 tests ask it first). Any other use of app.backend refuses with NotImplementedError,
  and isinstance(app.backend, <any Celery backend class>) is False.
The session app is made when this module is imported (Celery's conftest imports it before
the tests are collected): the suite names @shared_task handles in its parametrize lists,
and a litequeue handle looks its task up in the latest app, so one must exist by then, as
Celery's default app does. The function-scoped `celery_app` is a new LiteQueue per test on
the same database (the latest app is litequeue's current one), as Celery makes one per
test.
Class-based tasks (celery_class_tasks) are not registered: litequeue has no
register_task; the runner's report says so.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import litequeue
import pytest

from .._missing import MissingObject

QUEUE = "celery"
WORKER_APP = "celery.contrib.testing.worker_app"


class _Backend(MissingObject):
    def __init__(self):
        super().__init__("result backend object (app.backend)")

    def ensure_chords_allowed(self):
        return None


class _HarnessApp(litequeue.LiteQueue):
    """A LiteQueue plus the harness calls listed in the module's docstring."""

    def set_current(self):
        pass

    def set_default(self):
        pass

    @property
    def amqp(self):
        return type("Amqp", (), {"queues": {self.conf.task_default_queue: None}})()

    @property
    def backend(self):
        return _Backend()


def _make_app(path, config=None):
    app = _HarnessApp(path)
    if config is not None:
        # litequeue's own way to read a Celery config: names with no meaning here
        # (broker, backend, cassandra_*) are passed over or ignored.
        app.config_from_object(dict(config))
    app.conf.task_default_queue = QUEUE
    return app


# A fresh directory per test process (each xdist process has its own app and worker).
_APP = _make_app(os.path.join(tempfile.mkdtemp(prefix="litequeue-", dir=os.environ.get(
    "LQ_SUITE_DB_DIR")), "celery-suite.sqlite"))


@pytest.fixture(scope="session")
def celery_session_app(celery_config):
    _APP.config_from_object(dict(celery_config))
    yield _APP


@pytest.fixture
def celery_app(celery_session_app, celery_config):
    """A new app per test on the session's database, as Celery's celery_app is: what a
    test changes in app.conf (task_always_eager...) ends with it."""
    yield _make_app(celery_session_app.path, celery_config)


@pytest.fixture(scope="session")
def celery_session_worker(request, celery_session_app, celery_includes, celery_worker_pool):
    if celery_worker_pool != "prefork":
        pytest.fail(f"the litequeue shim runs a prefork worker, not {celery_worker_pool!r}")
    concurrency = os.environ.get("LQ_SUITE_CONCURRENCY", "4")
    log_path = os.path.splitext(celery_session_app.path)[0] + "-worker.log"
    command = [sys.executable, litequeue.__file__, "worker", celery_session_app.path,
               "-c", concurrency, "-Q", QUEUE, "-l", "info", "-A", WORKER_APP]
    for module in sorted(celery_includes):
        command += ["-A", module]
    env = dict(os.environ, LQ_SUITE_APP_DB=celery_session_app.path,
               LQ_SUITE_APP_SETTINGS=json.dumps({"task_default_queue": QUEUE}))
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(command, cwd=str(request.config.rootpath), env=env,
                                  stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        _wait_until_up(celery_session_app, worker, log_path)
        yield worker
    finally:
        _reap(worker)


def _wait_until_up(app, worker, log_path, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            pytest.fail(f"the litequeue worker exited ({worker.returncode}); see {log_path}")
        try:
            if any(w.get("alive") for w in app.admin.workers()):
                return
        except litequeue.LitequeueError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the litequeue worker did not come up in {timeout:.0f}s; see {log_path}")


def _reap(worker):
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(worker.pid, signal.SIGKILL)      # whatever it left behind
    except ProcessLookupError:
        pass
    worker.wait()
