"""A chaos run: one worker under a killer and a hostile writer, then a check that nothing
the producer queued was lost or got a wrong result.

    source /work/venv/bin/activate
    PYTHONPATH=. python bench/chaos.py --seconds 60 --seed 1 [--keep]

In a fresh temp dir it writes a task module (chaostasks.py) and starts
``python litequeue.py worker DB -A chaostasks -c 2`` in its own session. For SECONDS:

- the producer (this process) queues chains of 5 add steps, chords of 10 members with a
  summing body, coroutine tasks (sleep 0-10 ms), rate-limited tasks (20/s) and plain tasks
  (nap 0-15 ms); each has a known expected value. Every task run appends
  "S|E task_id attempt pid name" to logs/runs-<pid>.log (one file per process, O_APPEND);
- a killer thread SIGKILLs a random child of the supervisor every 1-3 s and, once or twice
  (seed decides), SIGKILLs the whole worker process group and starts a new worker;
- a hostile writer (a subprocess, its own apsw connection) every ~50 ms writes a hostile
  value (bad UTF-8, blob, NULL, +-Inf, -5, 2**63-1, 1 MB text, wrong type) into a random
  column (from PRAGMA table_info) of a random row it made itself: a task queued by
  chaostasks.victim.delay(), or a workers/registry/schedules/paused/rate_limits row.
  It never touches a row the producer made.

Then: stop producing, killing and spoiling, let the worker drain (--drain deadline), stop
it, and report: tasks produced, lost/wrong ones (listed), tasks that ran more than once and
whether each rerun is explained by a kill (a run in a killed pid), the victims' final
states, child deaths the killer did not cause (from the worker log), and
PRAGMA integrity_check. Exit 1 if anything is lost or wrong, integrity fails, a rerun or a
death is unexplained, or the worker died of itself.

Tasks carry max_retries=10: a task whose process is killed is requeued (at least once),
and a task hit by several kills in a row must not run out of the default budget of 3.
"""

import argparse
import collections
import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)

TASKS_MODULE = r'''
"""Tasks of bench/chaos.py (generated)."""
import asyncio, os, random, time
from litequeue import LiteQueue

app = LiteQueue(os.environ["CHAOS_DB"])
_LOGDIR = os.environ["CHAOS_LOGDIR"]
_fd = {}


def _log(kind, request, name):
    pid = os.getpid()
    fd = _fd.get(pid)
    if fd is None:
        fd = _fd[pid] = os.open(os.path.join(_LOGDIR, f"runs-{pid}.log"),
                                os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{kind} {request.id} {request.attempt} {pid} {name}\n".encode())


@app.task(name="chaostasks.add", bind=True, max_retries=10)
def add(self, x, y):
    _log("S", self.request, "add")
    time.sleep(random.random() * 0.005)
    _log("E", self.request, "add")
    return x + y


@app.task(name="chaostasks.tsum", bind=True, max_retries=10)
def tsum(self, values):
    _log("S", self.request, "tsum")
    _log("E", self.request, "tsum")
    return sum(values)


@app.task(name="chaostasks.nap", bind=True, max_retries=10)
def nap(self, i):
    _log("S", self.request, "nap")
    time.sleep(random.random() * 0.015)
    _log("E", self.request, "nap")
    return i


@app.task(name="chaostasks.anap", bind=True, max_retries=10)
async def anap(self, i):
    _log("S", self.request, "anap")
    await asyncio.sleep(random.random() * 0.010)
    _log("E", self.request, "anap")
    return i * 2


@app.task(name="chaostasks.limited", bind=True, max_retries=10, rate_limit="20/s")
def limited(self, i):
    _log("S", self.request, "limited")
    _log("E", self.request, "limited")
    return i + 7


@app.task(name="chaostasks.victim", bind=True)
def victim(self, i):
    _log("S", self.request, "victim")
    time.sleep(random.random() * 0.02)
    _log("E", self.request, "victim")
    return i
'''

HOSTILE = [
    ("bad-utf8", "CAST(X'61ff62' AS TEXT)", ()),
    ("blob", "X'00ff'", ()),
    ("NULL", "NULL", ()),
    ("+Inf", "9e999", ()),
    ("-Inf", "-9e999", ()),
    ("negative", "-5", ()),
    ("huge", "9223372036854775807", ()),
    ("1MB", "?", ("x" * (1 << 20),)),
    ("not-a-number", "'not a number'", ()),
    ("wrong-type", None, ()),
]
FINAL = ("SUCCESS", "FAILURE", "REVOKED", "EXPIRED")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------
# The hostile writer (a subprocess: python chaos.py _hostile TMP SEED)
# ---------------------------------------------------------------------------------------

def hostile_main(tmp, seed):
    import apsw
    sys.path.insert(0, tmp)
    import chaostasks
    import litequeue
    db = os.path.join(tmp, "chaos.sqlite")
    rng = random.Random(seed * 7919 + 17)
    conn = apsw.Connection(db)
    conn.set_busy_timeout(30_000)

    def q(sql, *params):
        return conn.execute(sql, params).fetchall()

    info = {t: [(r[1], r[2], r[5]) for r in q(f'PRAGMA table_info("{t}")')]
            for t in ("tasks", "workers", "registry", "schedules", "paused", "rate_limits")}
    rowid_tables = {"tasks", "workers", "registry", "schedules"}
    keycol = {"paused": "queue", "rate_limits": "key"}
    victims = []          # dicts: table, key (rowid or text key), task_id, n
    n = 0
    writes = refused = made = 0
    errors = []
    stop = os.path.join(tmp, "hostile.stop")

    def make():
        nonlocal n, made
        n += 1
        now = time.time()
        table = rng.choice(["tasks", "tasks", "workers", "registry", "schedules", "paused",
                            "rate_limits"])
        v = {"table": table, "n": n}
        if table == "tasks":
            r = chaostasks.victim.delay(n)
            v["task_id"] = r.id
            v["key"] = q("SELECT seq FROM tasks WHERE id = ?", r.id)[0][0]
        elif table == "workers":
            q("INSERT INTO workers (id, parent, hostname, pid, queues, concurrency, started_at)"
              " VALUES (?, NULL, 'chaos', 1, 'default', 1, ?)", f"chaos-worker-{n}", now)
            v["key"] = q("SELECT rowid FROM workers WHERE id = ?", f"chaos-worker-{n}")[0][0]
        elif table == "registry":
            q("INSERT INTO registry VALUES (?, 'chaosfake', ?)", f"chaosfake.task{n}", now)
            v["key"] = q("SELECT rowid FROM registry WHERE name = ?", f"chaosfake.task{n}")[0][0]
        elif table == "schedules":
            payload = litequeue._pack_envelope("chaosfake.task", [1, 1], {})
            q("INSERT INTO schedules (name, task, module, schedule, tz, payload, queue, "
              "next_fire, updated_at) VALUES (?, 'chaosfake.task', 'chaosfake', 'every:3600',"
              " 'UTC', ?, 'chaosq', ?, ?)", f"chaos-schedule-{n}", payload, now + 3600, now)
            v["key"] = q("SELECT rowid FROM schedules WHERE name = ?",
                         f"chaos-schedule-{n}")[0][0]
        elif table == "paused":
            q("INSERT INTO paused VALUES (?, ?)", f"chaosq{n}", now)
            v["key"] = f"chaosq{n}".encode().hex().upper()
        elif table == "rate_limits":
            q("INSERT INTO rate_limits (key, rate, interval) VALUES (?, '5/s', 0.2)",
              f"chaosfake.limited{n}")
            v["key"] = f"chaosfake.limited{n}".encode().hex().upper()
        made += 1
        victims.append(v)
        return v

    def spoil(v):
        nonlocal writes, refused
        table = v["table"]
        column, declared, _pk = rng.choice(info[table])
        name, expr, params = rng.choice(HOSTILE)
        if expr is None:
            expr = "'not a number'" if declared in ("INTEGER", "REAL") else "12345"
        # Rows of a WITHOUT ROWID table are found by hex(key): a spoiled key may not
        # be UTF-8 (nor text at all).
        where, back = (("rowid", "rowid") if table in rowid_tables
                       else (f'hex("{keycol[table]}")', f'hex("{keycol[table]}")'))
        writes += 1
        try:
            rows = q(f'UPDATE "{table}" SET "{column}" = {expr} WHERE {where} = ? '
                     f'RETURNING {back}', *params, v["key"])
        except apsw.Error:
            refused += 1
            return
        except Exception as exc:      # noqa: BLE001
            v.setdefault("odd", []).append(f"{type(exc).__name__}: {exc}"[:200])
            return
        if rows:
            v["key"] = rows[0][0]
            v.setdefault("spoiled", []).append(f"{column}={name}")
        else:
            v["gone"] = True          # the worker removed or repaired it away

    next_t = time.monotonic()
    while not os.path.exists(stop):
        try:
            if not victims or rng.random() < 0.3:
                make()
            live = [v for v in victims if not v.get("gone")]
            if live:
                spoil(rng.choice(live[-40:]))
            # Keep the small tables small: drop the oldest of our own rows there.
            for table in ("workers", "registry", "schedules", "paused", "rate_limits"):
                mine = [v for v in victims if v["table"] == table and not v.get("gone")]
                if len(mine) > 15:
                    old = mine[0]
                    where = "rowid" if table in rowid_tables else f'hex("{keycol[table]}")'
                    q(f'DELETE FROM "{table}" WHERE {where} = ?', old["key"])
                    old["gone"] = old["dropped"] = True
        except apsw.BusyError:
            pass
        except Exception as exc:      # noqa: BLE001 (counted, never the end of the writer)
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
        next_t += rng.uniform(0.03, 0.07)
        time.sleep(max(0.0, next_t - time.monotonic()))
    with open(os.path.join(tmp, "hostile.json"), "w") as f:
        json.dump({"victims": victims, "writes": writes, "refused": refused, "made": made,
                   "errors": errors}, f)
    return 0


# ---------------------------------------------------------------------------------------
# The worker and the killer
# ---------------------------------------------------------------------------------------

class Worker:
    def __init__(self, tmp, db, env):
        self.tmp, self.db, self.env = tmp, db, env
        self.proc, self.incarnation, self.logs = None, 0, []

    def start(self):
        self.incarnation += 1
        path = os.path.join(self.tmp, f"worker-{self.incarnation}.log")
        self.logs.append(path)
        out = open(path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "litequeue.py"), "worker", self.db,
             "-A", "chaostasks", "-c", "2"],
            cwd=self.tmp, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()

    def children(self):
        pid = self.proc.pid
        kids = set()
        for f in glob.glob(f"/proc/{pid}/task/*/children"):
            try:
                with open(f) as fh:
                    kids.update(int(x) for x in fh.read().split())
            except OSError:
                pass
        out = []
        for k in kids:
            try:
                with open(f"/proc/{k}/cmdline", "rb") as fh:
                    cmd = fh.read()
            except OSError:
                continue
            if b"resource_tracker" not in cmd:
                out.append(k)
        return sorted(out)

    def group_pids(self):
        pgid, pids = self.proc.pid, []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(stat) as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid:
                pids.append(int(stat.split("/")[2]))
        return pids

    def killpg(self):
        with_pids = self.group_pids()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        return with_pids


class Killer(threading.Thread):
    def __init__(self, worker, seconds, rng):
        super().__init__(daemon=True)
        self.worker, self.rng = worker, rng
        self.stop = threading.Event()
        self.child_kills = []        # (time, pid)
        self.group_kills = []        # (time, [pids])
        self.killed = set()
        self.self_exits = []         # the worker exited without being killed
        k = rng.choice([1, 2])
        self.group_at = sorted(time.monotonic() + rng.uniform(0.2, 0.85) * seconds
                               for _ in range(k))

    def run(self):
        while not self.stop.wait(self.rng.uniform(1.0, 3.0)):
            w = self.worker
            if w.proc.poll() is not None:
                self.self_exits.append((time.time(), w.proc.returncode, w.logs[-1]))
                w.start()
                continue
            if self.group_at and time.monotonic() >= self.group_at[0]:
                self.group_at.pop(0)
                pids = w.killpg()
                self.killed.update(pids)
                self.group_kills.append((time.time(), pids))
                log(f"killer: SIGKILL worker group {pids}; restarting the worker")
                w.start()
                continue
            kids = w.children()
            if not kids:
                continue
            pid = self.rng.choice(kids)
            self.killed.add(pid)          # before the kill: the log must never lag
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                self.killed.discard(pid)
                continue
            self.child_kills.append((time.time(), pid))


# ---------------------------------------------------------------------------------------
# The producer and the checks
# ---------------------------------------------------------------------------------------

def produce(mod, seconds, rng, rate, db):
    import apsw
    from litequeue import chord
    reader = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
    reader.set_busy_timeout(5000)
    items = []        # (kind, result id, expected)
    counts = collections.Counter()
    end = time.monotonic() + seconds
    next_t = time.monotonic()
    backlog_checked, backlog = 0.0, 0
    i = 0
    while time.monotonic() < end:
        now = time.monotonic()
        if now - backlog_checked > 0.5:
            backlog_checked = now
            try:
                backlog = reader.execute(
                    "SELECT (SELECT count(*) FROM tasks WHERE state = 'PENDING'"
                    " AND rate_key IS NULL) + (SELECT count(*) FROM tasks"
                    " WHERE state = 'PENDING' AND rate_key IS NOT NULL)").fetchall()[0][0]
            except apsw.Error:
                pass
        if backlog > 600:
            time.sleep(0.1)
            next_t = time.monotonic()
            continue
        i += 1
        kind = rng.choices(["chain", "chord", "async", "limited", "plain"],
                           weights=[2, 1, 3, 1, 3])[0]
        if kind == "chain":
            c = mod.add.s(i, 1)
            for _ in range(4):
                c = c | mod.add.s(1)
            r, expected, n = c.apply_async(), i + 5, 5
        elif kind == "chord":
            r = chord([mod.add.s(i + k, 1) for k in range(10)])(mod.tsum.s())
            expected, n = sum(i + k + 1 for k in range(10)), 11
        elif kind == "async":
            r, expected, n = mod.anap.delay(i), i * 2, 1
        elif kind == "limited":
            r, expected, n = mod.limited.delay(i), i + 7, 1
        else:
            r, expected, n = mod.nap.delay(i), i, 1
        items.append((kind, r.id, expected))
        counts[kind] += 1
        counts["tasks"] += n
        next_t += rng.expovariate(rate)
        time.sleep(max(0.0, next_t - time.monotonic()))
    reader.close()
    return items, counts


def states_of(db, ids):
    import apsw
    conn = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(10_000)
    out = {}
    ids = list(ids)
    for k in range(0, len(ids), 500):
        chunk = ids[k:k + 500]
        marks = ",".join("?" * len(chunk))
        for tid, state in conn.execute(f"SELECT id, state FROM tasks WHERE id IN ({marks})",
                                       chunk):
            out[tid] = state
    conn.close()
    return out


def read_runs(logdir):
    runs = collections.defaultdict(list)     # task id -> [(kind, attempt, pid, name)]
    for path in glob.glob(os.path.join(logdir, "runs-*.log")):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) != 5:
                    continue        # a line cut by a SIGKILL mid-write
                kind, tid, attempt, pid, name = parts
                runs[tid].append((kind, int(attempt), int(pid), name))
    return runs


DEATH = re.compile(r"child (\S+) \(pid (\d+)\) ended with ([^;]+);")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=25.0, help="producer items per second")
    p.add_argument("--drain", type=float, default=90, help="drain deadline, seconds")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = p.parse_args(argv)

    rng = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix=f"lq-chaos-{args.seed}-")
    db = os.path.join(tmp, "chaos.sqlite")
    logdir = os.path.join(tmp, "logs")
    os.mkdir(logdir)
    with open(os.path.join(tmp, "chaostasks.py"), "w") as f:
        f.write(TASKS_MODULE)
    env = dict(os.environ, CHAOS_DB=db, CHAOS_LOGDIR=logdir, PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join([REPO, tmp]))
    os.environ.update(CHAOS_DB=db, CHAOS_LOGDIR=logdir)
    sys.path[:0] = [REPO, tmp]
    import chaostasks as mod
    import apsw

    log(f"chaos run: seed {args.seed}, {args.seconds:g} s, dir {tmp}")
    mod.nap.delay(0).id                       # creates the file and registers the names
    worker = Worker(tmp, db, env)
    worker.start()
    warm = mod.nap.delay(-1)
    warm.get(timeout=60)
    items = [("plain", warm.id, -1)]

    hostile = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_hostile", tmp,
                                str(args.seed)], env=env, cwd=tmp, start_new_session=True)
    killer = Killer(worker, args.seconds, random.Random(args.seed * 31 + 5))
    killer.start()
    failures = []
    try:
        produced, counts = produce(mod, args.seconds, rng, args.rate, db)
        items += produced
        counts["plain"] += 1
        counts["tasks"] += 2
        log(f"producer done: {len(items)} items, {counts['tasks']} tasks; stopping the "
            "killer and the hostile writer")
        killer.stop.set()
        killer.join()
        open(os.path.join(tmp, "hostile.stop"), "w").close()
        try:
            hostile.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(hostile.pid, signal.SIGKILL)
            hostile.wait()
            failures.append("the hostile writer did not stop")
        if hostile.returncode != 0:
            failures.append(f"the hostile writer exited {hostile.returncode}")
        if worker.proc.poll() is not None:
            killer.self_exits.append((time.time(), worker.proc.returncode, worker.logs[-1]))
            worker.start()

        # Drain.
        ids = {tid for _, tid, _ in items}
        deadline = time.monotonic() + args.drain
        t0 = time.monotonic()
        while True:
            st = states_of(db, ids)
            pending = [t for t in ids if st.get(t) not in FINAL]
            if not pending or time.monotonic() > deadline:
                break
            if worker.proc.poll() is not None:
                killer.self_exits.append((time.time(), worker.proc.returncode,
                                          worker.logs[-1]))
                worker.start()
            time.sleep(1.0)
        log(f"drain: {len(ids) - len(pending)}/{len(ids)} finished in "
            f"{time.monotonic() - t0:.1f} s")
    finally:
        killer.stop.set()
        if hostile.poll() is None:
            open(os.path.join(tmp, "hostile.stop"), "w").close()
        # Stop the worker: SIGTERM (warm), then the whole group, always.
        if worker.proc.poll() is None:
            os.killpg(worker.proc.pid, signal.SIGTERM)
            try:
                worker.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                failures.append("the worker did not stop within 20 s of SIGTERM")
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()
        if hostile.poll() is None:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.killpg(hostile.pid, signal.SIGKILL)
            hostile.wait()

    # --- Results --------------------------------------------------------------------
    lost, wrong = [], []
    by_kind = collections.Counter()
    for kind, tid, expected in items:
        r = mod.app.AsyncResult(tid)
        try:
            state = r.state
            value = r.result if state == "SUCCESS" else None
        except Exception as exc:          # noqa: BLE001
            lost.append((kind, tid, f"unreadable: {type(exc).__name__}: {exc}"))
            continue
        if state != "SUCCESS":
            why = ""
            if state == "FAILURE":
                with __import__("contextlib").suppress(Exception):
                    why = f": {str(r.result)[:150]}"
            lost.append((kind, tid, state + why))
        elif value != expected:
            wrong.append((kind, tid, expected, value))
        else:
            by_kind[kind] += 1

    # --- Reruns -----------------------------------------------------------------------
    runs = read_runs(logdir)
    killed = killer.killed
    rerun, explained, unexplained = 0, 0, []
    victim_ids = set()
    for tid, events in runs.items():
        if events[0][3] == "victim":
            victim_ids.add(tid)
            continue
        starts = [e for e in events if e[0] == "S"]
        if len(starts) <= 1:
            continue
        rerun += 1
        unkilled = [e for e in starts if e[2] not in killed]
        if len(unkilled) <= 1:
            explained += 1
        else:
            unexplained.append((tid, starts))

    # --- Child deaths from the worker logs ---------------------------------------------
    deaths, foreign_deaths, log_errors = 0, [], []
    for path in worker.logs:
        with open(path, errors="replace") as f:
            for line in f:
                m = DEATH.search(line)
                if m:
                    deaths += 1
                    if int(m.group(2)) not in killed:
                        foreign_deaths.append(line.strip()[:300])
                elif "Traceback" in line:
                    log_errors.append(f"{os.path.basename(path)}: {line.strip()[:200]}")

    # --- Victims ----------------------------------------------------------------------
    hostile_info = {}
    with __import__("contextlib").suppress(OSError, ValueError):
        with open(os.path.join(tmp, "hostile.json")) as f:
            hostile_info = json.load(f)
    conn = apsw.Connection(db)
    conn.set_busy_timeout(30_000)
    victim_states = collections.Counter()
    victim_fail_no_reason = []
    other_victims = collections.Counter()
    for v in hostile_info.get("victims", []):
        if v["table"] == "tasks":
            rows = conn.execute("SELECT typeof(state), state, typeof(traceback), "
                                "length(traceback), length(result) FROM tasks "
                                "WHERE rowid = ?", (v["key"],)).fetchall()
            if not rows:
                victim_states["(row gone)"] += 1
                continue
            ttype, state, tbtype, tblen, rlen = rows[0]
            label = state if ttype == "text" and len(state) < 20 else f"<{ttype} state>"
            victim_states[label] += 1
            if label == "FAILURE" and not (tblen or rlen):
                victim_fail_no_reason.append(v["task_id"])
        else:
            if v.get("dropped"):
                other_victims[f"{v['table']}: dropped by the writer"] += 1
            elif v.get("gone"):
                other_victims[f"{v['table']}: removed/renamed by the worker"] += 1
            else:
                where = "rowid" if v["table"] in ("workers", "registry", "schedules") else \
                    'hex("%s")' % {"paused": "queue", "rate_limits": "key"}[v["table"]]
                present = conn.execute(f'SELECT count(*) FROM "{v["table"]}" WHERE '
                                       f'{where} = ?', (v["key"],)).fetchall()[0][0]
                other_victims[f"{v['table']}: " + ("still there" if present else
                                                   "removed by the worker")] += 1
    sched_errors = conn.execute("SELECT count(*) FROM schedules WHERE error IS NOT NULL"
                                ).fetchall()[0][0]
    integrity = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    conn.close()
    integrity_ok = integrity == ["ok"]

    # --- Report -----------------------------------------------------------------------
    print()
    print(f"=== chaos report: seed {args.seed}, {args.seconds:g} s ===")
    print(f"produced: {len(items)} items = {counts['tasks']} tasks  ("
          + ", ".join(f"{k} {counts[k]}" for k in ("chain", "chord", "async", "limited",
                                                     "plain")) + ")")
    print(f"succeeded with the right value: {sum(by_kind.values())}/{len(items)}")
    print(f"lost (not SUCCESS): {len(lost)}   wrong value: {len(wrong)}")
    for entry in (lost + wrong)[:30]:
        print("   ", entry)
    print(f"kills: {len(killer.child_kills)} child SIGKILLs, {len(killer.group_kills)} "
          f"group SIGKILLs ({sum(len(p) for _, p in killer.group_kills)} processes), "
          f"{len(worker.logs)} worker starts")
    print(f"task runs logged: {sum(len(e) for e in runs.values())} events over "
          f"{len(runs)} task ids ({len(victim_ids)} victims)")
    print(f"ran more than once: {rerun} tasks; explained by a kill: {explained}; "
          f"unexplained: {len(unexplained)}")
    for tid, starts in unexplained[:10]:
        print("   ", tid, starts)
    print(f"child deaths in the worker log: {deaths}; not caused by the killer: "
          f"{len(foreign_deaths)}")
    for line in foreign_deaths[:10]:
        print("   ", line)
    if killer.self_exits:
        print(f"worker exited by itself {len(killer.self_exits)} time(s): {killer.self_exits}")
    if log_errors:
        print(f"tracebacks in worker logs: {len(log_errors)}")
        for line in log_errors[:5]:
            print("   ", line)
    print(f"hostile writer: {hostile_info.get('made', '?')} rows made, "
          f"{hostile_info.get('writes', '?')} writes, {hostile_info.get('refused', '?')} "
          "refused by the schema"
          + (f"; its own errors: {hostile_info['errors'][:3]}" if hostile_info.get("errors")
             else ""))
    print(f"victim tasks' final states: {dict(victim_states)}"
          + (f"; FAILURE without a reason: {victim_fail_no_reason[:5]}"
             if victim_fail_no_reason else ""))
    print(f"other victims: {dict(sorted(other_victims.items()))}; schedules disabled "
          f"with an error: {sched_errors}")
    print(f"integrity_check: {'ok' if integrity_ok else integrity[:5]}")
    if failures:
        print("failures:", failures)
    bad = (lost or wrong or not integrity_ok or unexplained or foreign_deaths
           or killer.self_exits or failures)
    print("RESULT:", "FAIL" if bad else "PASS")
    if args.keep or bad:
        print(f"(kept {tmp})")
    else:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_hostile":
        sys.path.insert(0, REPO)
        sys.exit(hostile_main(sys.argv[2], int(sys.argv[3])))
    sys.exit(main())
