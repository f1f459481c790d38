#!/usr/bin/env python
"""litequeue against huey's SqliteHuey, in one run on one machine.

    python bench/bench.py              # full run: 3 repeats, about 5 minutes on 2 cores
    python bench/bench.py --quick      # 1 repeat, smaller sizes, about 1 minute
    python bench/bench.py --repeat 5 --out bench/results/run.json

Prints a Markdown table (medians, with min-max over the repeats) to stdout; progress goes
to stderr. See bench/README.md for what each figure means and how it is measured.
"""

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep bench/ free of __pycache__

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
LITEQUEUE_PY = os.path.join(REPO, "litequeue.py")
sys.path.insert(0, REPO)       # the litequeue.py of this checkout, installed or not
sys.path.insert(0, BENCH_DIR)

import apsw  # noqa: E402
import huey as huey_pkg  # noqa: E402
import litequeue  # noqa: E402

import benchtasks  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Every worker this run started. Cleanup kills their process groups.
_PROCS = []
# SIGTERM/SIGINT/SIGHUP become SystemExit/KeyboardInterrupt, except while a worker is being
# started and registered: then they wait until it is in _PROCS, so cleanup can find it.
_critical = 0
_pending_signal = None
_stop_signal = None     # set for good by the first signal: no worker starts after it


def _raise_for(signum):
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _on_signal(signum, frame):
    global _pending_signal, _stop_signal
    _stop_signal = _stop_signal or signum
    if _critical:
        _pending_signal = signum
        return
    _raise_for(signum)


@contextlib.contextmanager
def _uninterrupted():
    global _critical, _pending_signal
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1
        if not _critical and _pending_signal is not None:
            signum, _pending_signal = _pending_signal, None
            _raise_for(signum)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

def _worker_env(extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [BENCH_DIR, REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for key in ("LQBENCH_DB", "LQBENCH_SYNC", "HUEYBENCH_DB", "HUEYBENCH_MARKS"):
        env.pop(key, None)
    env.update(extra)
    return env


class Worker:
    """A worker (litequeue supervisor or huey consumer) in its own session, so that its
    whole process tree can be found (by session id) and killed (by process group)."""

    def __init__(self, kind, argv, env, cwd, logfile, stop_signal):
        if _stop_signal is not None:
            # An exception raised by the handler can be swallowed (e.g. inside a __del__).
            _raise_for(_stop_signal)
        self.kind = kind
        self.stop_signal = stop_signal
        self.started = time.time()
        with _uninterrupted():
            self.log = open(logfile, "ab")
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                         stdout=self.log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            self.pid = self.proc.pid
            _PROCS.append(self)

    def check_alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.kind} worker exited early with code "
                               f"{self.proc.returncode}; see {self.log.name}")

    def stop(self, timeout=15.0):
        """Graceful signal to the leader; then SIGKILL to whatever is left of the group."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, self.stop_signal)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log(f"{self.kind} worker did not stop in {timeout:.0f} s: killing it")
            self._kill_group()
            self.proc.wait(10)
        finally:
            self.log.close()
            if self in _PROCS:
                _PROCS.remove(self)

    def _kill_group(self):
        # The group outlives its leader while any member lives; kill stragglers.
        if session_pids(self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while session_pids(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def cleanup_all():
    for w in list(_PROCS):
        with contextlib.suppress(Exception):
            w.stop(timeout=5)


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read().decode("ascii", "replace")
    # The command name (field 2) may hold spaces; fields after it follow the last ')'.
    return data[data.rindex(")") + 2:].split()


def session_pids(sid):
    """Live pids whose session id is sid (zombies excluded)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = _stat_fields(name)
        except (OSError, ValueError):
            continue
        # fields[0] is state (field 3), fields[3] is session (field 6)
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(name))
    return pids


def session_wakeups(sid):
    """Voluntary context switches (times a thread went to sleep, so about as many
    wake-ups) summed over every thread of every live process of the session."""
    total = 0
    for pid in session_pids(sid):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches"):
                            total += int(line.split()[1])
            except OSError:
                pass
    return total


def session_cpu_ticks(sid):
    """{pid: utime+stime in clock ticks} for every live process of the session."""
    ticks = {}
    for pid in session_pids(sid):
        try:
            fields = _stat_fields(pid)
        except (OSError, ValueError):
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime
    return ticks


# ---------------------------------------------------------------------------
# Systems under test
# ---------------------------------------------------------------------------

class LiteQueueSystem:
    def __init__(self, label, synchronous):
        self.label = label
        self.synchronous = synchronous
        self.app = None

    def open(self, db):
        self.db = db
        self.app, self.noop = benchtasks.make_litequeue(db, self.synchronous)
        # Create the schema and open this thread's connection before any timing.
        assert self.app.AsyncResult("warm-up").state == litequeue.UNKNOWN
        return self._pragma_synchronous()

    def _pragma_synchronous(self):
        # Reads the producer connection's pragma through a private attribute; if that
        # changes, the check reports "?" instead of failing the run.
        try:
            conn = self.app._storage().conn
            return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
                conn.execute("PRAGMA synchronous").fetchall()[0][0]]
        except Exception:
            return "?"

    def close(self):
        # Close this thread's connection and drop the app from litequeue's registry of
        # apps (private details; harmless if they change, the temp dir goes anyway).
        if self.app is None:
            return
        with contextlib.suppress(Exception):
            storage = getattr(self.app._local, "storage", None)
            if storage is not None:
                storage.close()
                self.app._local.storage = None
        with contextlib.suppress(Exception):
            apps = litequeue._apps
            (apps.discard if hasattr(apps, "discard") else apps.remove)(self.app)
        self.app = None

    def enqueue(self, i):
        return self.noop.delay(i)

    def roundtrip(self, i):
        return self.noop.delay(i).get(timeout=30)

    def start_worker(self, tmp, logname):
        argv = [sys.executable, LITEQUEUE_PY, "worker", self.db, "-c", "2", "-A", "benchtasks",
                "-l", "WARNING", "--synchronous", self.synchronous]
        env = _worker_env({"LQBENCH_DB": self.db, "LQBENCH_SYNC": self.synchronous})
        return Worker(self.label, argv, env, tmp, os.path.join(tmp, logname), signal.SIGTERM)

    def wait_drained(self, n, worker, timeout):
        """Poll (cheap index probes, every 20 ms) until nothing is PENDING or STARTED;
        return (first started_at, last finished_at, SUCCESS count)."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            deadline = time.monotonic() + timeout
            while True:
                worker.check_alive()
                busy = conn.execute(
                    "SELECT EXISTS(SELECT 1 FROM tasks WHERE state = 'PENDING') OR "
                    "EXISTS(SELECT 1 FROM tasks WHERE state = 'STARTED')").fetchone()[0]
                if not busy:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.label}: drain not finished after {timeout} s")
                time.sleep(0.02)
            observed = time.time()
            first, last, done = conn.execute(
                "SELECT min(started_at), max(finished_at), count(*) FROM tasks "
                "WHERE state = 'SUCCESS'").fetchone()
        finally:
            conn.close()
        if done != n:
            raise RuntimeError(f"{self.label}: {done} of {n} tasks succeeded")
        return first, last, observed


class HueySystem:
    def __init__(self, label, consumer_args=(), get_kwargs=None):
        self.label = label
        self.consumer_args = list(consumer_args)
        self.get_kwargs = dict(get_kwargs or {})
        self.huey = None

    def open(self, db):
        self.db = db
        self.huey, self.noop = benchtasks.make_huey(db)
        self.huey.pending_count()  # opens the connection before any timing
        conn = self.huey.storage.conn
        return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
            conn.execute("pragma synchronous").fetchone()[0]]

    def close(self):
        if self.huey is not None:
            self.huey.storage.close()
        self.huey = None

    def enqueue(self, i):
        return self.noop(i)

    def roundtrip(self, i):
        return self.noop(i).get(blocking=True, timeout=30, **self.get_kwargs)

    def start_worker(self, tmp, logname):
        self.marks = os.path.join(tmp, logname + "-marks")
        os.makedirs(self.marks, exist_ok=True)
        # -q: warnings only, like litequeue's -l WARNING (huey logs two INFO lines per task
        # by default).
        argv = [sys.executable, "-m", "huey.bin.huey_consumer", "benchtasks.huey",
                "-w", "2", "-k", "process", "-q"] + self.consumer_args
        env = _worker_env({"HUEYBENCH_DB": self.db, "HUEYBENCH_MARKS": self.marks})
        # SIGINT is huey's graceful signal by default.
        return Worker(self.label, argv, env, tmp, os.path.join(tmp, logname), signal.SIGINT)

    def wait_drained(self, n, worker, timeout):
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            deadline = time.monotonic() + timeout
            while True:
                worker.check_alive()
                if not conn.execute("SELECT EXISTS(SELECT 1 FROM task)").fetchone()[0]:
                    # Everything dequeued: wait for the last results to be stored.
                    if conn.execute("SELECT count(*) FROM kv").fetchone()[0] >= n:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.label}: drain not finished after {timeout} s")
                time.sleep(0.02)
            observed = time.time()
            done = conn.execute("SELECT count(*) FROM kv").fetchone()[0]
        finally:
            conn.close()
        if done != n:
            raise RuntimeError(f"{self.label}: {done} results stored for {n} tasks")
        names = os.listdir(self.marks)
        starts = [benchtasks.read_mark(os.path.join(self.marks, f))
                  for f in names if f.startswith("start-")]
        ends = [benchtasks.read_mark(os.path.join(self.marks, f))
                for f in names if f.startswith("end-")]
        return min(starts), max(ends), observed


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------

def remove_db(db):
    for path in (db, db + "-wal", db + "-shm", db + "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    shutil.rmtree(db + "-lq", ignore_errors=True)


def measure_delay_and_drain(system, tmp, tag, n, results):
    """delay() n no-op tasks with no worker running, then drain exactly those n tasks with a
    2-process worker. Appends to results[label]."""
    db = os.path.join(tmp, f"{tag}.sqlite")
    remove_db(db)
    sync = system.open(db)
    worker = None
    try:
        t0 = time.perf_counter()
        for i in range(n):
            system.enqueue(i)
        elapsed = time.perf_counter() - t0
        results["delay"].append(n / elapsed)
        results.setdefault("pragma_synchronous", sync)
        log(f"  {system.label:<18} delay(): {n / elapsed:9.0f} tasks/s  (synchronous={sync})")

        launched = time.time()
        worker = system.start_worker(tmp, f"{tag}-drain.log")
        first, last, observed = system.wait_drained(n, worker, timeout=max(120, n / 100))
        rate = n / (last - first)
        results["drain"].append(rate)
        results["drain_incl_startup"].append(n / (observed - launched))
        log(f"  {system.label:<18} drain:   {rate:9.0f} tasks/s  "
            f"(first start -> last result {last - first:.2f} s; "
            f"launch -> observed done {observed - launched:.2f} s)")
    finally:
        if worker is not None:
            worker.stop()
        system.close()
        remove_db(db)


def measure_roundtrip(system, tmp, tag, repeats, gap, results):
    db = os.path.join(tmp, f"{tag}.sqlite")
    remove_db(db)
    system.open(db)
    worker = None
    try:
        worker = system.start_worker(tmp, f"{tag}-rt.log")
        assert system.roundtrip(-1) == -1   # waits out the worker's start-up
        for i in range(5):                  # warm-up, not counted
            system.roundtrip(-2 - i)
        time.sleep(0.2)
        samples = []
        for i in range(repeats):
            t0 = time.perf_counter()
            value = system.roundtrip(i)
            samples.append((time.perf_counter() - t0) * 1000.0)
            if value != i:
                raise RuntimeError(f"{system.label}: round trip {i} returned {value!r}")
            time.sleep(gap)
        worker.check_alive()
        p50, p99 = percentile(samples, 50), percentile(samples, 99)
        results["rt_p50"].append(p50)
        results["rt_p99"].append(p99)
        log(f"  {system.label:<18} round trip: p50 {p50:8.2f} ms  p99 {p99:8.2f} ms")
    finally:
        if worker is not None:
            worker.stop()
        system.close()
        remove_db(db)


def measure_idle(system, tmp, tag, settle, window, results):
    db = os.path.join(tmp, f"{tag}.sqlite")
    remove_db(db)
    system.open(db)
    worker = None
    try:
        worker = system.start_worker(tmp, f"{tag}-idle.log")
        assert system.roundtrip(-1) == -1   # the worker is up and has run a task
        time.sleep(settle)
        worker.check_alive()
        t0, before, wake0 = time.monotonic(), session_cpu_ticks(worker.pid), \
            session_wakeups(worker.pid)
        time.sleep(window)
        t1, after, wake1 = time.monotonic(), session_cpu_ticks(worker.pid), \
            session_wakeups(worker.pid)
        worker.check_alive()
        used = sum(after[pid] - before.get(pid, 0) for pid in after)
        pct = used / CLK_TCK / (t1 - t0) * 100.0
        wakeups = (wake1 - wake0) / (t1 - t0)
        results["idle_cpu"].append(pct)
        results["idle_wakeups"].append(wakeups)
        results.setdefault("idle_processes", len(after))
        log(f"  {system.label:<18} idle CPU: {pct:6.2f}% of one core over {t1 - t0:.1f} s "
            f"({len(after)} processes, {used} ticks of 1/{CLK_TCK} s, {wakeups:.1f} wake-ups/s)")
    finally:
        if worker is not None:
            worker.stop()
        system.close()
        remove_db(db)


def percentile(samples, p):
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def summary(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "samples": values}


def fmt(s, unit, digits=0):
    if s is None:
        return "—"
    f = f"{{:,.{digits}f}}"
    if s["min"] == s["max"]:
        return f"{f.format(s['median'])} {unit}"
    return (f"{f.format(s['median'])} {unit} "
            f"({f.format(s['min'])}–{f.format(s['max'])})")


def build_table(S, cfg):
    N, F, H = S["litequeue NORMAL"], S["litequeue FULL"], S["huey"]
    rows = []

    def med(d, key):
        return d[key]["median"] if d.get(key) else None

    def times(a, b):
        return f"{a / b:.1f}×" if a and b else "—"

    def lower(lq, hu):
        if not lq or not hu:
            return "—"
        return f"{hu / lq:.0f}× lower" if hu >= lq else f"{lq / hu:.1f}× higher"

    # delay()
    dn, df, dh = med(N, "delay"), med(F, "delay"), med(H, "delay")
    met = dn is not None and dh is not None and dn >= 3 * dh
    met_full = df is not None and dh is not None and df >= 3 * dh
    rows.append([f"delay() rate, {cfg['tasks']:,} no-op tasks, no worker",
                 fmt(N.get("delay"), "/s"), fmt(F.get("delay"), "/s"), fmt(H.get("delay"), "/s"),
                 f"{times(dn, dh)} / {times(df, dh)}", "≥ 3× huey",
                 f"{'yes' if met else 'NO'} (FULL: {'yes' if met_full else 'no'})"])
    # drain
    rn, rf, rh = med(N, "drain"), med(F, "drain"), med(H, "drain")
    met = rn is not None and rh is not None and rn >= 4 * rh
    met_full = rf is not None and rh is not None and rf >= 4 * rh
    rows.append([f"drain rate, {cfg['tasks']:,} prefilled, 2 worker processes, results stored",
                 fmt(N.get("drain"), "/s"), fmt(F.get("drain"), "/s"), fmt(H.get("drain"), "/s"),
                 f"{times(rn, rh)} / {times(rf, rh)}", "≥ 4× huey",
                 f"{'yes' if met else 'NO'} (FULL: {'yes' if met_full else 'no'})"])
    rows.append(["drain, worker launch → all results seen by a 20 ms poll (incl. start-up)",
                 fmt(N.get("drain_incl_startup"), "/s"), fmt(F.get("drain_incl_startup"), "/s"),
                 fmt(H.get("drain_incl_startup"), "/s"),
                 f"{times(med(N, 'drain_incl_startup'), med(H, 'drain_incl_startup'))} / "
                 f"{times(med(F, 'drain_incl_startup'), med(H, 'drain_incl_startup'))}", "—", "—"])
    # round trip
    pn, pf, ph = med(N, "rt_p50"), med(F, "rt_p50"), med(H, "rt_p50")
    ok = [v is not None and v <= 2.0 for v in (pn, pf)]
    rows.append([f"round trip delay()+get() p50, {cfg['roundtrips']} repeats, idle worker",
                 fmt(N.get("rt_p50"), "ms", 2), fmt(F.get("rt_p50"), "ms", 2),
                 fmt(H.get("rt_p50"), "ms", 1),
                 f"{lower(pn, ph)} / {lower(pf, ph)}", "≤ 2 ms",
                 f"{'yes' if ok[0] else 'NO'} (FULL: {'yes' if ok[1] else 'no'})"])
    qn, qf, qh = med(N, "rt_p99"), med(F, "rt_p99"), med(H, "rt_p99")
    rows.append(["round trip p99", fmt(N.get("rt_p99"), "ms", 2), fmt(F.get("rt_p99"), "ms", 2),
                 fmt(H.get("rt_p99"), "ms", 1), f"{lower(qn, qh)} / {lower(qf, qh)}", "—", "—"])
    # idle CPU
    cn, ch = med(N, "idle_cpu"), med(H, "idle_cpu")
    rows.append([f"idle worker CPU, -c 2 / -w 2, {cfg['idle_window']:.0f} s after "
                 f"{cfg['idle_settle']:.0f} s settle (% of one core)",
                 fmt(N.get("idle_cpu"), "%", 2), "(same code path)", fmt(H.get("idle_cpu"), "%", 2),
                 f"{cn / ch:.1f}× huey's" if cn and ch else "—",
                 "< 1%", "yes" if cn is not None and cn < 1.0 else "NO"])
    wn, wh = med(N, "idle_wakeups"), med(H, "idle_wakeups")
    rows.append(["idle wake-ups per second, all processes (voluntary context switches)",
                 fmt(N.get("idle_wakeups"), "/s", 1), "(same code path)",
                 fmt(H.get("idle_wakeups"), "/s", 1),
                 f"{wn / wh:.1f}× huey's" if wn and wh else "—", "—", "—"])
    header = ["metric", "litequeue NORMAL", "litequeue FULL", "huey (defaults)",
              "ratio vs huey (NORMAL / FULL)", "target", "met?"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]

    X = S.get("huey 1ms poll")
    if X and X.get("rt_p50"):
        out += ["", "huey tuned to a 1 ms poll (not its default; shows what its latency costs):",
                "", "| metric | huey, consumer -d 0.001 -m 0.001 -b 1, get(max_delay=0.001) |",
                "|---|---|",
                f"| round trip p50 | {fmt(X.get('rt_p50'), 'ms', 2)} |",
                f"| round trip p99 | {fmt(X.get('rt_p99'), 'ms', 2)} |",
                f"| idle worker CPU (% of one core) | {fmt(X.get('idle_cpu'), '%', 2)} |",
                f"| idle wake-ups per second | {fmt(X.get('idle_wakeups'), '/s', 0)} |"]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="short run: 1 repeat, 5 000 tasks, 100 round trips, 5 s idle window")
    ap.add_argument("--repeat", type=int, help="repeats of every measurement [3; quick 1]")
    ap.add_argument("--tasks", type=int, help="tasks for delay() and drain [20000; quick 5000]")
    ap.add_argument("--roundtrips", type=int, help="round trips per repeat [200; quick 100]")
    ap.add_argument("--idle-window", type=float, help="seconds of idle CPU measured [10; quick 5]")
    ap.add_argument("--idle-settle", type=float, default=5.0,
                    help="seconds a worker idles before the window [5]")
    ap.add_argument("--no-tuned-huey", action="store_true",
                    help="skip the extra huey-at-1-ms-poll measurements")
    ap.add_argument("--out", help="also write every sample and the summary as JSON here")
    args = ap.parse_args(argv)
    cfg = {
        "repeat": args.repeat or (1 if args.quick else 3),
        "tasks": args.tasks or (5000 if args.quick else 20000),
        "roundtrips": args.roundtrips or (100 if args.quick else 200),
        "idle_window": args.idle_window or (5.0 if args.quick else 10.0),
        "idle_settle": args.idle_settle,
        "roundtrip_gap_s": 0.02,
    }

    lq_normal = LiteQueueSystem("litequeue NORMAL", "NORMAL")
    lq_full = LiteQueueSystem("litequeue FULL", "FULL")
    hu = HueySystem("huey")
    # huey's defaults: consumer -d 0.1 (first poll delay), -b 1.15, -m 10 (max delay);
    # Result.get(blocking=True) polls from 0.05 s with backoff 1.15 up to max_delay=1.0.
    hu_fast = HueySystem("huey 1ms poll", ["-d", "0.001", "-m", "0.001", "-b", "1"],
                         {"backoff": 1.0, "max_delay": 0.001})
    systems = [lq_normal, lq_full, hu]
    if not args.no_tuned_huey:
        systems.append(hu_fast)
    results = {s.label: {"delay": [], "drain": [], "drain_incl_startup": [], "rt_p50": [],
                         "rt_p99": [], "idle_cpu": [], "idle_wakeups": []} for s in systems}

    tmp = tempfile.mkdtemp(prefix="lqbench-")
    started = time.monotonic()
    log(f"litequeue {litequeue.__version__} (apsw {apsw.apswversion()}, SQLite "
        f"{apsw.sqlite_lib_version()}) vs huey {huey_pkg.__version__} (sqlite3 module, SQLite "
        f"{sqlite3.sqlite_version}); {os.cpu_count()} CPUs; temp dir {tmp}")
    log(f"config: {cfg}")
    load_start = os.getloadavg()
    if load_start[0] > 0.5:
        log(f"warning: load average {load_start[0]:.2f} before starting: other work on this "
            f"machine will skew the figures (2 worker processes need both cores)")
    try:
        for r in range(cfg["repeat"]):
            log(f"repeat {r + 1}/{cfg['repeat']}")
            for s in (lq_normal, lq_full, hu):
                tag = f"r{r}-{s.label.replace(' ', '-')}"
                measure_delay_and_drain(s, tmp, tag, cfg["tasks"], results[s.label])
            for s in systems:
                tag = f"r{r}-{s.label.replace(' ', '-')}"
                measure_roundtrip(s, tmp, tag, cfg["roundtrips"], cfg["roundtrip_gap_s"],
                                  results[s.label])
            for s in (lq_normal, hu, hu_fast if not args.no_tuned_huey else None):
                if s is None:
                    continue
                tag = f"r{r}-{s.label.replace(' ', '-')}"
                measure_idle(s, tmp, tag, cfg["idle_settle"], cfg["idle_window"],
                             results[s.label])
    finally:
        with _uninterrupted():
            cleanup_all()
            shutil.rmtree(tmp, ignore_errors=True)

    S = {label: {k: summary(v) if isinstance(v, list) else v for k, v in res.items()}
         for label, res in results.items()}
    table = build_table(S, cfg)
    elapsed = time.monotonic() - started
    notes = (
        f"\nMedian over {cfg['repeat']} repeat(s), (min–max) in brackets. "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, litequeue "
        f"{litequeue.__version__} on SQLite {apsw.sqlite_lib_version()} (apsw), huey "
        f"{huey_pkg.__version__} on SQLite {sqlite3.sqlite_version} (sqlite3 module). "
        f"PRAGMA synchronous seen on the producer connection: litequeue NORMAL="
        f"{results['litequeue NORMAL'].get('pragma_synchronous')}, litequeue FULL="
        f"{results['litequeue FULL'].get('pragma_synchronous')}, huey="
        f"{results['huey'].get('pragma_synchronous')} (WAL everywhere). Load average "
        f"{load_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end. Run took "
        f"{elapsed / 60:.1f} min.")
    print(table)
    print(notes)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"config": cfg, "python": platform.python_version(),
                       "cpus": os.cpu_count(), "litequeue": litequeue.__version__,
                       "sqlite_apsw": apsw.sqlite_lib_version(), "huey": huey_pkg.__version__,
                       "sqlite_stdlib": sqlite3.sqlite_version, "results": S,
                       "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
                       "table_markdown": table, "elapsed_s": elapsed}, f, indent=2)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(_sig, _on_signal)
    try:
        sys.exit(main())
    finally:
        with _uninterrupted():
            cleanup_all()
