"""Worker pools: coroutines, -P threads and solo, global rate limits and unique tasks.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

import litequeue
from litequeue import REVOKED, SUCCESS, ConfigurationError, LiteQueue

from .helpers import alive, create_db, lq, most_in_a_second, sql, start_aio_worker, wait_until

pytestmark = pytest.mark.timeout(120)


def max_overlap(lines):
    """The most runs in progress at once, from logged start and done lines."""
    events = sorted((line[-1], 0 if line[0] == "done" else 1) for line in lines
                    if line[0] in ("start", "done"))
    running = most = 0
    for _, starting in events:
        running += 1 if starting else -1
        most = max(most, running)
    return most


def only_child(worker, aio, threads=1):
    """Wait until a -P threads or solo worker has its one child (of `threads` threads)."""
    wait_until(lambda: worker.supervisor_row() and sql(
        aio.db, "SELECT count(*), max(concurrency) FROM workers WHERE parent = ?",
        worker.supervisor_row()) == [(1, threads)], 30, f"one child of {threads} thread(s)")
    worker.id = worker.supervisor_row()
    return worker


class TestConcurrency:
    """async def tasks, -P threads and solo, global rate limits and unique tasks."""

    @pytest.mark.worker
    def test_coroutines_run_together_in_one_process_beside_sync_tasks(self, aio, workers):
        start_aio_worker(workers, aio)
        ids = aio.client('print(json.dumps([ablock.delay("gate").id for _ in range(50)]))')
        wait_until(lambda: len(aio.starts("gate")) == 50, 30, "50 coroutines in flight")
        # A sync task of the same process is not held up by the coroutines in flight.
        assert aio.client('print(json.dumps(plain.delay(7).get(timeout=30)))') == 7
        assert len({line[-2] for line in aio.starts("gate")}) == 1       # one process
        aio.go("gate")
        results = aio.client(f'''
            print(json.dumps([app.AsyncResult(i).get(timeout=30) for i in {ids!r}]))
        ''')
        assert results == ["gate"] * 50
        assert max_overlap(aio.logged("gate")) == 50

    @pytest.mark.worker
    def test_worker_async_concurrency_caps_the_coroutines_in_flight(self, aio, workers):
        start_aio_worker(workers, aio, "--async-concurrency", 5)
        ids = aio.client('print(json.dumps([ablock.delay("cap").id for _ in range(12)]))')
        wait_until(lambda: len(aio.starts("cap")) == 5, 30, "5 coroutines in flight")
        aio.go("cap")
        aio.client(f'[app.AsyncResult(i).get(timeout=30) for i in {ids!r}]; print(1)')
        assert len(aio.starts("cap")) == 12
        assert max_overlap(aio.logged("cap")) == 5

    def test_a_coroutine_task_has_what_a_sync_task_has(self, aio, here, monkeypatch):
        w = here(aio, ("aio_tasks",)).start()
        monkeypatch.chdir(aio.dir)          # the calling programs' directory (marks/...)
        out = w.client('''
            import asyncio
            from litequeue import LitequeueError
            values = [aadd.delay(2, 3).get(timeout=30), aretry.delay(2).get(timeout=30),
                      chain(aadd.s(1, 2), aadd.s(3))().get(timeout=30),
                      chord([aadd.s(i, i) for i in range(5)])(asum.s()).get(timeout=30),
                      group(aadd.s(i, 1) for i in range(3))().get(timeout=30),
                      asyncio.run(aadd.delay(1, 2).aget(timeout=30))]
            try:
                afail.delay("broken").get(timeout=30)
            except ValueError as exc:
                values.append(str(exc))
            p = ablock.delay("progress")
            deadline = time.monotonic() + 30
            while p.state != "PROGRESS" and time.monotonic() < deadline:
                time.sleep(0.01)
            values.append([p.state, p.info])
            open("marks/progress.go", "w").close()
            values.append([p.get(timeout=30), p.state])
            try:
                @app.task
                async def agen():
                    yield 1
            except LitequeueError as exc:
                values.append(str(exc))
            print(json.dumps(values))
        ''')
        assert out[:8] == [5, 2, 6, 20, [1, 2, 3], 3, "broken",
                           ["PROGRESS", {"waiting for": "progress"}]]
        assert out[8] == ["progress", SUCCESS]
        assert "is an async generator" in out[9]
        # Eager mode awaits the coroutine in the calling process (with the worker stopped:
        # the setting is its app's too, in this process).
        w.stop()
        eager = w.client('''
            app.conf.task_always_eager = True
            print(json.dumps([aadd.delay(1, 1).get(), aadd.apply((2, 2)).get(),
                              chain(aadd.s(1, 1), aadd.s(1)).apply().get()]))
        ''')
        assert eager == [2, 4, 3]

    @pytest.mark.worker
    def test_time_limits_cancel_only_the_coroutine_that_ran_over(self, aio, workers):
        worker = start_aio_worker(workers, aio)
        child = worker.live_children()[0]["pid"]
        out = aio.client('''
            from litequeue import TimeLimitExceeded
            bystander = ablock.delay("bystander")
            soft, hard = asoft.delay("soft"), ahard.delay("hard")
            answers = [soft.get(timeout=30)]
            try:
                hard.get(timeout=30)
            except TimeLimitExceeded as exc:
                answers.append(str(exc))
            answers.append(bystander.state)
            open("marks/bystander.go", "w").close()
            answers.append(bystander.get(timeout=30))
            print(json.dumps(answers))
        ''')
        assert out == ["cleaned up", "the task ran past its hard time limit", "PROGRESS",
                       "bystander"]
        assert [line[2] for line in aio.logged("bystander")] == [1, 1]   # never requeued
        assert worker.live_children()[0]["pid"] == child              # nothing was killed

    @pytest.mark.worker
    def test_a_loop_blocked_by_sync_code_is_ended_by_the_supervisor(self, aio, workers):
        start_aio_worker(workers, aio)
        out = aio.client('''
            bystander = ablock.delay("by")
            deadline = time.monotonic() + 30
            while bystander.state != "PROGRESS" and time.monotonic() < deadline:
                time.sleep(0.01)
            stuck = ablocks_loop.delay("stuck")
            try:
                stuck.get(timeout=30)
            except Exception as exc:
                answer = [type(exc).__name__, stuck.retries]
            open("marks/by.go", "w").close()
            print(json.dumps(answer + [bystander.get(timeout=30), bystander.retries]))
        ''')
        # The coroutine that blocked its loop is charged; the one beside it goes back to
        # the queue uncharged and runs again in the new process.
        assert out == ["TimeLimitExceeded", 0, "by", 0]
        starts = aio.starts("by")
        assert [line[2] for line in starts] == [1, 2] and starts[0][-2] != starts[1][-2]

    @pytest.mark.worker
    def test_revoke_terminate_of_a_coroutine_that_blocks_its_loop_kills_its_process(
            self, aio, workers):
        """A coroutine that blocks its loop cannot be cancelled: as for a hard time limit,
        its process is killed soon after (2 s), not left running it."""
        start_aio_worker(workers, aio)
        task_id = aio.client('print(json.dumps(ablocks_loop_until.delay("bl").id))')
        wait_until(lambda: aio.starts("bl"), 30, "the coroutine started")
        pid = aio.starts("bl")[0][-2]
        assert aio.client(f'print(json.dumps(app.AsyncResult({task_id!r})'
                          '.revoke(terminate=True)))') is True
        wait_until(lambda: not alive(pid), 15, "the process that ran it killed")
        assert aio.state(task_id) == REVOKED

    @pytest.mark.worker
    def test_revoke_terminate_cancels_one_coroutine_and_leaves_the_others(self, aio,
                                                                          workers):
        start_aio_worker(workers, aio)
        ids = aio.client('print(json.dumps([ablock.delay("rv").id for _ in range(3)]))')
        wait_until(lambda: len(aio.starts("rv")) == 3, 30, "3 coroutines in flight")
        out = aio.client(f'''
            ids = {ids!r}
            print(json.dumps([app.AsyncResult(ids[0]).revoke(),
                              app.AsyncResult(ids[1]).revoke(terminate=True)]))
        ''')
        assert out == [False, True]
        wait_until(lambda: "was revoked and terminated" in workers.started[0].log_text(),
                   30, "the child to cancel the coroutine")
        aio.go("rv")
        states = aio.client(f'''
            rs = [app.AsyncResult(i) for i in {ids!r}]
            [r.get(timeout=30, propagate=False) for r in rs]
            print(json.dumps([r.state for r in rs]))
        ''')
        assert states == [SUCCESS, REVOKED, SUCCESS]
        done = [line[1] for line in aio.logged("rv") if line[0] == "done"]
        assert sorted(done) == sorted([ids[0], ids[2]])
        assert len({line[-2] for line in aio.logged("rv")}) == 1          # one process

    @pytest.mark.worker
    def test_sigkill_requeues_the_coroutines_in_flight_and_charges_only_those(
            self, aio, workers):
        worker = start_aio_worker(workers, aio, "--async-concurrency", 4)
        ids = aio.client('print(json.dumps([ablock.delay("k").id for _ in range(10)]))')
        wait_until(lambda: len(aio.starts("k")) == 4, 30, "4 coroutines in flight")
        victim = worker.live_children()[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len([s for s in aio.starts("k") if s[-2] != victim]) == 4, 30,
                   "4 coroutines in flight in the new child")
        aio.go("k")
        rows = aio.client(f'''
            rs = [app.AsyncResult(i) for i in {ids!r}]
            print(json.dumps([[r.get(timeout=30), r.retries] for r in rs]))
        ''')
        assert [value for value, _ in rows] == ["k"] * 10
        begun = {line[1] for line in aio.starts("k") if line[-2] == victim}
        charged = {i for i, (_, retries) in zip(ids, rows) if retries}
        assert len(begun) == 4 and charged == begun     # prefetched rows went back free

    @pytest.mark.worker
    def test_threads_pool_runs_blocking_tasks_side_by_side_in_one_process(self, aio,
                                                                          workers):
        worker = only_child(workers.start(aio, "-P", "threads", concurrency=8,
                                          app=("aio_tasks",), ready=False), aio, threads=8)
        ids = aio.client('print(json.dumps([tblock.delay("t").id for _ in range(16)]))')
        wait_until(lambda: len(aio.starts("t")) == 8, 30, "8 tasks running at once")
        assert len({line[2] for line in aio.starts("t")}) == 8      # on 8 threads
        assert len({line[-2] for line in aio.starts("t")}) == 1     # of one process
        aio.go("t")
        aio.client(f'[app.AsyncResult(i).get(timeout=30) for i in {ids!r}]; print(1)')
        assert max_overlap(aio.logged("t")) == 8
        assert len(worker.live_children()) == 1
        # A hard time limit cannot stop a thread: the process is killed; the task that
        # ran over is charged, the others it was running go back uncharged.
        out = aio.client('''
            from litequeue import TimeLimitExceeded
            by = tblock.delay("tb")
            deadline = time.monotonic() + 30
            while by.state != "STARTED" and time.monotonic() < deadline:
                time.sleep(0.01)
            try:
                thard.delay("th").get(timeout=30)
            except TimeLimitExceeded as exc:
                answer = [str(exc)[:39]]
            open("marks/tb.go", "w").close()
            print(json.dumps(answer + [by.get(timeout=30), by.retries]))
        ''')
        assert out == ["the task ran past its hard time limit; ", "tb", 0]

    @pytest.mark.worker
    def test_solo_runs_one_task_at_a_time_in_one_process(self, aio, workers):
        worker = only_child(workers.start(aio, "-P", "solo", concurrency=3,
                                          app=("aio_tasks",), ready=False), aio)
        out = aio.client('''
            rs = [apause_then.delay("solo", 0.05) for _ in range(4)] + \\
                 [pause_then.delay("solo", 0.05) for _ in range(2)]
            print(json.dumps([r.get(timeout=30) for r in rs]))
        ''')
        assert out == [0.05] * 6
        assert max_overlap(aio.logged("solo")) == 1
        assert "solo (1 process, 1 task at a time)" in worker.log_text()

    @pytest.mark.worker
    @pytest.mark.parametrize("args, says", [
        (("-P", "gevent"), "no gevent pool: define I/O-bound tasks with async def"),
        (("-P", "nope"), "one of prefork, threads, solo"),
        (("--async-concurrency", "0"), "a whole number >= 1 and <= 10000"),
    ])
    def test_bad_pool_options_are_one_line(self, aio, args, says):
        done = lq("worker", aio.db, "-A", "aio_tasks", *args, cwd=aio.dir)
        assert done.returncode == 2 and says in done.stderr
        assert "Traceback" not in done.stderr and not os.path.exists(aio.db)

    @pytest.mark.worker
    def test_rate_limit_is_global_across_supervisors_and_holds_nothing_up(self, aio,
                                                                          workers):
        first = start_aio_worker(workers, aio, concurrency=2)
        second = start_aio_worker(workers, aio, concurrency=2)
        out = aio.client('''
            limited_ids = [limited.delay("rl", n).id for n in range(30)] + \\
                          [alimited.delay("arl", n).id for n in range(10)]
            plain_values = [plain.delay(n).get(timeout=30) for n in range(5)]
            pending = app.admin.page(state="PENDING", name="aio_tasks.limited")[0]
            why = app.admin.task(pending[0]["id"])["why"] if pending else None
            print(json.dumps({"ids": limited_ids, "plain": plain_values,
                              "still_waiting": len(pending), "why": why}))
        ''')
        # Unrelated tasks ran while the rate-limited backlog was still waiting.
        assert out["plain"] == list(range(5)) and out["still_waiting"] >= 10
        assert "rate-limited to 20/s (for every worker on this file)" in out["why"]
        aio.client(f'[app.AsyncResult(i).get(timeout=60) for i in {out["ids"]!r}]; print(1)')
        # Each limited task keeps to 20 starts a second (they share no bucket), counted
        # over the four processes of the two supervisors: the claims (started_at, the
        # instant a row took its start) and the starts the tasks logged.
        for tag, name, count in (("rl", "limited", 30), ("arl", "alimited", 10)):
            claims = [t for (t,) in sql(aio.db, "SELECT started_at FROM tasks WHERE name = ?",
                                        f"aio_tasks.{name}")]
            assert len(claims) == count and most_in_a_second(claims) <= 20
            assert len(aio.starts(tag)) == count
        pids = {line[-2] for line in aio.starts("rl") + aio.starts("arl")}
        children = {c["pid"] for w in (first, second) for c in w.live_children()}
        assert pids <= children and len(pids) >= 2

    def test_rate_limit_syntax(self, aio):
        assert litequeue._parse_rate("10/s") == ("10/s", 0.1)
        assert litequeue._parse_rate("100/m") == ("100/m", 0.6)
        assert litequeue._parse_rate("1800/h") == ("1800/h", 2.0)
        assert litequeue._parse_rate(4) == ("4/s", 0.25)
        assert litequeue._parse_rate(0) is None and litequeue._parse_rate(None) is None
        app = LiteQueue(aio.db)
        for bad in ("10/x", "fast", "-1/s", True, [1]):
            with pytest.raises(ConfigurationError, match="rate_limit"):
                app.task(lambda: None, name=f"bad{bad!r}", rate_limit=bad)
        assert not os.path.exists(aio.db)

    def test_unique_tasks_return_the_task_that_holds_the_key(self, aio, here):
        w = here(aio, ("aio_tasks",))
        out = w.client('''
            a, b, c = once.delay(1), once.delay(1), once.delay(2)
            d = plain.apply_async((1,), unique_key="nightly")
            e = plain.apply_async((2,), unique_key="nightly")
            # A revoked task frees its key; it cannot be queued again while another
            # task holds the key.
            f = once.delay(5)
            f.revoke()
            g = once.delay(5)
            print(json.dumps([a.id == b.id, b.existing, a.existing, c.id != a.id,
                              d.id == e.id, e.existing, a.id, g.id != f.id,
                              app.admin.requeue(f.id), f.state]))
        ''')
        assert out[:6] == [True, True, False, True, True, True]
        assert out[7:] == [True, False, REVOKED]
        assert sql(aio.db, "SELECT count(*) FROM tasks WHERE name = 'aio_tasks.once'") == \
            [(4,)]                # 1, 2, 5 (revoked) and 5 again
        w.start()
        again = w.client(f'''
            first = app.AsyncResult({out[6]!r})
            first.get(timeout=30)
            fresh = once.delay(1)       # the key was freed when the first one ended
            print(json.dumps([fresh.id != first.id, fresh.existing, fresh.get(timeout=30)]))
        ''')
        assert again == [True, False, 1]

    @pytest.mark.worker
    def test_processes_racing_to_queue_a_unique_task_queue_it_once(self, aio):
        """Four processes race to queue the same call: the unique index lets one row in."""
        create_db(aio)
        racer = "import json\nfrom aio_tasks import once\n" \
                "print(json.dumps(sorted({once.delay(99).id for _ in range(50)})))"
        procs = [subprocess.Popen([sys.executable, "-c", racer], cwd=aio.dir,
                                  stdout=subprocess.PIPE) for _ in range(4)]
        try:
            ids = {i for p in procs for i in json.loads(p.communicate(timeout=60)[0])}
        finally:
            for p in procs:
                p.kill()
                p.wait()
        assert len(ids) == 1
        assert sql(aio.db, "SELECT count(*) FROM tasks WHERE name = 'aio_tasks.once'") == \
            [(1,)]
