"""The suite's own rules (conftest.py): every test file has its place in the module's order,
and LITEQUEUE_CHECK_MARKS=1 fails a test that starts a process without the worker mark.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FILE_ORDER

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).resolve().parent

# Three tests in a copy of the suite's package: one starts a process without the mark, one
# with it, one starts nothing.
MARKED_OR_NOT = '''\
import subprocess

import pytest


def test_unmarked_that_starts_a_process():
    subprocess.run(["true"], check=True)


@pytest.mark.worker
def test_marked_that_starts_a_process():
    subprocess.run(["true"], check=True)


def test_unmarked_that_starts_nothing():
    assert True
'''


def test_every_test_file_has_its_place_in_the_module_s_order():
    files = sorted(path.name for path in TESTS.glob("test_*.py"))
    assert sorted(FILE_ORDER) == files
    assert len(set(FILE_ORDER)) == len(FILE_ORDER)


@pytest.mark.worker
def test_a_test_that_starts_a_process_without_the_worker_mark_fails(tmp_path):
    package = tmp_path / "suite"
    shutil.copytree(TESTS / "tasks", package / "tasks")
    for name in ("__init__.py", "conftest.py", "helpers.py"):
        shutil.copy(TESTS / name, package / name)
    (package / "test_marked_or_not.py").write_text(MARKED_OR_NOT)
    (tmp_path / "setup.cfg").write_text("[tool:pytest]\nmarkers =\n    worker: a process\n")
    env = dict(os.environ, LITEQUEUE_CHECK_MARKS="1",
               PYTHONPATH=os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "suite"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=90)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "1 failed, 2 passed" in out, out
    assert ("FAILED suite/test_marked_or_not.py::test_unmarked_that_starts_a_process"
            in out), out
    assert "started a process without the worker mark" in out and "subprocess true" in out, out
    # Without the variable nothing is watched, and all three pass.
    del env["LITEQUEUE_CHECK_MARKS"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "suite"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0 and "3 passed" in done.stdout, done.stdout + done.stderr
