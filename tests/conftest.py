"""Fixtures of litequeue's tests (the helpers they use are in helpers.py).

Every fixture that starts a process reaps it, and every process it spawned, at teardown.
"""

import subprocess
import sys
import types

import pytest

import litequeue

from . import helpers
from .helpers import AioProject, Dashboard, Project, Workers


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


# test_dashboard_security.py still imports its helpers and fixtures from the module they
# lived in before the tests moved here (its owner changes that line with their next edit of
# it): that name is these helpers and fixtures.
_legacy = types.ModuleType("test_litequeue", "helpers.py and conftest.py's fixtures")
_legacy.__dict__.update({k: v for k, v in vars(helpers).items() if not k.startswith("__")})
_legacy.__dict__.update(PENDING=litequeue.PENDING, REVOKED=litequeue.REVOKED,
                        SCHEDULED=litequeue.SCHEDULED, dashboards=dashboards, project=project)
sys.modules.setdefault("test_litequeue", _legacy)


# ---------------------------------------------------------------------------
# The order of the files: the module's sections, top to bottom
# ---------------------------------------------------------------------------

# One test file per section of litequeue.py, in the module's order (STYLE.md's outline),
# so that a run meets a broken lower layer first. A file missing here runs last.
FILE_ORDER = (
    "test_settings.py",             # 1-3   exceptions, settings
    "test_serialization.py",        # 4     serialization
    "test_time.py",                 # 5     zones, crontab, intervals, fire planning
    "test_storage.py",              # 6-7   SQL, storage
    "test_side_directory.py",       # 8     side directory
    "test_task_policy.py",          # 9     task policy
    "test_app.py",                  # 11    app
    "test_eager.py",
    "test_api_limits.py",
    "test_canvas.py",               # 12    canvas
    "test_hostile_chords.py",
    "test_task_code.py",            # 14    worker: task code
    "test_child.py",                # 15    worker: the child
    "test_concurrency.py",
    "test_failures.py",
    "test_worker.py",               # 15-16 the child and the supervisor, end to end
    "test_process_limits.py",       # 16    worker: the supervisor
    "test_scheduler.py",
    "test_supervisor.py",
    "test_hostile_rows.py",
    "test_hostile_limits.py",
    "test_fuzz_rows.py",
    "test_monitoring.py",           # 17    monitoring
    "test_mails.py",
    "test_dashboard_ui.py",
    "test_dashboard_security.py",
    "test_cli.py",                  # 18    CLI
    "test_portability.py",          # 19    the same tasks on Celery
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FILE_ORDER)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))    # stable: keeps
    # each file's own order
