"""Fixtures of litequeue's tests (the helpers they use are in helpers.py), the order of the
test files, and the check of the worker mark.

Every fixture that starts a process reaps it, and every process it spawned, at teardown.
Marks: `worker` on every test that starts a process (a worker, a dashboard, a command,
Celery, Redis, Chromium), `browser` beside it on the Chromium tests, `slow` and `chaos`.
`pytest -m "not worker and not slow"` is the inner loop. LITEQUEUE_CHECK_MARKS=1 (CI sets
it) fails a test that starts a process without the worker mark.
"""

import multiprocessing.process
import os
import subprocess

import pytest

from .helpers import AioProject, Dashboard, InProcess, Project, Workers, closed_at_the_end


@pytest.fixture
def workers(tmp_path):
    pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.reap()


@pytest.fixture
def project(tmp_path):
    yield Project(tmp_path / "proj")


@pytest.fixture
def here():
    """here(project, modules=("tasks",), settings=None): the project's worker in this
    process (an InProcess: work(), work_until(), start(), client()), closed at teardown."""
    with closed_at_the_end(InProcess) as load:
        yield load


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs of 8 MiB (the tests run as root, as CI does). Request it before
    `workers`, so that the workers are reaped before it is unmounted."""
    path = tmp_path / "fs"
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the disk-full test needs root): {done.stderr}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def dashboards():
    started = []

    def start(project, *extra, **kwargs):
        d = Dashboard(project, *extra, **kwargs)
        started.append(d)
        return d
    try:
        yield start
    finally:
        for d in started:
            d.stop()


@pytest.fixture
def aio(tmp_path):
    return AioProject(tmp_path / "aio")


# ---------------------------------------------------------------------------
# The order of the files: the module's sections, top to bottom
# ---------------------------------------------------------------------------

# One test file per section of litequeue.py, in the module's order (STYLE.md's outline),
# so that a run meets a broken lower layer first. A file missing here runs last.
FILE_ORDER = (
    "test_conftest.py",             #       the suite's own rules
    "test_layout.py",               # 0     the module's layout: top-down, section sizes
    "test_settings.py",             # 1-3   exceptions, settings
    "test_serialization.py",        # 4     serialization
    "test_time.py",                 # 5     zones, crontab, intervals, fire planning
    "test_storage.py",              # 6-7   SQL, storage
    "test_side_directory.py",       # 8     side directory
    "test_task_policy.py",          # 9     task policy
    "test_task_context.py",         # 10    task context: the request, signals, hooks
    "test_workflows.py",            # 10b   workflows
    "test_app.py",                  # 11    app
    "test_celery_app.py",
    "test_eager.py",
    "test_api_limits.py",
    "test_canvas.py",               # 12    canvas
    "test_hostile_chords.py",
    "test_task_code.py",            # 14    worker: task code
    "test_child.py",                # 15    worker: the child
    "test_child_steps.py",
    "test_concurrency.py",
    "test_global_limits.py",
    "test_failures.py",
    "test_worker.py",               # 15-16 the child and the supervisor, end to end
    "test_supervisor_steps.py",     # 16    worker: the supervisor
    "test_process_limits.py",
    "test_scheduler.py",
    "test_supervisor.py",
    "test_worker_controls.py",
    "test_hostile_rows.py",
    "test_hostile_limits.py",
    "test_fuzz_rows.py",
    "test_monitoring.py",           # 17    monitoring
    "test_mails.py",
    "test_dashboard_ui.py",
    "test_dashboard_security.py",
    "test_cli.py",                  # 18    CLI
    "test_portability.py",          # 19    the same tasks on Celery
    "test_conformance.py",          #       Celery's own examples on both engines
)

# Files whose tests xdist may spread over its processes one by one, instead of sending the
# whole file to one process (--dist loadfile): each conformance program is independent and
# starts its own workers, and together they are too slow for one process.
SPREAD_FILES = ("tests/test_conformance.py",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, except that the tests of SPREAD_FILES go out one by one."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SpreadSomeFiles(LoadFileScheduling):
        def _split_scope(self, nodeid):
            if nodeid.split("::", 1)[0] in SPREAD_FILES:
                return nodeid
            return super()._split_scope(nodeid)
    return SpreadSomeFiles(config, log)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FILE_ORDER)}
    # A stable sort: each file keeps its own order.
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


# ---------------------------------------------------------------------------
# The worker mark: on every test that starts a process, checked
# ---------------------------------------------------------------------------

# LITEQUEUE_CHECK_MARKS=1 (CI sets it) fails a test that starts a process without the
# worker mark: every way this process starts another (subprocess and everything built on
# it, such as asyncio's and selenium's; multiprocessing; os.fork, os.system, os.posix_spawn)
# is watched while a test runs, its fixtures' setup and teardown included. It also lists the
# tests that carry the mark and started nothing, which the inner loop leaves out for nothing.
CHECK_MARKS = os.environ.get("LITEQUEUE_CHECK_MARKS") == "1"
_started = {}               # nodeid of the running test -> what it started
_marked_idle = []           # tests with the worker mark that started nothing
_running = None


def _note(what):
    if _running is not None:
        _started.setdefault(_running, []).append(what)


def _watch_process_starts():
    execute_child = subprocess.Popen._execute_child

    def watched_execute_child(self, args, *more, **kwargs):
        _note(f"subprocess {args if isinstance(args, str) else args[0]}")
        return execute_child(self, args, *more, **kwargs)
    subprocess.Popen._execute_child = watched_execute_child

    start = multiprocessing.process.BaseProcess.start

    def watched_start(self):
        _note(f"multiprocessing {self.name}")
        return start(self)
    multiprocessing.process.BaseProcess.start = watched_start

    os.register_at_fork(before=lambda: _note("fork"))
    for name in ("system", "posix_spawn", "posix_spawnp"):
        def watched(*args, _call=getattr(os, name), _name=name, **kwargs):
            _note(f"os.{_name}")
            return _call(*args, **kwargs)
        setattr(os, name, watched)


if CHECK_MARKS:
    _watch_process_starts()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _running
    _running = item.nodeid
    try:
        yield
    finally:
        _running = None
        if CHECK_MARKS and item.get_closest_marker("worker") and item.nodeid not in _started:
            _marked_idle.append(item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not CHECK_MARKS or call.when == "setup" or item.get_closest_marker("worker"):
        return
    started = _started.get(item.nodeid)
    if started and report.passed and not getattr(item, "_lq_reported", False):
        item._lq_reported = True
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} started a process without the worker mark "
                           f"(@pytest.mark.worker): {', '.join(sorted(set(started))[:5])}")


def pytest_terminal_summary(terminalreporter):
    if CHECK_MARKS and _marked_idle:
        terminalreporter.write_sep("-", f"{len(_marked_idle)} tests carry the worker mark and "
                                        "started no process")
        for nodeid in _marked_idle:
            terminalreporter.write_line(nodeid)
