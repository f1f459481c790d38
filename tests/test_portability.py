"""Portability: the same tasks module and calling program on litequeue and on Celery with
Redis, and what importing litequeue costs a worker.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from .helpers import LITEQUEUE_PY, Project, python, task_source, wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.worker]


# The app lines of tasks/portable/tasks.py, and what the Celery run puts in their place:
# only these differ between the engines.
APP_LINES = {
    "litequeue": 'from litequeue import LiteQueue, chain, chord, group, signature\n'
                 'app = LiteQueue("jobs.sqlite")',
    "celery": 'from celery import Celery, chain, chord, group, signature\n'
              'app = Celery("tasks", broker="{redis_url}", backend="{redis_url}")\n'
              'app.conf.broker_connection_retry_on_startup = True',
}


# The calling process, the same for both engines (it imports tasks/portable/client.py).
PORTABLE_RUN = "import json, client, tasks\nprint(json.dumps(client.observe(tasks.app, tasks)))"


def _free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_pid(port):
    """The process id of the Redis server answering on 127.0.0.1:port, or None."""
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"INFO server\r\n")
            while not re.search(rb"process_id:\d+\r\n", data):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    found = re.search(rb"process_id:(\d+)\r\n", data)
    return found and int(found.group(1))


def _reap(proc, timeout=5):
    """Terminate a process (and its session's group), wait, then kill."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def redis_server(home, *extra):
    """A real redis-server on a free loopback port, its files in home (extra: more of its
    options); yields the port, always stopped at the end."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (Celery runs here with a real Redis: "
                    "apt-get install redis-server)")
    log = home / "redis.log"
    proc = None
    try:
        for _ in range(3):      # another process may take the free port before Redis does
            port = _free_port()
            cmd = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--daemonize", "no", "--dir", str(home), *extra]
            with open(log, "ab") as out:
                proc = subprocess.Popen(cmd, cwd=home, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            # Ours answering, not another server that took the port first.
            wait_until(lambda: proc.poll() is not None or _redis_pid(port) == proc.pid, 15,
                       lambda: f"redis-server to answer on port {port}\n{log.read_text()}")
            if proc.poll() is None:
                break
            proc.wait()
        else:
            pytest.fail(f"redis-server did not start:\n{log.read_text()}")
        yield port
    finally:
        if proc is not None:
            _reap(proc)


@pytest.fixture
def redis_url(tmp_path):
    """A real redis-server for this test only, in its own directory."""
    home = tmp_path / "redis"
    home.mkdir()
    with redis_server(home) as port:
        yield f"redis://127.0.0.1:{port}/0"


def start_celery_worker(workers, project, redis_url):
    """`python -m celery -A tasks worker -P prefork -c 2` in the project's directory
    (reaped by the workers fixture); returns once it answers a ping."""
    from celery import Celery

    worker = workers.start(project, cmd=[
        sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "prefork", "-c", "2",
        "--loglevel=WARNING", "--without-mingle", "--without-gossip"], ready=False)
    probe = Celery("probe", broker=redis_url, backend=redis_url, set_as_current=False)
    try:
        def answers():
            if worker.proc.poll() is not None:
                worker._fail(f"celery worker exited with {worker.proc.returncode}")
            return probe.control.ping(timeout=0.2)
        wait_until(answers, 30, lambda: f"celery worker to answer a ping\n{worker.log_text()}")
    finally:
        probe.close()
    return worker


class TestPortability:

    def test_importing_litequeue_leaves_the_dashboards_web_server_out(self, tmp_path):
        """A worker process, a producer script: neither pays for http.server (with
        http.client, email and ssl); the dashboard imports it when it starts."""
        probe = ("import sys, litequeue; print(sorted(m for m in ('http.server', "
                 "'http.client', 'ssl', 'email.message') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, check=True,
                             capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(LITEQUEUE_PY.parent)))
        assert out.stdout.strip() == "[]", out.stdout

    # redis_url comes before workers: fixtures stop in reverse order, so the Celery
    # worker stops while its broker still runs.
    def test_a_tasks_module_moves_to_celery_by_changing_the_app_line(
            self, tmp_path, redis_url, workers):
        """DESIGN 8: the same tasks module and the same calling program give the same
        answers on litequeue and on Celery 5 with Redis (a real prefork worker); only the
        app lines differ."""
        seen = {}
        for engine in ("litequeue", "celery"):
            proj = Project(tmp_path / engine)
            app_lines = APP_LINES[engine].replace("{redis_url}", redis_url)
            source = task_source("portable/tasks.py")
            assert source.count(APP_LINES["litequeue"]) == 1
            (proj.dir / "tasks.py").write_text(source.replace(APP_LINES["litequeue"], app_lines))
            (proj.dir / "client.py").write_text(task_source("portable/client.py"))
            if engine == "litequeue":
                workers.start(proj, concurrency=2)
            else:
                start_celery_worker(workers, proj, redis_url)
            seen[engine] = json.loads(python(PORTABLE_RUN, proj.dir, timeout=90))
        assert seen["litequeue"] == seen["celery"]
        assert seen["celery"] == {
            "delay": [8, True, True, False, "SUCCESS", 8], "countdown": 3, "by_id": 3,
            "signature": 5, "signature by name": 5, "partial": 5, "partial countdown": 5,
            "self.retry": 2,
            "autoretry": ["FAILURE", "OSError", "still broken", True],
            "propagate": ["ZeroDivisionError", "FAILURE"],
            "chain |": [60, 6, 3], "chain()": 16, "chain .si": 30,
            "group": [[0, 2, 4, 6, 8], True, True, 5, 5, True],
            "chord": 90,
            "chord failing member": [
                "FAILURE", "ChordError",
                "Dependency <member id> raised ZeroDivisionError('division by zero')"],
            "link": [4, 14],
            "link_error": ["FAILURE", "ZeroDivisionError", True],
            "update_state": ["PROGRESS", {"current": 1, "total": 2},
                             {"current": 1, "total": 2}, "done", "SUCCESS"]}
