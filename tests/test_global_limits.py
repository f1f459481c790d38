"""Global concurrency limits: @app.task(concurrency=N) (at most N STARTED rows of the name),
concurrency_per_key=M with apply_async(concurrency_key=...) (at most M per key; no key is
one shared key) and app.conf.queue_concurrency (at most N STARTED rows of a queue). A slot
is a STARTED row, counted over every worker process on the file; rows over a limit wait
PENDING and hold up nothing else. Real workers on real files; the calls come from
producer processes that import bounded.py, as a user's program would (the hostile-row
tests send them by name from this process, which registers no limit), and the tests count
what ran at once from the rows (started_at, finished_at) and from the tasks' own logs."""

import collections
import json
import os
import random
import re
import signal
import time
import uuid

import pytest

from litequeue import FAILURE, PENDING, SUCCESS, ConfigurationError, LiteQueue

from .helpers import (
    CanvasProject, chaos_kill, foreign, group_members, lq, pack, sql, wait_until,
)

pytestmark = pytest.mark.timeout(180)

# What a worker serving bounded.py writes into the file when it starts.
REGISTERED = {"bounded.held": (2, None), "bounded.per_customer": (None, 1),
              "bounded.two_at_once": (2, None)}


class BoundedProject(CanvasProject):
    """A project whose workers run bounded.py; client() runs a producer that imports it."""

    MODULE = "bounded"


@pytest.fixture
def bounded(tmp_path):
    return BoundedProject(tmp_path / "bounded")


def start(workers, project, *extra, concurrency=4, **kwargs):
    return workers.start(project, *extra, concurrency=concurrency, app=("bounded",), **kwargs)


def logged(path):
    """[(kind, key, pid, time)] of the lines a task of bounded.py wrote to path (key None
    for a line without one)."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        fields = line.split()
        lines.append((fields[0], fields[1] if len(fields) == 4 else None, int(fields[-2]),
                      float(fields[-1])))
    return lines


def runs(lines, killed=None):
    """[(start, end, key, pid)] of the runs in logged() lines: each start with the next
    line of its process. A start its process did not end was cut by a SIGKILL: the run
    ends at the first instant after its start at which the test killed that pid (killed:
    {pid: [instants]}). A start that neither explains fails."""
    by_pid = collections.defaultdict(list)
    for kind, key, pid, t in lines:
        by_pid[pid].append((t, kind, key))
    spans, unexplained = [], []
    for pid, events in by_pid.items():
        events.sort()
        for i, (t, kind, key) in enumerate(events):
            if kind != "start":
                continue
            after = events[i + 1] if i + 1 < len(events) else None
            if after is not None and after[1] == "end":
                spans.append((t, after[0], key, pid))
                continue
            kills = [k for k in (killed or {}).get(pid, ()) if k >= t]
            if kills:
                spans.append((t, min(kills), key, pid))
            else:
                unexplained.append((pid, t))
    assert unexplained == [], f"runs with a start and no end, in processes the test did " \
                              f"not kill: {unexplained[:5]}"
    return spans


def most_at_once(spans):
    """The most spans (start, end, ...) open at one instant; a span that ends when another
    starts is not open with it."""
    events = sorted([(span[0], 1) for span in spans] + [(span[1], -1) for span in spans])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def crowd(spans, most):
    """The spans open together at the first start where more than `most` are (for the
    message of a failure)."""
    for span in sorted(spans):
        together = [s for s in spans if s[0] <= span[0] < s[1]]
        if len(together) > most:
            return together
    return []


def row_spans(db, name):
    """[(started_at, finished_at, conc_key)] of the rows of a task name, all finished."""
    rows = sql(db, "SELECT started_at, finished_at, conc_key FROM tasks WHERE name = ?", name)
    assert all(isinstance(s, (int, float)) and isinstance(f, (int, float)) and s <= f
               for s, f, _ in rows), rows
    return rows


def states(db, name):
    return sql(db, "SELECT state, count(*) FROM tasks WHERE name = ? GROUP BY state", name)


# ---------------------------------------------------------------------------
# The acceptance test
# ---------------------------------------------------------------------------

def chaos_step(supervisors, start_supervisor, rng):
    """helpers.chaos_kill, returning also the instant its SIGKILL was sent: time.time()
    read right before the kill system call. (Read right after chaos_kill returns, it was
    seen up to 5 ms late on a loaded machine: by then the killed child's supervisor had
    reaped it, its slot was free, and another process had started a run.)"""
    sent = []

    def timed(kill):
        def call(pid, sig):
            sent.append(time.time())
            return kill(pid, sig)
        return call
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "kill", timed(os.kill))
        patch.setattr(os, "killpg", timed(os.killpg))
        kind, pids = chaos_kill(supervisors, start_supervisor, rng)
    return kind, pids, (sent[0] if sent else None)


def chaos(supervisors, start_supervisor, rng, seconds):
    """For `seconds`, every 0.1-0.3 s, SIGKILL a child or a supervisor's whole group
    (chaos_step), dead supervisors started again; at the end start the dead ones again.
    Returns ({pid: [instants a SIGKILL was sent to it]}, {pid: its process group}). Each
    group's members are read before each kill, so that a child of a killed group not yet
    in the workers table counts as killed with it."""
    killed, group_of = collections.defaultdict(list), {}
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        time.sleep(rng.uniform(0.1, 0.3))          # the pace of the kills, not a wait
        members = {s.pgid: group_members(s.pgid) for s in supervisors
                   if s.proc.poll() is None}
        for pgid, pids in members.items():
            group_of.update(dict.fromkeys(pids, pgid))
        kind, pids, when = chaos_step(supervisors, start_supervisor, rng)
        if kind == "group":
            pids = set(pids).union(*(members.get(s.pgid, ()) for s in supervisors
                                     if s.proc.poll() is not None))
        for pid in pids:
            killed[pid].append(when)
    for i, s in enumerate(supervisors):
        if s.proc.poll() is not None:
            supervisors[i] = start_supervisor()
    return killed, group_of


@pytest.mark.worker
@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_at_once_holds_on_every_worker_of_the_file_through_sigkills(bounded, workers):
    """Two `-c 4` supervisors on one file drain 500 calls of two_at_once (concurrency=2,
    5-30 ms each) while, for 5 s, a random child or a supervisor's whole group is
    SIGKILLed every 0.1-0.3 s (dead supervisors started again). Every call ends SUCCESS
    with its value; never more than 2 run at once, counted from the rows' started_at and
    finished_at and from the task's own log (a run killed mid-way ends when the test
    killed its process); and 2 do run at once, in processes of both supervisors' groups."""
    seed = int(os.environ.get("LQ_CHAOS_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    log = bounded.marks / "two_at_once"

    def start_supervisor():
        return start(workers, bounded, loglevel="WARNING", ready=False)

    supervisors = [start_supervisor(), start_supervisor()]
    for s in supervisors:
        s.wait_ready()
    sleeps = [rng.randint(5, 30) for _ in range(500)]
    ids = bounded.client(f"print(json.dumps([two_at_once.delay(ms, {str(log)!r}).id "
                         f"for ms in {sleeps!r}]))")
    killed, group_of = chaos(supervisors, start_supervisor, rng, 5.0)
    name = "bounded.two_at_once"
    wait_until(lambda: states(bounded.db, name) == [(SUCCESS, 500)], 120,
               lambda: f"every call to succeed (seed {seed}): {states(bounded.db, name)}")
    app = LiteQueue(bounded.db)
    assert [app.AsyncResult(i).get(timeout=5) for i in ids] == sleeps, seed
    rows = row_spans(bounded.db, name)
    spans = runs(logged(log), killed)
    cut = len([s for s in spans if s[3] in killed and s[1] in killed[s[3]]])
    print(f"global limit chaos (seed {seed}): {len(killed)} processes killed, {len(spans)} "
          f"runs logged ({cut} cut by a kill), most at once: rows {most_at_once(rows)}, "
          f"log {most_at_once(spans)}")
    assert len(rows) == 500 and len(spans) >= 500, seed
    assert most_at_once(rows) == 2, (seed, crowd(rows, 2))
    assert most_at_once(spans) == 2, (seed, crowd(spans, 2), {
        pid: killed.get(pid) for _, _, _, pid in crowd(spans, 2)})
    assert len(killed) >= 5, (seed, dict(killed))          # the chaos reached processes
    groups = {group_of[pid] for _, _, _, pid in spans if pid in group_of}
    assert len(groups) >= 2, (seed, groups)     # the limit held across supervisors
    assert sql(bounded.db, "PRAGMA integrity_check") == [("ok",)]


# ---------------------------------------------------------------------------
# Per key, per queue, and what a waiting row says
# ---------------------------------------------------------------------------

@pytest.mark.worker
def test_one_run_per_key_at_once_and_the_waiting_rows_hold_up_nothing(bounded, workers):
    """3 keys x 15 calls of per_customer (concurrency_per_key=1) on one `-c 4` worker: no
    key ever runs twice at once, different keys run side by side, and a call of `free`
    queued after the whole backlog ends before the backlog does."""
    start(workers, bounded)
    log = bounded.marks / "per_customer"
    keys = ["customer-1", "customer-2", "customer-3"]
    out = bounded.client(f'''
        backlog = [per_customer.apply_async((40, {str(log)!r}, key), concurrency_key=key).id
                   for _ in range(15) for key in {keys!r}]
        print(json.dumps({{"backlog": backlog, "free": free.delay(7).id}}))
    ''')
    app = LiteQueue(bounded.db)
    assert app.AsyncResult(out["free"]).get(timeout=30) == 7
    assert [app.AsyncResult(i).get(timeout=60) for i in out["backlog"]] == [40] * 45
    spans = runs(logged(log))
    by_key = collections.defaultdict(list)
    for span in spans:
        by_key[span[2]].append(span)
    assert sorted(by_key) == keys and [len(by_key[k]) for k in keys] == [15] * 3
    assert [most_at_once(by_key[k]) for k in keys] == [1, 1, 1]
    assert most_at_once(spans) >= 2                 # two keys did run at the same time
    rows = row_spans(bounded.db, "bounded.per_customer")
    rows_by_key = collections.defaultdict(list)
    for row in rows:
        rows_by_key[row[2]].append(row)
    assert sorted(rows_by_key) == keys
    assert [most_at_once(rows_by_key[k]) for k in keys] == [1, 1, 1]
    free_end = sql(bounded.db, "SELECT finished_at FROM tasks WHERE id = ?", out["free"])[0][0]
    assert free_end < max(end for _, end, _ in rows)


@pytest.mark.worker
def test_limited_rows_take_their_turn_in_priority_and_queue_order(bounded, workers):
    """5 plain calls, then 10 calls of two_at_once (its limit has room), then a plain call
    of priority 9, all queued before a `-c 1` worker starts: the priority-9 call runs
    first, then the others in the order they were queued. The limited lane's rows do not
    jump ahead of older rows, nor of a higher priority."""
    log = bounded.marks / "order"
    ids = bounded.client(f'''
        log = {str(log)!r}
        ids = [plain.delay(1, log).id for _ in range(5)]
        ids += [two_at_once.delay(1, log).id for _ in range(10)]
        ids.append(plain.apply_async((1, log), priority=9).id)
        print(json.dumps(ids))
    ''')
    start(workers, bounded, concurrency=1)
    app = LiteQueue(bounded.db)
    assert [app.AsyncResult(i).get(timeout=30) for i in ids] == [1] * 16
    starts = [key for kind, key, _, _ in logged(log) if kind == "start"]
    assert starts == ["plain"] * 6 + [None] * 10, starts


@pytest.mark.worker
def test_calls_without_a_key_share_one_key(bounded, workers):
    """Calls of a per-key task given no concurrency_key count as one key (None): they run
    one at a time, beside the calls of another key."""
    start(workers, bounded, concurrency=3)
    log = bounded.marks / "per_customer"
    ids = bounded.client(f'''
        log = {str(log)!r}
        print(json.dumps([per_customer.delay(30, log, "none").id for _ in range(6)] +
                         [per_customer.apply_async((30, log, "k"), concurrency_key="k").id
                          for _ in range(6)]))
    ''')
    app = LiteQueue(bounded.db)
    assert [app.AsyncResult(i).get(timeout=30) for i in ids] == [30] * 12
    spans = runs(logged(log))
    assert most_at_once([s for s in spans if s[2] == "none"]) == 1
    assert most_at_once([s for s in spans if s[2] == "k"]) == 1
    assert most_at_once(spans) == 2
    assert sql(bounded.db, "SELECT conc_key, count(*) FROM tasks GROUP BY conc_key "
                           "ORDER BY conc_key") == [(None, 6), ("k", 6)]


@pytest.mark.worker
def test_a_queue_limit_caps_the_queue_and_its_worker_writes_it(bounded, workers):
    """queue_concurrency = {"reports": 2}: the worker serving the queue writes the limit
    into the file, and 12 calls of report on `-c 4` run at most 2 at once, and 2 do."""
    start(workers, bounded, "-Q", "reports")
    wait_until(lambda: sql(bounded.db, "SELECT queue, max FROM queue_limits") ==
               [("reports", 2)], 10, "the worker to write the queue's limit")
    log = bounded.marks / "report"
    ids = bounded.client(f"print(json.dumps([report.delay(50, {str(log)!r}).id "
                         "for _ in range(12)]))")
    app = LiteQueue(bounded.db)
    assert [app.AsyncResult(i).get(timeout=30) for i in ids] == [50] * 12
    assert sql(bounded.db, "SELECT DISTINCT queue FROM tasks") == [("reports",)]
    spans = runs(logged(log))
    assert len(spans) == 12 and most_at_once(spans) == 2
    assert most_at_once(row_spans(bounded.db, "bounded.report")) == 2


@pytest.mark.worker
def test_why_not_running_names_the_limit_that_holds_a_row(bounded, workers):
    """Three calls of held (concurrency=2) on a `-c 4` worker: two run, and the third,
    with idle processes beside it, says that the limit holds it and that 2 run."""
    start(workers, bounded)
    ids = bounded.client('print(json.dumps([held.delay("w").id for _ in range(3)]))')
    wait_until(lambda: len(logged(bounded.marks / "w")) == 2, 30, "two held calls running")
    app = LiteQueue(bounded.db)
    waiting = [i for i in ids if app.AsyncResult(i).state == PENDING]
    assert len(waiting) == 1, [app.AsyncResult(i).state for i in ids]
    why = app.admin.task(waiting[0])["why"]
    assert "bounded.held" in why and "at most 2" in why, why
    assert re.search(r"\b2 (are )?running", why), why
    (bounded.marks / "w.go").touch()
    assert [app.AsyncResult(i).get(timeout=30) for i in ids] == ["w"] * 3
    assert most_at_once(runs(logged(bounded.marks / "w"))) == 2


# ---------------------------------------------------------------------------
# Declarations
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["concurrency", "concurrency_per_key"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True], ids=repr)
def test_a_limit_that_is_not_a_whole_number_of_at_least_one_is_refused(tmp_path, option,
                                                                         bad):
    db = tmp_path / "jobs.sqlite"
    app = LiteQueue(str(db))

    def job():
        return None
    with pytest.raises(ConfigurationError, match=option):
        app.task(name="tasks.job", **{option: bad})(job)
    assert "tasks.job" not in app.tasks and not db.exists()


def test_a_producer_whose_definition_differs_changes_the_limit_and_says_so(tmp_path,
                                                                          caplog):
    """The limit is the last registration's, for every worker on the file: a process
    whose definition of the task differs (an older module) logs a warning saying so."""
    db = str(tmp_path / "jobs.sqlite")
    for limit in (2, 2, 3, None):
        app = LiteQueue(db)

        def job():
            return None
        caplog.clear()
        app.task(name="tasks.job", concurrency=limit)(job).delay()
        assert sql(db, "SELECT max FROM concurrency") == ([] if limit is None else [(limit,)])
        warned = [r.getMessage() for r in caplog.records if "concurrency limit" in r.getMessage()]
        expected = {2: [], 3: ["from 2 at once to 3 at once"], None: ["from 3 at once to none"]}
        assert [w[w.index("from"):w.index(" for every")] for w in warned] == expected[limit]


def test_whole_limits_are_accepted_alone_and_together(tmp_path):
    app = LiteQueue(str(tmp_path / "jobs.sqlite"))
    for name, options in (("a", {"concurrency": 1}), ("b", {"concurrency_per_key": 3}),
                          ("c", {"concurrency": 5, "concurrency_per_key": 2})):
        def job():
            return None
        app.task(name=f"tasks.{name}", **options)(job)
    assert {"tasks.a", "tasks.b", "tasks.c"} <= set(app.tasks)


# ---------------------------------------------------------------------------
# Limits another client wrote
# ---------------------------------------------------------------------------

# (table, column, SQL value, the row's key) written by a foreign client over a limit the
# worker registered, or into rows of calls of a per-key task that it inserts (plant).
HOSTILE = {
    "max text": ("concurrency", "max", "'abc'", "bounded.two_at_once"),
    "max -1": ("concurrency", "max", "-1", "bounded.two_at_once"),
    "max 0": ("concurrency", "max", "0", "bounded.two_at_once"),
    "max 1.5": ("concurrency", "max", "1.5", "bounded.two_at_once"),
    "max blob": ("concurrency", "max", "X'ff'", "bounded.two_at_once"),
    "per_key text": ("concurrency", "per_key", "'abc'", "bounded.per_customer"),
    "per_key -1": ("concurrency", "per_key", "-1", "bounded.per_customer"),
    "per_key 0": ("concurrency", "per_key", "0", "bounded.per_customer"),
    "per_key 1.5": ("concurrency", "per_key", "1.5", "bounded.per_customer"),
    "per_key blob": ("concurrency", "per_key", "X'ff'", "bounded.per_customer"),
    "per_key NULL": ("concurrency", "per_key", "NULL", "bounded.per_customer"),
    "queue max text": ("queue_limits", "max", "'x'", "reports"),
    "queue max -3": ("queue_limits", "max", "-3", "reports"),
    "conc_key blob": ("tasks", "conc_key", "X'01'", "bounded.per_customer"),
    "conc_key not UTF-8": ("tasks", "conc_key", "CAST(X'ff' AS TEXT)",
                           "bounded.per_customer"),
}


def plant(project, table, column, value, key):
    """Write the bad value as another client would: over a limit the worker registered,
    or into 3 rows of calls of a per-key task that it inserts itself (litequeue's limited
    lane: rate_key = the name). Returns the ids of the rows it inserted."""
    ids = []
    if table == "tasks":
        for _ in range(3):
            ids.append(str(uuid.uuid4()))
            foreign(project.db, "INSERT INTO tasks (id, name, payload, rate_key, conc_key) "
                                f"VALUES (?, ?, ?, ?, {value})", ids[-1], key,
                    pack({"args": [5, str(project.marks / "hostile"), "x"], "kwargs": {}}),
                    key)
        where = "id IN (SELECT value FROM json_each(?))"
        key = json.dumps(ids)
    else:
        where = {"concurrency": "key = ?", "queue_limits": "queue = ?"}[table]
        foreign(project.db, f"UPDATE {table} SET {column} = {value} WHERE {where}", key)
    assert sql(project.db, f"SELECT count(*) FROM {table} WHERE {where} AND {column} IS "
                           f"{value}", key)[0][0] == (3 if ids else 1), f"{table}: {value}"
    return ids


def registered(db):
    """The limits the worker wrote when it started, as bounded.py declares them."""
    return (sql(db, "SELECT key, max, per_key FROM concurrency ORDER BY key") ==
            [(key, *limits) for key, limits in sorted(REGISTERED.items())]
            and sql(db, "SELECT queue, max FROM queue_limits") == [("reports", 2)])


def limits_sane(db):
    """Every limit left is a whole number >= 1 (NULL: none, where allowed)."""
    def whole(value, none=True):
        return (none and value is None) or (type(value) is int and value >= 1)
    return (all(isinstance(k, str) and whole(m) and whole(p) for k, m, p in
                sql(db, "SELECT key, max, per_key FROM concurrency"))
            and all(isinstance(q, str) and whole(m, none=False) for q, m in
                    sql(db, "SELECT queue, max FROM queue_limits")))


def queue_some_of_each(project):
    """{task: [ids]}: 3 calls of each task of bounded.py but held, each returning 5, sent
    by name from this process: it does not import bounded.py, so it registers no limit
    (which would write over a bad one)."""
    app, log = LiteQueue(project.db), str(project.marks / "hostile")

    def send(name, *args, **options):
        return app.send_task(f"bounded.{name}", args=list(args), **options).id
    return {"two_at_once": [send("two_at_once", 5, log) for _ in range(3)],
            "per_customer": [send("per_customer", 5, log, k, concurrency_key=k)
                             for k in ("a", "b", "a")],
            "report": [send("report", 5, log, queue="reports") for _ in range(3)],
            "free": [send("free", 5) for _ in range(3)]}


def no_traceback(project, ids):
    """The commands and why_not_running answer without a traceback."""
    for command in (["status"], ["health", "--max-wait", "3600"]):
        done = lq(*command, project.db, cwd=project.dir)
        out = done.stdout + done.stderr
        assert "Traceback" not in out and done.returncode in (0, 1, 2), (command, out)
    admin = LiteQueue(project.db).admin
    for task_id in ids:
        why = admin.task(task_id)["why"]
        assert why is None or isinstance(why, str), why


def ended_as_expected(project, queued, table):
    """Every call ended: SUCCESS with its value, except that a per-key call whose conc_key
    was text that is not UTF-8 may end FAILURE naming the column (the text repair's rule
    for an unfinished row holding such a value)."""
    app = LiteQueue(project.db)
    for task, ids in queued.items():
        for task_id in ids:
            result = app.AsyncResult(task_id)
            value = result.get(timeout=30, propagate=False)
            if table == "tasks" and task == "per_customer" and result.state == FAILURE:
                assert "conc_key" in str(result.result), result.result
            else:
                assert (result.state, value) == (SUCCESS, 5), (task, result.state, value)


def register_again(project, key):
    """A new producer process queues a call of the task named key (registering it)."""
    call = {"bounded.two_at_once": "two_at_once.delay(5, log)",
            "bounded.per_customer": "per_customer.apply_async((5, log, 'a'), "
                                    "concurrency_key='a')"}[key]
    assert project.client(f'''
        log = {str(project.marks / "hostile")!r}
        print(json.dumps({call}.get(timeout=30)))
    ''') == 5


@pytest.mark.worker
@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_limit_stops_no_task_and_prints_no_traceback(bounded, workers, case):
    """A limit row another client wrote that is not a whole number >= 1, or rows of a
    per-key task whose conc_key is a blob or not UTF-8: the worker's children meet it (the
    supervisor, the only process that repairs, is stopped meanwhile), the commands and
    why_not_running answer without a traceback, and every call still ends. The
    supervisor's quarantine then removes the bad limit saying so in its log (its rows run
    unlimited), a producer that registers the task writes its limit again, and no process
    died or printed a traceback."""
    table, column, value, key = HOSTILE[case]
    w = start(workers, bounded, "-Q", "default,reports", concurrency=2)
    children = {c["pid"] for c in w.live_children()}
    wait_until(lambda: registered(bounded.db), 10, lambda: "the worker's limits written: "
               f"{sql(bounded.db, 'SELECT * FROM concurrency')}, "
               f"{sql(bounded.db, 'SELECT * FROM queue_limits')}")
    w.signal(signal.SIGSTOP)
    try:
        seen = len(w.log_text())
        planted = plant(bounded, table, column, value, key)
        queued = queue_some_of_each(bounded)
        queued["per_customer"] += planted
        no_traceback(bounded, [i for ids in queued.values() for i in ids])
    finally:
        w.signal(signal.SIGCONT)
    ended_as_expected(bounded, queued, table)
    wait_until(lambda: limits_sane(bounded.db), 10, lambda: "the limits repaired: "
               f"{sql(bounded.db, 'SELECT * FROM concurrency')}, "
               f"{sql(bounded.db, 'SELECT * FROM queue_limits')}")
    if table != "tasks" and value != "NULL":     # logged just after the repair commits
        lines = lambda: w.log_text()[seen:].splitlines()
        wait_until(lambda: any(key in line and "limit" in line.lower() for line in lines()),
                   10, lambda: f"the repair's log line: {lines()}")
    no_traceback(bounded, [i for ids in queued.values() for i in ids])
    if table == "concurrency":
        register_again(bounded, key)
        assert sql(bounded.db, "SELECT max, per_key FROM concurrency WHERE key = ?",
                   key) == [REGISTERED[key]]
    assert "Traceback" not in w.log_text(), w.log_text()
    assert w.proc.poll() is None and "ended with" not in w.log_text(), w.log_text()
    assert {c["pid"] for c in w.live_children()} == children
