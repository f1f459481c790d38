"""Run Celery's own integration canvas suite (t/integration/test_canvas.py of the Celery
sdist) against litequeue, through the renaming shim in shim/celery, or against Celery
itself on a Redis it starts, and report what passes and why the rest fail.

    python tests/celery_suite/run.py [--engine litequeue] [--no-redis-gate] [--json FILE]
    python tests/celery_suite/run.py --engine celery [--redis redis://127.0.0.1:PORT/0]

Celery's files are fetched at run time (pip download of the sdist into a cache directory,
$XDG_CACHE_HOME/litequeue-celery-suite or ~/.cache/...), never kept in this repository.
The suite's tasks module imports pydantic, and its Redis side channel imports redis; when
this interpreter lacks one it needs, it is installed into the same cache directory (pip
install --target), which is put on PYTHONPATH.

litequeue: the tests see the shim as `celery` (first on PYTHONPATH), then the directory
holding litequeue.py (--litequeue-dir, default: the first PYTHONPATH entry that has one,
else this checkout). The shim's session fixtures make a LiteQueue on a fresh SQLite file in
the run directory and start `litequeue.py worker` on it, with the session app's settings
(the suite's celery_config) and this script's environment, as the test process has them.
The suite's TEST_BROKER and TEST_BACKEND say "litequeue://"; result_backend depends on the
Redis gate:

- Gate open (--redis-gate, the default): this script starts a redis-server on a free
  loopback port (reaped at the end), for the suite's Redis *side channel* only: its tasks
  and tests talk to Redis themselves (tasks.py's get_redis_connection, used by redis_echo,
  redis_count, sum_and_record..., and by await_redis_echo/await_redis_count in the
  tests), at REDIS_HOST/REDIS_PORT, which the test process and the worker both get from
  here. result_backend is that server's URL, set through Celery's own override file for
  the suite's celery_config (integration-tests-config.json in the run directory,
  pytest's rootdir), so the test process's apps and the worker's app (configured from
  that same celery_config) both have it, and app.conf.result_backend reads it back:
  litequeue reads a Celery backend setting back as it was set and otherwise ignores it
  (it has one store, the SQLite file). litequeue stores nothing in that Redis, and the
  shim gains no code for it.

  Why this is honest: the 75 places where the suite asks
  `result_backend.startswith('redis')` (one: 'redis' or 'rpc') and skips otherwise
  ("Requires redis result backend") ask about the backend's capabilities: does it run
  chords natively (a chord's body fires when its header's last task ends, a header's
  error reaches the body's errbacks, chords nest in chains, groups and chords), and does
  it keep every result reliably for the test to read? litequeue's own store does all of
  that; Celery's suite asks by name because its other backends (rpc, cache, ...) do not.
  Past the gate every test exercises litequeue's own canvas, chord and result machinery,
  through litequeue's own objects (the shim only renames them). A test that reaches for
  the Redis backend's internals instead (app.backend.result_consumer, get_key_for_group
  and its chord keys in Redis) meets the shim's placeholder and fails as "cannot run
  here", never passes; so does test_chord_header_id_duplicated_on_rabbitmq_msg_duplication,
  which makes RabbitMQ redeliver a message by republishing it through Celery's kombu
  producer. TEST_BACKEND stays "litequeue://": the suite reads it once, to mark
  test_error_propagates_from_chord xfail on a Redis backend for a bug of Celery's Redis
  backend (#6437), which is no question of capability and not litequeue's. One check is
  looser with the gate open: test_group_args_and_kwargs accepts a chord's results in any
  order on a Redis backend (Redis does not promise their order), and checks the order
  otherwise.
- Gate closed (--no-redis-gate, or -n: the side channel's fixed keys, such as
  "redis-echo", would be shared between xdist processes): no Redis runs and
  result_backend is "litequeue://". A test behind the gate skips itself, as it does on
  Celery with any other backend (or, where app.conf has no result_backend to read, fails
  on reading it), and one that talks to Redis for its side channel fails at once on
  REDIS_PORT, a closed port. Both kinds are reported as "cannot run here".

celery: the real celery package (no shim) with Celery's own pytest fixtures (its session
worker is Celery's WorkController, prefork), broker and backend both on a redis-server this
script starts on a free loopback port (or the one --redis names), reaped at the end.

Both engines: no reruns (Celery's CI reruns flaky tests up to 5 times; that plugin is not
used here), one timeout for every test (--timeout, default 90 s, in place of the suite's
per-test marks), pytest's cache off.
"""
import argparse
import collections
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIM = HERE / "shim"
REPO = HERE.parent.parent
SUITE_FILES = ("t/__init__.py", "t/canvas_helpers.py", "t/integration/__init__.py",
               "t/integration/conftest.py", "t/integration/tasks.py",
               "t/integration/test_canvas.py")
TEST_PATH = "t/integration/test_canvas.py"
# Celery's own override file for its integration suite's celery_config (read from pytest's
# rootdir, the run directory): the Redis gate's result_backend goes there.
GATE_FILE = "integration-tests-config.json"
# Celery's own pytest settings for its suites (pyproject.toml): its test classes are named
# test_*, an xfail that passes is a failure, and the marks it uses.
PYTEST_INI = """\
[pytest]
python_classes = test_*
xfail_strict = true
markers =
    flaky: Celery's rerun mark (no rerun plugin is loaded here)
    timeout: pytest-timeout
"""


# ---------------------------------------------------------------------------------------
# Fetching Celery's suite and what it imports
# ---------------------------------------------------------------------------------------

def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "litequeue-celery-suite"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_suite(version, cache):
    """The directory holding Celery's t/ package of that sdist, downloaded if not cached."""
    root = cache / f"celery-{version}"
    if all((root / name).is_file() for name in SUITE_FILES):
        return root
    download = cache / "download"
    download.mkdir(exist_ok=True)
    tarball = download / f"celery-{version}.tar.gz"
    if not tarball.is_file():
        print(f"downloading the celery {version} sdist ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", f"celery=={version}", "-d", str(download)],
                       check=True)
    prefix = f"celery-{version}/"
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=".extract-"))
    try:
        with tarfile.open(tarball) as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and m.name[len(prefix):] in SUITE_FILES]
            tar.extractall(staging, members=members, filter="data")
        missing = [n for n in SUITE_FILES if not (staging / prefix / n).is_file()]
        if missing:
            sys.exit(f"the celery {version} sdist lacks {missing}")
        if root.exists():
            shutil.rmtree(root)
        (staging / prefix).rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def ensure_modules(cache, modules):
    """A directory to put on PYTHONPATH so that these modules import (None: they already
    do): pydantic (the suite's tasks import it), redis (its side channel)."""
    def missing(env=None):
        return [m for m in modules if subprocess.run(
            [sys.executable, "-c", f"import {m}"], capture_output=True, env=env).returncode]
    if not missing():
        return None
    deps = cache / "deps"
    lacking = missing(dict(os.environ, PYTHONPATH=str(deps)))
    if lacking:
        print(f"installing {', '.join(lacking)} (the suite's tasks import them) into the "
              "cache ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target",
                        str(deps), *lacking], check=True)
    return deps


# ---------------------------------------------------------------------------------------
# Processes: a free port, redis-server
# ---------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(run_dir):
    port = free_port()
    log = open(run_dir / "redis.log", "wb")
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                             "--save", "", "--appendonly", "no", "--dir", str(run_dir)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"redis-server exited ({proc.returncode}); see {run_dir / 'redis.log'}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        time.sleep(0.1)
    stop(proc)
    sys.exit("redis-server did not answer PING in 20 s")


def redis_stats(redis_url):
    """What the suite did on that Redis ({} if it does not answer): connections and
    commands, from INFO stats."""
    host, port = re.match(r"redis://([^:/]+):(\d+)", redis_url).groups()
    try:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"INFO stats\r\n")
            data = b""
            while not data.endswith(b"\r\n\r\n") and len(data) < 1 << 16:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return {}
    stats = dict(line.split(":", 1) for line in data.decode(errors="replace").splitlines()
                 if ":" in line)
    return {k: int(stats[k]) for k in ("total_connections_received",
                                      "total_commands_processed") if k in stats}


def stop(proc):
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------

def lay_out(suite_root, run_dir):
    for name in SUITE_FILES:
        target = run_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(suite_root / name, target)
    (run_dir / "pytest.ini").write_text(PYTEST_INI)


def run_suite(args, run_dir, deps, redis_url):
    outcomes = run_dir / "outcomes.json"
    paths = []
    env = dict(os.environ, LQ_SUITE_OUTCOMES=str(outcomes), LQ_SUITE_TIMEOUT=str(args.timeout),
               PYTHONDONTWRITEBYTECODE="1")
    if args.engine == "litequeue":
        paths += [str(SHIM), str(run_dir), str(HERE), str(args.litequeue_dir)]
        if redis_url:       # the gate open: Redis for the side channel, named as backend
            host, port = re.match(r"redis://([^:/]+):(\d+)", redis_url).groups()
            env.update(REDIS_HOST=host, REDIS_PORT=port)
            (run_dir / GATE_FILE).write_text(json.dumps({"result_backend": redis_url}))
        else:               # closed: a closed port for the side channel
            env.update(REDIS_HOST="127.0.0.1", REDIS_PORT=str(free_port()))
        env.update(TEST_BROKER="litequeue://", TEST_BACKEND="litequeue://",
                   LQ_SUITE_CONCURRENCY=str(args.concurrency), LQ_SUITE_DB_DIR=str(run_dir))
        plugins = ["-p", "suite_outcomes"]
    else:
        host, port = re.match(r"redis://([^:/]+):(\d+)", redis_url).groups()
        paths += [str(run_dir), str(HERE)]
        env.update(TEST_BROKER=redis_url, TEST_BACKEND=redis_url, REDIS_HOST=host,
                   REDIS_PORT=port)
        plugins = ["-p", "suite_outcomes", "-p", "celery.contrib.pytest"]
    if deps:
        paths.append(str(deps))
    old = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths + old)
    command = [sys.executable, "-m", "pytest", TEST_PATH, "-p", "no:cacheprovider",
               *plugins, "-q", "-rN", "--color=no", "-o", "console_output_style=count",
               "--timeout", str(args.timeout)]
    command += ["-n", str(args.n)] if args.n else ["-p", "no:xdist"]
    if args.k:
        command += ["-k", args.k]
    log_path = run_dir / "pytest.log"
    print(f"running {' '.join(command[2:])}\n  in {run_dir} (log: {log_path})", flush=True)
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=run_dir, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while chunk := proc.stdout.read1(65536):     # progress dots as they come
                log.write(chunk)
                log.flush()
                if args.verbose:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            proc.wait()
        finally:
            stop(proc)
    elapsed = time.monotonic() - started
    if not outcomes.is_file():
        tail = log_path.read_text(errors="replace")[-4000:]
        sys.exit(f"pytest wrote no outcomes (exit {proc.returncode}):\n{tail}")
    return json.loads(outcomes.read_text()), elapsed, proc.returncode


# ---------------------------------------------------------------------------------------
# Outcomes and causes
# ---------------------------------------------------------------------------------------

def outcome_of(test):
    """passed, failed, error, skipped, xfailed or xpassed: as pytest's summary counts."""
    phases = test["phases"]
    setup, call, teardown = (phases.get(w, {}) for w in ("setup", "call", "teardown"))
    if setup.get("outcome") == "failed":
        return "error", setup
    if setup.get("outcome") == "skipped":
        return ("xfailed" if setup.get("wasxfail") is not None else "skipped"), setup
    if call.get("outcome") == "failed":
        return "failed", call
    # A subtest that fails fails its test (pytest counts it once more, on its own).
    failed_sub = [sub for sub in test.get("subtests", ()) if sub.get("outcome") == "failed"]
    if failed_sub and call.get("outcome") != "skipped":
        return "failed", failed_sub[0]
    if call.get("outcome") == "skipped":
        return ("xfailed" if call.get("wasxfail") is not None else "skipped"), call
    if teardown.get("outcome") == "failed":
        return "error", teardown
    if call.get("wasxfail") is not None:
        return "xpassed", call
    return "passed", call


_NOISE = [
    (re.compile(r"0x[0-9a-f]+"), "0x…"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<id>"),
    (re.compile(r"/tmp/[^\s'\"]+"), "<path>"),
    (re.compile(r"\d+\.\d+s\b"), "<n>s"),
    (re.compile(r"port \d+|:\d{4,5}\b"), ":<port>"),
]

# Failures known by where they happened, not by their message: (cause, category, test).
# "cannot": the test needs what no litequeue run can give it (a Redis server, Celery's
# worker remote control, its backend classes, an in-process worker). "harness": the test
# reads a Celery setting litequeue does not have, only to choose what to check.
def _redis_required(f):
    code = _code(f)
    return "result_backend" in code and ("not " in code or "transport_options" in code)


def _republishes(f):
    test = "test_chord_header_id_duplicated_on_rabbitmq_msg_duplication"
    return any(frame.get("function") == test for frame in f.get("frames") or ())


RULES = [
    ("cannot: needs the Redis result backend (the test skips itself on any other backend)",
     "cannot", _redis_required),
    ("cannot: needs a Redis server (redis_echo/redis_count side channel or pubsub)",
     "cannot", lambda f: (f.get("module") or "").startswith("redis")),
    ("cannot: makes RabbitMQ redeliver a message, republishing it from before_task_publish "
     "through Celery's kombu producer (app.producer_pool)", "cannot", _republishes),
    ("cannot: Celery test Manager helpers that read a broker or Celery backend "
     "(query_task, backend cache, idle wait)",
     "cannot", lambda f: "Celery test Manager" in f["message"]
     or "remote control" in f["message"]),
    ("cannot: reads the worker's log records in the test process (Celery's embedded worker)",
     "cannot", lambda f: "check_for_logs" in _code(f)),
    ("cannot: its handler for a signal the worker sends ({signals}) is connected in the "
     "test process, which Celery's embedded worker shares; litequeue's worker is a process "
     "of its own", "cannot", lambda f: bool(f.get("worker_signals"))),
    ("cannot: Celery result-backend internals (app.backend beyond ensure_chords_allowed)",
     "cannot", lambda f: "result backend object (app.backend)" in f["message"]
     or "BaseKeyValueStoreBackend" in f["message"]),
    ("cannot: checks the Redis result backend's own keys ({internals}) and the shape of "
     "Celery's results around them", "cannot", lambda f: bool(f.get("backend_internals"))),
    ("harness: reads app.conf.{setting}, a Celery setting litequeue does not have",
     "harness", lambda f: "manager.app.conf." in _code(f) and f["type"] == "AttributeError"),
    ("on purpose: a task id names one task, so a canvas frozen once and applied again is "
     "refused (DuplicateTaskId; Celery runs it again under the same ids)", "design",
     lambda f: f["type"] == "DuplicateTaskId"),
    ("on purpose: a canvas is queued whole in one transaction, so a chord header given as "
     "a generator is read when the chord is applied (Celery queues each task as the "
     "generator yields it)", "design",
     lambda f: "unrolled too early" in f["message"]),
]
CATEGORY_TITLES = {
    "litequeue": "failing, by cause (litequeue lacks it or does it differently)",
    "design": "failing on purpose (README, What does not carry over: On purpose)",
    "harness": "failing on a Celery setting the test only reads to choose its checks",
    "cannot": "failing, cannot run here",
    "skipped": "skipped",
}
# ChordError("Dependency <id> raised X(...)"), nested any depth: the innermost X is the cause.
_DEPENDENCY = re.compile(r"""^(?:ChordError: )?Dependency \S+ raised (\w+)\((['"])(.*)\2\)$""")


def _code(failure):
    return ((failure.get("test_frame") or {}).get("code") or "")


def cause_of(failure):
    """(cause, category): category is "cannot", "harness", "design" (different on
    purpose, as README says) or "litequeue" (what litequeue lacks or does differently)."""
    for cause, category, test in RULES:
        if test(failure):
            setting = re.search(r"conf\.(\w+)", _code(failure))
            return cause.format(setting=setting.group(1) if setting else "?",
                                signals=", ".join(failure.get("worker_signals") or ()),
                                internals=", ".join(failure.get("backend_internals") or ())), \
                category
    message = failure["message"]
    for pattern, repl in _NOISE:
        message = pattern.sub(repl, message)
    kind = failure["type"]
    cause = f"{kind}: {message}" if message else kind
    via = ""
    while (inner := _DEPENDENCY.match(cause)):
        via = " (in a chord's header, via ChordError)"
        cause = f"{inner.group(1)}: {inner.group(3)}".replace("\\'", "'")
    at = failure.get("test_frame")
    if kind == "Failed" and message.startswith("Timeout"):
        where = failure.get("raised_at") or {}
        cause = f"Timeout (hung in {where.get('function', '?')} of {where.get('file', '?')})"
    elif kind == "AssertionError" and at:
        cause = f"AssertionError at `{at['code'][:90]}`"
    return (cause + via)[:200], "litequeue"


def summarize(data, engine, elapsed, returncode, redis_gate=None):
    counts = collections.Counter()
    causes = collections.defaultdict(list)
    rows = []
    for test in data["tests"]:
        outcome, phase = outcome_of(test)
        counts[outcome] += 1
        row = {"test": test["nodeid"].split("::", 1)[1], "outcome": outcome,
               "duration": round(test.get("duration", 0.0), 2)}
        if outcome in ("failed", "error"):
            failure = phase.get("failure") or {"type": "?", "message": "", "frames": []}
            cause, category = cause_of(failure)
            if outcome == "error":
                cause = f"[{phase.get('when')}] {cause}"
            row.update(cause=cause, category=category, exception=failure.get("type"),
                       message=failure.get("message"), test_line=failure.get("test_frame"),
                       raised_at=failure.get("raised_at"))
            causes[(category, cause)].append(row["test"])
        elif outcome in ("skipped", "xfailed"):
            row["reason"] = phase.get("skip_reason") or phase.get("wasxfail")
            causes[("skipped", f"{outcome}: {row['reason']}")].append(row["test"])
        rows.append(row)
    shims = {p.get("celery") for t in data["tests"] for p in t["phases"].values()
             if p.get("celery")}
    grouped = [{"category": cat, "cause": cause, "count": len(tests), "tests": tests}
               for (cat, cause), tests in causes.items()]
    order = list(CATEGORY_TITLES)
    grouped.sort(key=lambda g: (order.index(g["category"]), -g["count"], g["cause"]))
    return {
        "engine": engine, "seconds": round(elapsed, 1), "pytest_exit": returncode,
        "redis_gate": redis_gate,
        "celery_module": sorted(shims),
        "total": len(rows), "passed": counts["passed"], "failed": counts["failed"],
        "errors": counts["error"], "skipped": counts["skipped"],
        "xfailed": counts["xfailed"], "xpassed": counts["xpassed"],
        "cannot": sum(g["count"] for g in grouped if g["category"] == "cannot"),
        "harness": sum(g["count"] for g in grouped if g["category"] == "harness"),
        "collect_errors": data.get("collect_errors", []),
        "causes": grouped, "tests": rows,
    }


def print_report(report, limit):
    r = report
    print(f"\n{r['engine']}: {r['passed']} passed of {r['total']} "
          f"({r['failed']} failed, {r['errors']} errors, {r['skipped']} skipped, "
          f"{r['xfailed']} xfailed, {r['xpassed']} xpassed) in {r['seconds']:.0f} s")
    if r["engine"] == "litequeue":
        gate = {True: "open: a redis-server for the side channel, named as result_backend",
                False: "closed: no Redis, result_backend litequeue://"}.get(r["redis_gate"])
        if gate:
            print(f"Redis gate {gate}")
        print(f"of the failures: {r['cannot']} need what no litequeue run can have, "
              f"{r['harness']} stop on a Celery setting litequeue lacks")
    needs_redis = sum(g["count"] for g in r["causes"]
                      if g["category"] == "skipped" and "redis" in g["cause"].lower())
    if needs_redis:
        print(f"of the skipped: {needs_redis} skip themselves for want of the Redis backend")
    print(f"celery imported from: {', '.join(map(str, r['celery_module'])) or '?'}")
    if r.get("redis"):
        print(f"redis: {r['redis'].get('total_connections_received', '?')} connections, "
              f"{r['redis'].get('total_commands_processed', '?')} commands")
    if r.get("litequeue"):
        lq = r["litequeue"]
        print(f"litequeue: {lq['path']} (commit {lq.get('commit', '?')}, "
              f"sha256 {lq['sha256'][:12]})")
    for error in r["collect_errors"]:
        print(f"COLLECTION ERROR {error['nodeid']}:\n{error['longrepr']}")
    width = max([len(str(g["count"])) for g in r["causes"]] + [1])
    for category, title in CATEGORY_TITLES.items():
        groups = [g for g in r["causes"] if g["category"] == category]
        if not groups:
            continue
        print(f"\n{title} ({sum(g['count'] for g in groups)}):")
        for g in groups:
            print(f"  {g['count']:>{width}}  {g['cause']}")
            shown = g["tests"][:limit]
            more = f" (+{len(g['tests']) - limit} more)" if len(g["tests"]) > limit else ""
            print(f"  {'':>{width}}    {', '.join(shown)}{more}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("litequeue", "celery"), default="litequeue")
    parser.add_argument("--redis", help="a Redis URL to use instead of starting "
                        "redis-server (redis://HOST:PORT/DB): the celery engine's broker "
                        "and backend, or the litequeue engine's side channel (gate open)")
    parser.add_argument("--redis-gate", action=argparse.BooleanOptionalAction, default=None,
                        help="litequeue engine: run a redis-server for the suite's side "
                        "channel and name it as result_backend, so that the tests asking "
                        "for the Redis backend's capabilities run (see the module's "
                        "docstring) [default: on, off with -n]")
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    parser.add_argument("--celery-version", default="5.7.0")
    parser.add_argument("--litequeue-dir", type=Path, default=None,
                        help="the directory holding the litequeue.py under test [default: "
                        "the first on PYTHONPATH that has one, else this checkout]")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds per test")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="litequeue worker processes (-c)")
    parser.add_argument("-n", type=int, default=0,
                        help="pytest-xdist processes (litequeue only, gate closed: the "
                        "suite's Redis side channel has keys its tests share)")
    parser.add_argument("-k", help="pytest -k expression")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument("--examples", type=int, default=4, help="tests named per cause")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    parser.add_argument("--outcomes", type=Path, help="report on the outcomes.json of an "
                        "earlier run (kept with --keep) instead of running")
    parser.add_argument("--report", type=Path, help="with --readme: the --json report of an "
                        "earlier run, instead of running")
    parser.add_argument("--readme", type=Path, help="rewrite this README's canvas-suite "
                        "table (between its markers) from the run's report")
    args = parser.parse_args(argv)
    # SIGTERM ends the run through its finally blocks: the redis-server and the run
    # directory it started go with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.engine == "celery" and args.n:
        parser.error("-n is for the litequeue engine only")
    gate_given = args.redis_gate
    if args.engine == "celery":
        if args.redis_gate is not None:
            parser.error("--redis-gate is for the litequeue engine (celery runs on Redis)")
    elif args.redis_gate is None:
        args.redis_gate = not args.n
    elif args.redis_gate and args.n:
        parser.error("--redis-gate with -n: the suite's side channel has fixed keys "
                     "(redis-echo, redis-count) that xdist processes would share")
    if args.engine == "litequeue" and args.redis and not args.redis_gate:
        parser.error("--redis with the litequeue engine needs the gate open (--redis-gate)")
    uses_redis = args.engine == "celery" or args.redis_gate
    if uses_redis and not args.redis and not shutil.which("redis-server") \
            and not args.outcomes:
        parser.error("no redis-server on PATH (pass --redis URL"
                     + (", or --no-redis-gate)" if args.engine == "litequeue" else ")"))
    if args.litequeue_dir is None:
        on_path = [Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        args.litequeue_dir = next((p for p in on_path if (p / "litequeue.py").is_file()), REPO)
    if args.engine == "litequeue" and not (args.litequeue_dir / "litequeue.py").is_file():
        parser.error(f"no litequeue.py in {args.litequeue_dir}")

    if args.report:
        if not args.readme:
            parser.error("--report is for --readme")
        write_readme(args.readme, json.loads(args.report.read_text()))
        return 0
    if args.outcomes:
        data = json.loads(args.outcomes.read_text())
        return finish(args, summarize(data, args.engine, 0.0, None, gate_given))
    # The file as it was when the run began (another checkout may be changing it).
    version = litequeue_version(args.litequeue_dir) if args.engine == "litequeue" else None
    cache = cache_dir()
    suite_root = fetch_suite(args.celery_version, cache)
    deps = ensure_modules(cache, ["pydantic", "redis"] if uses_redis else ["pydantic"])
    run_dir = Path(tempfile.mkdtemp(prefix=f"celery-suite-{args.engine}-"))
    redis = None
    stats = {}
    try:
        lay_out(suite_root, run_dir)
        redis_url = args.redis
        if uses_redis and not redis_url:
            redis, redis_url = start_redis(run_dir)
        data, elapsed, code = run_suite(args, run_dir, deps, redis_url)
        if redis_url:
            stats = redis_stats(redis_url)
    finally:
        stop(redis)
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    report = summarize(data, args.engine, elapsed, code, args.redis_gate)
    if stats:
        report["redis"] = stats
    if args.keep:
        print(f"\nrun directory kept: {run_dir}")
    return finish(args, report, version)


def litequeue_version(directory):
    """Which litequeue.py ran: its path, sha256, and the git commit of its checkout (with
    "+changes" when the file differs from that commit)."""
    path = (directory / "litequeue.py").resolve()
    found = {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    git = ["git", "-C", str(path.parent)]
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        dirty = subprocess.run(git + ["diff", "--quiet", "HEAD", "--", path.name]).returncode
        found["commit"] = head.stdout.strip() + ("+changes" if dirty else "")
    return found


README_BEGIN = "<!-- canvas suite: begin (python tests/celery_suite/run.py --readme README.md) -->"
README_END = "<!-- canvas suite: end -->"
README_CATEGORY = {"litequeue": "not ported yet", "design": "on purpose",
                   "cannot": "cannot run here", "harness": "harness"}


def readme_block(report):
    """README's table of the canvas suite's run: the counts, then every test that did not
    pass, by category and cause (generated from the report; never edited by hand)."""
    r = report
    lq = r.get("litequeue") or {}
    gate = {True: "the Redis gate open", False: "the Redis gate closed"}.get(
        r.get("redis_gate"), "")
    lines = [README_BEGIN,
             f"Celery {r.get('celery_version', '?')}'s `test_canvas.py` on {r['engine']}"
             f"{', ' + gate if gate else ''} (litequeue.py sha256 "
             f"{lq.get('sha256', '?')[:12]}): **{r['passed']} passed** and {r['xpassed']} "
             f"xpassed of {r['total']}; {r['failed'] + r['errors']} failed, "
             f"{r['skipped']} skipped, {r['xfailed']} xfailed, in {r['seconds']:.0f} s "
             f"(commit {lq.get('commit', '?')[:7]}).", "",
             "| tests | why they do not pass | which |", "|---|---|---|"]
    for g in r["causes"]:
        if g["category"] == "skipped":
            continue
        tests = ", ".join(f"`{t.split('::')[-1]}`" for t in g["tests"])
        cause = re.sub(r"^(on purpose|harness|cannot): ", "", g["cause"])
        cause = cause.replace("|", "\\|").replace("`", "'").replace("<", "&lt;")
        lines.append(f"| {g['count']} | {README_CATEGORY[g['category']]}: {cause} | {tests} |")
    return "\n".join(lines + [README_END])


def write_readme(path, report):
    text = path.read_text()
    start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    path.write_text(text[:start] + readme_block(report) + text[end:])


def finish(args, report, version=None):
    report["celery_version"] = args.celery_version
    if version:
        report["litequeue"] = version
    print_report(report, args.examples)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"report written to {args.json}")
    if args.readme:
        write_readme(args.readme, report)
        print(f"README table written to {args.readme}")
    return 0 if report["total"] and not report["collect_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
