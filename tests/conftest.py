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
