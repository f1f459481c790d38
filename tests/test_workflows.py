"""Durable workflows: task steps, step functions, durable sleeps, messages and events,
replays that never redo a recorded step, and workflows that survive SIGKILL. Real worker
processes on real files; the producer is this process, with no import of the flows."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

import litequeue
from litequeue import FAILURE, SCHEDULED, SUCCESS, WAITING, LiteQueue

from .helpers import (
    TASKS_DIR, _chromium, chaos_kill, lq, page_click, sql, sql_write, task_source, wait_until,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.worker]

FLOWS = task_source("flows.py")


@pytest.fixture
def flows(project):
    project.write_module("flows", FLOWS)
    project.marks.mkdir(exist_ok=True)
    return project


def start(workers, project, concurrency=2):
    return workers.start(project, concurrency=concurrency, app=("flows",))


def call(project, name, *args):
    """Queue flows.NAME(*args) from this process, which does not import flows.py."""
    return LiteQueue(project.db).send_task(f"flows.{name}", args=list(args))


def runs(project, name):
    """How many times the task or step function NAME ran (its marks/NAME lines)."""
    path = project.marks / name
    return len(path.read_text().splitlines()) if path.exists() else 0


def steps(project, workflow_id):
    out = lq("workflows", project.db, workflow_id, "--json", cwd=project.dir)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def state(project, task_id):
    return sql(project.db, "SELECT state FROM tasks WHERE id = ?", task_id)[0][0]


def test_the_readme_workflow_runs_each_step_once(flows, workers):
    start(workers, flows)
    result = call(flows, "nightly", "2026-12-06")
    assert result.get(timeout=30) == 60
    assert result.get_event("progress", timeout=5) == "loaded"
    assert [runs(flows, name) for name in ("extract", "summarize", "load")] == [1, 1, 1]
    recorded = steps(flows, result.id)
    assert [(s["kind"], s["name"], s["state"]) for s in recorded] == [
        ("task", "flows.extract", SUCCESS), ("sleep", "sleep", SUCCESS),
        ("step", "flows.summarize", SUCCESS), ("event", "progress", SUCCESS),
        ("task", "flows.load", SUCCESS)]
    assert recorded[0]["outcome"] == [1, 2, 3] and recorded[2]["outcome"] == 6
    listed = lq("workflows", flows.db, cwd=flows.dir)
    assert listed.returncode == 0 and f"{result.id}  SUCCESS" in listed.stdout
    assert "flows.nightly  5 step(s)" in listed.stdout


def test_fan_out_child_workflows_and_a_failed_step_caught(flows, workers):
    start(workers, flows)
    assert call(flows, "fan_out", 20).get(timeout=30) == [i * i for i in range(20)]
    assert call(flows, "parent_flow", 4).get(timeout=30) == [0, 1, 4, 9]
    assert call(flows, "catches").get(timeout=30) == "caught no"


def test_a_replay_returns_the_recorded_step_and_the_wait_holds_no_process(flows, workers):
    w = start(workers, flows, concurrency=1)
    result = call(flows, "replays", "r1")
    wait_until(lambda: runs(flows, "hold.r1"), 30, "the held task started")
    # The workflow waits for its task step without holding the one worker process: the
    # held task itself runs on it.
    assert state(flows, result.id) == WAITING
    assert "waiting for its step 1 to end" in lq("workflows", flows.db, cwd=flows.dir).stdout
    (flows.marks / "r1.go").touch()
    first = result.get(timeout=30)
    assert runs(flows, "stamp") == 1
    assert first == steps(flows, result.id)[0]["outcome"]
    assert w.proc.poll() is None


def test_a_step_task_runs_beside_slow_code_between_two_steps(flows, workers):
    """A step task is not rung for when it is queued (the process that runs the workflow
    claims it when it waits for it): if the workflow goes on with slow code instead, the
    watch thread rings 10 ms later, so the other process runs the step meanwhile. (Once
    the other process has idled long enough to poll seldom, that is 10 ms against up to
    1 s, measured by hand; right after a start its poll is still short, so this checks
    the behaviour, not the ring alone.)"""
    workers.start(flows, "--poll-interval", "60", concurrency=2, app=("flows",))
    waited, value = call(flows, "slow_between", "s1").get(timeout=30)
    assert value == "s1"
    assert waited < 0.5, f"the step ran {waited:.3f} s after it was queued"


def test_a_step_in_a_queue_another_worker_serves_is_rung_for(flows, workers):
    """The process running a workflow claims a step task of its own queue when the run
    waits for it, so it is not rung for; a step in another queue is, at once: the worker
    serving that queue starts it in milliseconds. (A worker idle long enough to poll
    seldom shows the difference best: 1 s against 2 to 6 ms, measured by hand; here its
    poll may still be short, so this checks the path, not the ring alone.)"""
    start(workers, flows, concurrency=1)
    workers.start(flows, "-Q", "far", "--poll-interval", "60", concurrency=1, app=("flows",))
    queued, ran = call(flows, "across", 1).get(timeout=30)
    assert ran - queued < 0.5, f"the step started {ran - queued:.3f} s after it was queued"


def test_a_task_step_that_raises_ignore_ends_its_step(flows, workers):
    """Nothing follows an ignored task, but its workflow does not wait for ever: the step
    gives the state the task set before Ignore, else None."""
    start(workers, flows)
    result = call(flows, "ignoring", 7)
    assert result.get(timeout=30) == [None, 7]
    assert [st["state"] for st in steps(flows, result.id)] == ["IGNORED", "IGNORED"]


def test_sigkill_of_the_worker_mid_workflow_resumes_from_the_recorded_steps(flows, workers):
    w = start(workers, flows)
    result = call(flows, "replays", "k1")
    wait_until(lambda: runs(flows, "hold.k1"), 30, "the held task started")
    w.killpg(signal.SIGKILL)
    w.wait(30)
    start(workers, flows)            # rescues the held task; it runs again
    (flows.marks / "k1.go").touch()
    first = result.get(timeout=60)
    assert runs(flows, "stamp") == 1, "a recorded step ran again"
    assert first == steps(flows, result.id)[0]["outcome"]
    assert sql(flows.db, "PRAGMA integrity_check") == [("ok",)]


def test_messages_and_events_between_workflows_and_from_outside(flows, workers):
    start(workers, flows)
    app = LiteQueue(flows.db)
    result = call(flows, "receiver", "orders", 60)
    waits = lambda: sql(flows.db, "SELECT waits FROM tasks WHERE id = ?", result.id)[0][0]
    wait_until(lambda: waits() == "recv:orders", 30, "the receiver waits for a message")
    app.send(result.id, {"order": 1}, topic="orders")
    assert result.get_event("got", timeout=10) == {"order": 1}
    assert call(flows, "sender", result.id, "orders", "second").get(timeout=30) == "sent"
    assert result.get(timeout=30) == [{"order": 1}, "second"]
    with pytest.raises(litequeue.TaskNotFound):
        app.send("no-such-workflow", 1)


def test_recv_times_out_durably_and_a_sleep_ends_on_time(flows, workers):
    start(workers, flows)
    result = call(flows, "receiver", "nothing", 0.3)
    assert result.get(timeout=30) == [None, None]
    queued = time.time()
    sleeper = call(flows, "sleeper", 1.0)
    wait_until(lambda: state(flows, sleeper.id) == SCHEDULED, 10, "the sleeper sleeps")
    woke = sleeper.get(timeout=30)
    assert 1.0 <= woke - queued < 3.0


def test_many_sleeping_workflows_hold_no_process(flows, workers):
    start(workers, flows)
    app = LiteQueue(flows.db)
    sleepers = [app.send_task("flows.sleeper", args=[2.0]) for _ in range(200)]
    # Two worker processes cannot hold 200 sleeps at once: these are rows, not processes.
    wait_until(lambda: sql(flows.db, "SELECT count(*) FROM tasks WHERE state = 'SCHEDULED' "
                                     "AND name = 'flows.sleeper'")[0][0] == 200, 30,
               "200 workflows asleep at once")
    assert all(isinstance(r.get(timeout=60), float) for r in sleepers)


def test_a_step_function_retries_in_its_run(flows, workers):
    start(workers, flows)
    assert call(flows, "retrying", "x").get(timeout=30) == "steady"
    assert runs(flows, "flaky.x") == 3


def test_a_workflow_whose_code_changed_fails_saying_so(flows, workers):
    start(workers, flows)
    result = call(flows, "changing")
    wait_until(lambda: runs(flows, "hold.changing"), 30, "the held task started")
    (flows.marks / "changed").touch()
    (flows.marks / "changing.go").touch()
    with pytest.raises(litequeue.WorkflowChanged, match="the workflow's code changed"):
        result.get(timeout=30)
    assert state(flows, result.id) == FAILURE


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_during_workflows_loses_nothing_and_reruns_only_killed_steps(flows, workers):
    """Two `-c 2` supervisors run 80 workflows (a task step, a step function, a durable
    sleep, a message from outside) beside plain tasks while, every 0.1-0.3 s for 12 s, a
    random child (sometimes a supervisor's whole group) is SIGKILLed, and dead supervisors
    are restarted. Every workflow ends SUCCESS with the right value; a step function ran
    again only where a process running it was killed."""
    seed = int(os.environ.get("LQ_CHAOS_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    count, chaos_for = 80, 12.0

    def start_supervisor():
        return workers.start(flows, concurrency=2, app=("flows",), loglevel="WARNING",
                             ready=False)

    supervisors = [start_supervisor(), start_supervisor()]
    for s in supervisors:
        s.wait_ready()
    app = LiteQueue(flows.db)
    results = [app.send_task("flows.chaos_flow", args=[i]) for i in range(count)]
    plain = [app.send_task("flows.square", args=[i]) for i in range(200)]
    killed, sent, began = set(), set(), time.monotonic()
    while time.monotonic() - began < chaos_for:
        time.sleep(rng.uniform(0.1, 0.3))
        for r in results:            # each message once, as each workflow comes to wait
            if r.id not in sent and sql(flows.db, "SELECT waits FROM tasks WHERE id = ?",
                                        r.id)[0][0] == "recv:go":
                app.send(r.id, results.index(r), topic="go")
                sent.add(r.id)
        killed.update(chaos_kill(supervisors, start_supervisor, rng)[1])
    for i, s in enumerate(supervisors):
        if s.proc.poll() is not None:
            supervisors[i] = start_supervisor()
    for r in results:
        if r.id not in sent:
            waits = lambda: sql(flows.db, "SELECT waits FROM tasks WHERE id = ?", r.id)[0][0]
            wait_until(lambda: waits() == "recv:go", 60, f"workflow {r.id} waits for go")
            app.send(r.id, results.index(r), topic="go")
    assert [r.get(timeout=60) for r in results] == [6 * i for i in range(count)], seed
    assert [r.get(timeout=60) for r in plain] == [i * i for i in range(200)], seed
    assert len(killed) >= 5, (seed, killed)        # the chaos did reach processes
    for i in range(count):
        pids = [int(line.split()[0]) for line in
                (flows.marks / f"tripled.{i}").read_text().splitlines()]
        # Every run but the last was in a process that was killed (before it recorded).
        assert all(pid in killed for pid in pids[:-1]), (seed, i, pids)
    assert sql(flows.db, "PRAGMA integrity_check") == [("ok",)]


def _producer(flows, log, start, end):
    return subprocess.Popen([sys.executable, str(TASKS_DIR / "flow_producer.py"), flows.db,
                             str(log), str(start), str(end)], cwd=flows.dir,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _producer_lines(log):
    return log.read_text().splitlines() if log.exists() else []


def _answer_waiting_workflows(flows, app):
    """Send its message to each chaos_flow whose producer died before sending it, until
    every one has ended; returns {id: (argument, state, value)}."""
    def rows():
        return sql(flows.db, "SELECT id, state, waits FROM tasks WHERE name = 'flows.chaos_flow'")

    answered = set()

    def settled():
        for task_id, _, waits in rows():       # WAITING, or SCHEDULED for its timeout
            if waits == "recv:go" and task_id not in answered:
                app.send(task_id, app.AsyncResult(task_id).args[0], topic="go")
                answered.add(task_id)
        return all(state in (SUCCESS, FAILURE) for _, state, _ in rows())
    wait_until(settled, 90, lambda: f"every workflow to end: {rows()}")
    return {task_id: (app.AsyncResult(task_id).args[0], state, app.AsyncResult(task_id).result)
            for task_id, state, _ in rows()}


@pytest.mark.chaos
def test_sigkill_of_producers_loses_no_workflow_they_were_told_was_queued(flows, workers):
    """Three producers queue workflows and send their messages while the test SIGKILLs
    them (and worker processes) at random and restarts them where their log stops: every
    workflow a producer's delay() returned for ends SUCCESS with its value, and so does
    every other row a killed producer left."""
    seed = int(os.environ.get("LQ_CHAOS_SEED", time.time_ns() % 10**6))
    rng, per = random.Random(seed), 150
    supervisors = [workers.start(flows, concurrency=2, app=("flows",), loglevel="WARNING")]
    logs = [flows.dir / f"producer-{k}.log" for k in range(3)]
    procs = [_producer(flows, log, k * 1000, k * 1000 + per) for k, log in enumerate(logs)]
    kills = 0
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(rng.uniform(0.005, 0.05))
            k = rng.randrange(3)
            if procs[k].poll() is None and rng.random() < 0.5:
                os.killpg(procs[k].pid, signal.SIGKILL)
                procs[k].wait()
                kills += 1
                done = [int(x.split()[1]) for x in _producer_lines(logs[k])
                        if x.startswith("queued")]
                first = max(done, default=k * 1000 - 1) + 1
                if first < k * 1000 + per:
                    procs[k] = _producer(flows, logs[k], first, k * 1000 + per)
            elif rng.random() < 0.2:
                chaos_kill(supervisors, lambda: workers.start(
                    flows, concurrency=2, app=("flows",), loglevel="WARNING"), rng)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    if supervisors[0].proc.poll() is not None:
        supervisors[0] = workers.start(flows, concurrency=2, app=("flows",))
    ended = _answer_waiting_workflows(flows, LiteQueue(flows.db))
    promised = {x.split()[2]: int(x.split()[1]) for log in logs for x in _producer_lines(log)
                if x.startswith("queued")}
    assert kills >= 3, seed
    assert set(promised) <= set(ended), (seed, set(promised) - set(ended))
    assert all(state == SUCCESS and value == 6 * i for i, state, value in ended.values()), \
        (seed, ended)
    assert sql(flows.db, "PRAGMA integrity_check") == [("ok",)]


def test_a_step_another_client_spoiled_fails_its_workflow_only(flows, workers):
    """A recorded step outcome that is not msgpack (written by another client): the
    replay fails the workflow saying which step, and the worker goes on serving."""
    start(workers, flows)
    result = call(flows, "replays", "h1")
    wait_until(lambda: runs(flows, "hold.h1"), 30, "the held task started")
    sql_write(flows.db, f"UPDATE steps SET result = x'c1' WHERE workflow = '{result.id}' "
                        "AND idx = 0")
    (flows.marks / "h1.go").touch()
    with pytest.raises(litequeue.CorruptResult, match="outcome of step 0"):
        result.get(timeout=30)
    assert call(flows, "fan_out", 3).get(timeout=30) == [0, 1, 4]


@pytest.mark.browser
def test_the_dashboard_lists_workflows_and_forks_one_in_chromium(flows, workers, dashboards,
                                                                 tmp_path):
    """The Workflows page lists a waiting workflow with what it waits for; its task page
    forks a new run from a step, which keeps the steps before it."""
    from selenium.webdriver.common.by import By
    start(workers, flows)
    result = call(flows, "replays", "d1")
    wait_until(lambda: runs(flows, "hold.d1"), 30, "the held task started")
    d = dashboards(flows)
    browser = _chromium(tmp_path)
    js = browser.execute_script

    def text():
        return js("const m = document.querySelector('main'); return m ? m.innerText : ''")
    try:
        browser.get(d.login_url)
        wait_until(lambda: "Workflows" in js("return document.getElementById('nav').innerText"),
                   20, "the nav")
        browser.get(d.site_url + "workflows")
        wait_until(lambda: result.id in text() and "waiting for its step 1" in text(), 20,
                   lambda: f"the waiting workflow listed: {text()[:300]}")
        assert "WAITING" in text()
        assert js("return document.getElementById('wf-state').value") == ""
        browser.save_screenshot(str(tmp_path / "workflows.png"))
        (flows.marks / "d1.go").touch()
        first = result.get(timeout=30)
        browser.get(d.site_url + "task/" + result.id)
        wait_until(lambda: js("return !!document.getElementById('fork-from')"), 20, "fork box")
        js("document.getElementById('fork-from').value = '1'")
        page_click(browser, By.ID, "fork-go")
        wait_until(lambda: "forked:" in js("return document.getElementById('actions')"
                                          ".innerText"), 20, "the fork's link")
        fork = js("return document.querySelector('#actions a').textContent")
        assert LiteQueue(flows.db).AsyncResult(fork).get(timeout=30) == first
        assert runs(flows, "stamp") == 1, "a step before the fork point ran again"
        assert runs(flows, "hold.d1") == 2, "the step forked from did not run again"
        browser.save_screenshot(str(tmp_path / "forked.png"))
        browser.get(d.site_url + "queues")
        wait_until(lambda: "Concurrency limits" in text(), 20, "the limits section")
        browser.save_screenshot(str(tmp_path / "queues.png"))
    finally:
        browser.quit()
