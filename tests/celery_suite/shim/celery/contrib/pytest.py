"""celery.contrib.pytest for litequeue.

Fixtures: the session app is a LiteQueue on a fresh SQLite file in a temporary directory;
`celery_app` is a new LiteQueue per test on the same file (Celery too makes one per test,
so what a test changes in app.conf, such as task_always_eager, ends with it; litequeue's
current app is the latest one made). The session worker is a real `litequeue.py worker`
process (prefork, -c $LQ_SUITE_CONCURRENCY) that imports celery.contrib.testing.worker_app
(the session database's app, configured as the session app is: config_from_object of the
suite's celery_config, then the queue) and the suite's task modules, in this process's
environment (REDIS_HOST/REDIS_PORT of the suite's side channel, TEST_BACKEND...); it is
stopped, and its process group reaped, at the end of the session.

The session app is made when this module is imported, before the tests are collected: the
suite names @shared_task handles in its parametrize lists, and a litequeue handle looks its
task up in the latest app, so one must exist by then (as Celery's default app does).

Harness adapters, the only things in the shim that are not renames (each only where
LiteQueue has no attribute of that name). Celery's integration conftest calls them around
every test, and they do no task, canvas or result work:
- app.set_current(), app.set_default(): nothing to do (see above).
- app.amqp.queues: the app's one queue, as its settings say ({task_default_queue}). The
  apps are made with task_default_queue="celery", Celery's default queue name, and the
  worker serves that queue (-Q celery).
- app.backend.ensure_chords_allowed(): returns, since litequeue runs chords (88 tests ask
  it first, and skip if it raises). Any other use of app.backend raises
  NotImplementedError, and isinstance(app.backend, <a Celery backend class>) is False.
Class-based tasks (celery_class_tasks) are not registered: litequeue has no register_task.
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


class _Harness:
    """The harness calls listed in the module's docstring."""

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


# Only those litequeue does not have itself: its own always win.
_HarnessApp = type("_HarnessApp", (litequeue.LiteQueue,), {
    name: value for name, value in vars(_Harness).items()
    if not name.startswith("__") and not hasattr(litequeue.LiteQueue, name)})


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
def celery_session_worker(request, celery_session_app, celery_config, celery_includes,
                          celery_worker_pool):
    if celery_worker_pool != "prefork":
        pytest.fail(f"the litequeue shim runs a prefork worker, not {celery_worker_pool!r}")
    concurrency = os.environ.get("LQ_SUITE_CONCURRENCY", "4")
    log_path = os.path.splitext(celery_session_app.path)[0] + "-worker.log"
    command = [sys.executable, litequeue.__file__, "worker", celery_session_app.path,
               "-c", concurrency, "-Q", QUEUE, "-l", "info", "-A", WORKER_APP]
    for module in sorted(celery_includes):
        command += ["-A", module]
    env = dict(os.environ, LQ_SUITE_APP_DB=celery_session_app.path,
               LQ_SUITE_APP_CONFIG=json.dumps(dict(celery_config)), LQ_SUITE_QUEUE=QUEUE)
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
