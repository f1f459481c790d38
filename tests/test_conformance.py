"""Conformance: small programs doing what Celery's own examples and guides show a user
doing, each run on litequeue and on Celery 5 with a real Redis and a real prefork worker,
with the same calling code; the answers must be the same.

Every program is a folder under tests/conformance/ written for litequeue: a tasks module
(and any module beside it) and client.py, whose observe(seen) records what a user would
look at (results, states, exception types and messages, reprs, request fields). A line that
a port from Celery changes ends with `# celery: <the Celery line>`; the Celery run puts
that line in its place (REDIS_URL in it becomes this test's Redis URL; ` \\n ` separates
Celery lines that one litequeue line replaces), and nothing else changes. The count of
the Celery lines so replaced is what the port cost.

An observation may differ only where DIFFERENCES says so, naming the bullet of README's
"What does not carry over" that gives the reason; a listed observation that no longer
differs fails too, so the list cannot go stale. CONFORMANCE_REPORT=DIR writes each
program's observations on both engines to DIR/<program>.json.
"""

import itertools
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from .helpers import LITEQUEUE_PY, Folder, run, wait_until
from .test_portability import redis_server as portable_redis

pytestmark = [pytest.mark.timeout(150), pytest.mark.worker]

PROGRAMS_DIR = Path(__file__).resolve().with_name("conformance")
PROGRAMS = sorted(p.parent.name for p in PROGRAMS_DIR.glob("*/client.py"))
PORT_MARK = re.compile(r"^(?P<indent>\s*)(?P<code>.*?)\s*# celery: (?P<celery>.*)$")

# How each program is run when it needs more than `-A tasks` and a worker on the default
# queue: the modules its worker imports (litequeue's -A, and Celery's -A app), the database
# path LiteQueue(...) names relative to the folder, the queues a worker serves (beside
# the engine's default queue), beat for Celery's periodic tasks, no worker at all.
SETUP = {
    "myapp_example": {"modules": ["myapp"], "celery_app": "myapp"},
    "next_steps_proj": {"modules": ["proj.celery"], "celery_app": "proj",
                        "db": "proj/jobs.sqlite"},
    "next_steps_routing": {"modules": ["proj.celery"], "celery_app": "proj",
                           "db": "proj/jobs.sqlite", "queues": ["hipri", "lopri"]},
    "first_steps_config": {"queues": ["low-priority"]},
    "calling_options": {"queues": ["priority.high"]},
    "periodic_on_after_configure": {"modules": ["myapp"], "celery_app": "myapp",
                                    "beat": True},
    "periodic_beat_schedule": {"beat": True},
    "periodic_schedules": {"worker": False},
    "application_autodiscover": {"modules": ["proj"], "celery_app": "proj",
                                 "db": "proj/jobs.sqlite"},
    "stamping": {"modules": ["myapp"], "celery_app": "myapp"},
    "eventlet_shapes": {"modules": ["app"], "celery_app": "app"},
}
DEFAULT_QUEUE = {"litequeue": "default", "celery": "celery"}

# program -> {observation: the bullet of README's "What does not carry over" that says why
# it differs}.
DIFFERENCES = {
    "calling_basics": {"an unknown keyword": "Messages", "too few arguments": "Messages"},
    "calling_serialization": {
        "round trip dict with int keys": "msgpack, not JSON",
        "task sees dict with int keys": "msgpack, not JSON",
        "round trip set": "msgpack, not JSON", "task sees set": "msgpack, not JSON"},
    "control": {"result.revoke terminate": "revoke() answers"},
    "first_steps_config": {"default queue routing key": "Default queue"},
    "next_steps_routing": {"no route": "Default queue"},
    "periodic_on_after_configure": {"entry names": "App signals"},
    "periodic_schedules": {"bad day name": "Messages", "bad field": "Messages"},
    "pydantic_example": {"invalid argument": "msgpack, not JSON"},
    "result_api": {
        "name without result_extended": "Results are rows",
        "args without result_extended": "Results are rows",
        "get with timeout on a waiting task": "Messages",
        "revoke a waiting task": "revoke() answers"},
    "resultgraph": {"children of A's run": "Results are rows"},
    "tasks_apply_eager": {"typing: too few": "Messages", "typing: too many": "Messages"},
    "tasks_logging": {"logger here": "Loggers", "logger in the worker": "Loggers"},
    "tasks_names": {"send_task of an unknown name": "Messages"},
    "tasks_time_limits": {"hard limit": "Messages", "soft limit not caught": "Messages"},
}
README = Path(__file__).resolve().parent.parent / "README.md"


README_BEGIN = "<!-- conformance differences: begin (python -m tests.test_conformance) -->"
README_END = "<!-- conformance differences: end -->"


def readme_table():
    """README's table of the observations that differ, generated from DIFFERENCES (which
    the suite holds to what the programs observe): by reason, then program."""
    by_reason = {}
    for program, allowed in sorted(DIFFERENCES.items()):
        for observation, why in allowed.items():
            by_reason.setdefault(why, {}).setdefault(program, []).append(observation)
    total = sum(len(a) for a in DIFFERENCES.values())
    lines = [README_BEGIN,
             f"{len(PROGRAMS)} programs; the {total} observations that differ, each allowed "
             "by the bullet it names:", "",
             "| reason (bullet below) | program: observations |", "|---|---|"]
    for why, programs in sorted(by_reason.items(), key=lambda kv: (-sum(
            map(len, kv[1].values())), kv[0])):
        cells = "; ".join(f"`{p}`: " + ", ".join(f"\"{o}\"" for o in sorted(obs))
                          for p, obs in sorted(programs.items()))
        lines.append(f"| {why} | {cells} |")
    return "\n".join(lines + [README_END])


def _readme_section(text):
    section = text[text.index("### What does not carry over"):]
    return section[:section.index("\n## ")]


def test_every_allowed_difference_is_one_readme_names():
    """Each reason in DIFFERENCES is a bullet of README's "What does not carry over",
    whose table of differences is the one DIFFERENCES generates."""
    section = _readme_section(README.read_text())
    reasons = {why for allowed in DIFFERENCES.values() for why in allowed.values()}
    assert {why for why in reasons if f"- **{why}**" not in section} == set()
    assert readme_table() in section, \
        "README's table is stale: python -m tests.test_conformance rewrites it"


RUN_CLIENT = """\
import json, traceback
from observe import Observations
seen = Observations()
try:
    import client
    client.observe(seen)
except BaseException as exc:
    seen["<client stopped>"] = [type(exc).__name__, str(exc),
                                traceback.format_exc().splitlines()[-3:]]
print()
print(json.dumps(seen))
"""


def port(program, dest, engine, redis_url):
    """Copy the program into dest for engine; the number of lines a port changes."""
    changed = 0
    src = PROGRAMS_DIR / program
    for path in sorted(src.rglob("*")):
        if "__pycache__" in path.parts or path.is_dir():
            continue
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for line in path.read_text().splitlines():
            mark = PORT_MARK.match(line)
            if mark:
                celery = mark["celery"].split(" \\n ")     # one line here, several there
                changed += len(celery)
                if engine == "celery":
                    line = "\n".join(mark["indent"] + part.replace("REDIS_URL", repr(redis_url))
                                     for part in celery)
                else:
                    line = mark["indent"] + mark["code"]
            lines.append(line)
        target.write_text("\n".join(lines) + "\n")
    shutil.copy(PROGRAMS_DIR / "observe.py", dest / "observe.py")
    return changed


# ---------------------------------------------------------------------------
# Redis: one server per test process, one database number per test
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A redis-server on a free loopback port for this test process (64 databases);
    stopped at the end of the session."""
    with portable_redis(tmp_path_factory.mktemp("redis"), "--databases", "64") as port:
        yield port


_db_numbers = itertools.count(1)


@pytest.fixture
def redis_url(redis_server):
    """This test's own database on the session's server (Celery's keys and its fanout
    channels carry the database number, so tests do not see each other)."""
    number = next(_db_numbers)
    assert number < 64, "more tests in one process than the server has databases"
    return f"redis://127.0.0.1:{redis_server}/{number}"


# ---------------------------------------------------------------------------
# Running a program on one engine
# ---------------------------------------------------------------------------

def start_litequeue(workers, folder, setup):
    cmd = [sys.executable, str(LITEQUEUE_PY), "worker", folder.db]
    for module in setup.get("modules", ["tasks"]):
        cmd += ["-A", module]
    cmd += ["-c", "2", "-l", "INFO"]
    queues = setup.get("queues")
    if queues:
        cmd += ["-Q", ",".join([DEFAULT_QUEUE["litequeue"], *queues])]
    workers.start(folder, cmd=cmd, concurrency=2)


def start_celery(workers, folder, setup, redis_url):
    """`celery -A APP worker -P prefork -c 2` (with -B for beat), reaped by the workers
    fixture; returns once it answers a ping."""
    from celery import Celery

    cmd = [sys.executable, "-m", "celery", "-A", setup.get("celery_app", "tasks"), "worker",
           "-P", "prefork", "-c", "2", "--loglevel=INFO", "--without-mingle",
           "--without-gossip"]
    queues = setup.get("queues")
    if queues:
        cmd += ["-Q", ",".join([DEFAULT_QUEUE["celery"], *queues])]
    if setup.get("beat"):
        cmd += ["-B", "-s", str(folder.dir / "celerybeat-schedule")]
    worker = workers.start(folder, cmd=cmd, ready=False)
    probe = Celery("probe", broker=redis_url, backend=redis_url, set_as_current=False)
    try:
        def answers():
            if worker.proc.poll() is not None:
                worker._fail(f"celery worker exited with {worker.proc.returncode}")
            return probe.control.ping(timeout=0.2)
        wait_until(answers, 30, lambda: f"celery worker to answer a ping\n{worker.log_text()}")
    finally:
        probe.close()


def observe(program, engine, directory, workers, redis_url):
    """{observation: value} of the program's client on engine, and the lines ported."""
    setup = SETUP.get(program, {})
    directory.mkdir(parents=True)
    changed = port(program, directory, engine, redis_url)
    folder = Folder(directory)
    folder.db = str(directory / setup.get("db", "jobs.sqlite"))
    if setup.get("worker", True):
        try:
            if engine == "litequeue":
                start_litequeue(workers, folder, setup)
            else:
                start_celery(workers, folder, setup, redis_url)
        except pytest.fail.Exception as exc:
            return {"<worker did not start>": str(exc).splitlines()[-8:]}, changed
    env = dict(os.environ, PYTHONPATH=str(LITEQUEUE_PY.parent))
    done = run([sys.executable, "-c", RUN_CLIENT], cwd=directory, timeout=100, env=env)
    if done.returncode != 0 or not done.stdout.strip():
        return {"<client exited>": [done.returncode, done.stderr.splitlines()[-8:]]}, changed
    return json.loads(done.stdout.strip().splitlines()[-1]), changed


def test_program_runs_the_same_on_litequeue_and_on_celery(program, tmp_path, redis_url,
                                                          workers):
    started = time.monotonic()
    seen, changed = {}, {}
    for engine in ("litequeue", "celery"):
        seen[engine], changed[engine] = observe(program, engine, tmp_path / engine, workers,
                                                redis_url)
        workers.reap()      # this engine's worker stops before the other's starts
        workers.started.clear()
    report = os.environ.get("CONFORMANCE_REPORT")
    if report:
        Path(report).mkdir(parents=True, exist_ok=True)
        (Path(report) / f"{program}.json").write_text(json.dumps(
            {"port_lines": changed["litequeue"], "seconds": time.monotonic() - started,
             **seen}, indent=1))
    broken = {k: v for k, v in seen["celery"].items() if k.startswith("<")}
    assert not broken, f"the program does not run on Celery itself: {broken}"
    allowed = DIFFERENCES.get(program, {})
    names = sorted(set(seen["litequeue"]) | set(seen["celery"]))
    missing = object()
    differs = {name: {engine: seen[engine].get(name, missing) for engine in seen}
               for name in names
               if seen["litequeue"].get(name, missing) != seen["celery"].get(name, missing)}
    unexplained = {name: d for name, d in differs.items() if name not in allowed}
    stale = sorted(set(allowed) - set(differs))
    assert not unexplained and not stale, json.dumps(
        {"differ": unexplained, "listed in DIFFERENCES but the same": stale}, indent=1,
        default=lambda v: "<absent>")


def pytest_generate_tests(metafunc):
    if "program" in metafunc.fixturenames:
        metafunc.parametrize("program", PROGRAMS)


if __name__ == "__main__":
    # Rewrite README's table of differences from DIFFERENCES.
    text = README.read_text()
    if README_BEGIN in text:
        start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
        text = text[:start] + readme_table() + text[end:]
    else:
        head = text.index("### What does not carry over")
        at = head + len(_readme_section(text[head:]))
        text = text[:at] + "\n\n" + readme_table() + text[at:]
    README.write_text(text)
