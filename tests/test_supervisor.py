"""The supervisor under stress: declared-dead processes, a full disk, a write lock held
too long, and SIGKILL chaos that must lose nothing.
"""

import collections
import os
import random
import signal
import sys
import time

import apsw
import msgpack
import pytest

import litequeue
from litequeue import STARTED, SUCCESS

from .helpers import (
    Project, _suppress_lookup, alive, fill_disk, group_members, insert_raw, most_in_a_second, pack,
    parent_of, sql, start_aio_worker, wait_until,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.worker]


class TestResilience:

    def test_a_child_whose_registration_is_removed_stops_claiming(self, project, workers):
        a = workers.start(project, concurrency=1)
        (old,) = a.children()
        assert project.delay("add", 1, 1).get(timeout=10) == 2
        sql(project.db, "DELETE FROM workers WHERE id = ?", old["id"])
        results = [project.delay("record", n) for n in range(20)]
        assert [r.get(timeout=20) for r in results] == list(range(20))
        # The unregistered child claimed none of them and made way for a fresh child.
        claimers = {w for (w,) in sql(project.db, "SELECT DISTINCT worker FROM tasks "
                                      "WHERE id IN (%s)" % ",".join("?" * 20),
                                      *[r.id for r in results])}
        assert old["id"] not in claimers
        wait_until(lambda: not alive(old["pid"]), 10, "the unregistered child to exit")
        wait_until(lambda: len(a.live_children()) == 1, 10, "a fresh child")
        assert sorted(project.ledger().values()) == [1] * 20

    def test_started_rows_of_an_unregistered_dead_process_are_rescued(self, project, workers):
        """A STARTED row whose claimer left no workers row and no live lock (a process
        declared dead and then killed) is requeued: nothing stays STARTED for ever."""
        project.delay("add", 0, 0)                  # creates the file and registers tasks
        ids = insert_raw(project.db, [("tasks.add", pack({"args": [20, 22]}))])
        ghost = "0123456789ab"                       # our id format, no lock file, no row
        sql(project.db, "UPDATE tasks SET state = 'STARTED', worker = ?, attempt = 1 "
            "WHERE id = ?", ghost, ids[0])
        orphan = insert_raw(project.db, [("tasks.add", pack({"args": [1, 2]}))])[0]
        sql(project.db, "UPDATE tasks SET state = 'STARTED', worker = NULL WHERE id = ?", orphan)
        workers.start(project, concurrency=1)
        assert project.app.AsyncResult(ids[0]).get(timeout=15) == 42
        assert project.app.AsyncResult(orphan).get(timeout=15) == 3
        # No lock record says it was running, so it goes back like a prefetched row.
        assert project.app.AsyncResult(ids[0]).retries == 0

    def test_a_stopped_worker_keeps_its_tasks_and_a_killed_one_loses_none(self, project,
                                                                          workers):
        """SIGSTOP holds a worker's locks: the other supervisor waits rather than run its
        task twice. Once the stopped group is killed, its task is rescued at once. (The
        retired worker_lease used to declare it dead after 1 s here.)"""
        settings = {"worker_lease": 1.0}
        a = workers.start(project, concurrency=1, settings=settings)
        r = project.delay("block", "stopped")
        wait_until(lambda: project.started("stopped"), 10, "block to start in a")
        b = workers.start(project, concurrency=1, settings=settings)
        a.killpg(signal.SIGSTOP)
        try:
            # B serves other work meanwhile; several of its rescue rounds (every 2 s) pass.
            window = time.monotonic() + 5
            while time.monotonic() < window:
                assert project.delay("add", 2, 2).get(timeout=10) == 4
            assert project.started("stopped") == [(1, project.started("stopped")[0][1])]
            assert project.state(r.id) == STARTED
        finally:
            a.killpg(signal.SIGCONT)
        a.killpg(signal.SIGKILL)
        a.wait(10)
        project.go("stopped")
        assert r.get(timeout=20) == "stopped"
        assert [attempt for attempt, _ in project.started("stopped")] == [1, 2]
        assert sql(project.db, "SELECT count(*) FROM tasks WHERE state = 'STARTED'") == [(0,)]
        assert len(b.live_children()) == 1

    def test_a_supervisor_that_cannot_recover_ends_the_worker_with_one_line(self, project,
                                                                             workers):
        """A failure no retry can mend (here the schedules table vanishes under a running
        worker) ends the whole worker, children included, with exit code 2 and one
        line saying why: never a half-alive process that prunes and rescues nothing."""
        a = workers.start(project, concurrency=2)
        children = [c["pid"] for c in a.children()]
        sql(project.db, "DROP TABLE schedules")
        assert a.wait(30) == 2
        last = a.log_text().strip().splitlines()[-1]
        assert "litequeue worker stopped: " in last and "failed 5 times in a row" in last, last
        assert "no such table: schedules" in last, last
        wait_until(lambda: not any(alive(pid) for pid in children), 10, "the children to end")

    def test_a_write_lock_held_past_busy_timeout_is_waited_out(self, project, workers):
        settings = {"busy_timeout": 0.5}
        a = workers.start(project, concurrency=1, settings=settings)
        pids = {a.pid} | {c["pid"] for c in a.children()}
        r = project.delay("block", "held")
        later = project.app.tasks["tasks.add"].apply_async((3, 4), countdown=1.5)
        wait_until(lambda: project.started("held"), 10, "block to start")
        blocker = apsw.Connection(project.db)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            project.go("held")
            # The child finishes, cannot commit for 6 busy_timeouts, and keeps trying;
            # the scheduler cannot promote the ETA task either.
            wait_until(lambda: "trying again" in a.log_text(), 10, "the child to wait")
            wait_until(lambda: "scheduler: " in a.log_text(), 10, "the scheduler to wait")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert r.get(timeout=10) == "held"
        assert later.get(timeout=10) == 7
        assert project.delay("add", 1, 1).get(timeout=10) == 2
        assert {a.pid} | {c["pid"] for c in a.children()} == pids   # nobody exited
        assert all(alive(pid) for pid in pids)

    def test_a_full_disk_is_waited_out_and_delay_says_so(self, small_fs, workers):
        project = Project(small_fs / "proj")
        a = workers.start(project, concurrency=1)
        pids = {a.pid} | {c["pid"] for c in a.children()}
        r = project.delay("block", "full")
        wait_until(lambda: project.started("full"), 10, "block to start")
        filler = fill_disk(small_fs)
        try:
            count = sql(project.db, "SELECT count(*) FROM tasks")[0][0]
            big = "x" * 200_000
            with pytest.raises(litequeue.DiskFull, match="full"):
                for _ in range(50):     # the WAL may have room for a few
                    project.delay("echo", big)
                    count += 1
            assert sql(project.db, "SELECT count(*) FROM tasks")[0][0] == count
            project.go("full")          # finishes while the disk is full
            wait_until(lambda: "trying again" in a.log_text(), 10,
                       "the child to keep its result and wait")
            assert all(alive(pid) for pid in pids)
        finally:
            filler.unlink()
        assert r.get(timeout=20) == "full"
        assert project.delay("add", 5, 5).get(timeout=20) == 10
        assert {a.pid} | {c["pid"] for c in a.children()} == pids
        a.signal(signal.SIGTERM)
        assert a.wait(20) == 0


CHAOS_PRODUCER = '''
import os, random, sys, time
from tasks import chaos

log, start, count, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
rng = random.Random(start)
began = time.monotonic()
for i in range(count):
    n = start + i
    result = chaos.delay(n, rng.randint(0, 20))
    os.write(fd, f"{result.id} {n}\\n".encode())
    pause = began + (i + 1) / rate - time.monotonic()
    if pause > 0:
        time.sleep(pause)
print("producer done", flush=True)
'''


def sigkill_a_worker(rng, supervisors):
    """SIGKILL, in a random live supervisor, one child (0.6), the supervisor alone (0.2) or
    its whole process group (0.2), and reap a killed supervisor so that the next poll()
    sees it dead. Returns (kind, pids the signal reached), or None if nothing was killed."""
    target = rng.choice(supervisors)
    if target.proc.poll() is not None:
        return None
    kind = rng.choices(["child", "supervisor", "group"], [0.6, 0.2, 0.2])[0]
    if kind == "child":
        target.id = target.id or target.supervisor_row()
        # Only a process that really is this supervisor's child right now: a stale row of
        # a killed group's child can carry a pid the kernel has since given to another
        # process (a supervisor, say).
        pids = [c["pid"] for c in target.live_children()
                if parent_of(c["pid"]) == target.proc.pid]
        if not pids:
            return None
        victim = rng.choice(pids)
        with _suppress_lookup():
            os.kill(victim, signal.SIGKILL)
            return kind, [victim]
        return None
    if kind == "supervisor":
        target.signal(signal.SIGKILL)
        reached = [target.pid]
    else:
        reached = group_members(target.pgid)
        target.killpg(signal.SIGKILL)
    target.proc.wait()
    return kind, reached


class TestChaos:

    @pytest.mark.chaos
    @pytest.mark.slow
    @pytest.mark.timeout(240)
    def test_sigkill_everything_and_lose_nothing(self, project, workers):
        """Two `-c 4` supervisors share the file. For at least 30 s, every 0.2-0.5 s, a
        random child, a supervisor alone, or a supervisor's whole process group is
        SIGKILLed, and dead supervisors are restarted; meanwhile one producer queues
        6 000 tasks of 0-20 ms and is itself SIGKILLed and restarted every few seconds."""
        seed = int(os.environ.get("LQ_CHAOS_SEED", time.time_ns() % 10**6))
        rng = random.Random(seed)
        total, rate, chaos_for = 6000, 200.0, 30.0
        log = project.dir / "produced.log"
        kills = collections.Counter()      # by kind
        processes_killed = 0               # every process a SIGKILL reached
        restarts = collections.Counter()

        def start_supervisor():
            return workers.start(project, concurrency=4, loglevel="WARNING", ready=False)

        def logged():
            if not log.exists():
                return {}
            ids = {}
            for line in log.read_text().splitlines():
                task_id, n = line.split()
                ids[task_id] = int(n)
            return ids

        def start_producer():
            produced = len(logged())
            return workers.start(project, produced, total - produced, rate, ready=False,
                                 cmd=[sys.executable, "-c", CHAOS_PRODUCER, str(log)])

        supervisors = [start_supervisor(), start_supervisor()]
        for s in supervisors:
            s.wait_ready()
        began = time.monotonic()
        producer = start_producer()
        next_producer_kill = began + rng.uniform(3, 6)
        while time.monotonic() - began < chaos_for or producer.proc.poll() is None \
                or len(logged()) < total:
            time.sleep(rng.uniform(0.2, 0.5))               # pacing the faults
            for i, s in enumerate(supervisors):
                if s.proc.poll() is not None:
                    supervisors[i] = start_supervisor()
                    restarts["supervisor"] += 1
            if producer.proc.poll() is not None and len(logged()) < total:
                assert producer.proc.returncode == -signal.SIGKILL, producer.log_text()
                producer = start_producer()
                restarts["producer"] += 1
            now = time.monotonic()
            if now >= next_producer_kill and producer.proc.poll() is None and \
                    now - began < chaos_for:
                producer.killpg(signal.SIGKILL)
                producer.proc.wait()
                kills["producer"] += 1
                processes_killed += 1
                next_producer_kill = now + rng.uniform(3, 6)
                continue
            killed = sigkill_a_worker(rng, supervisors)
            if killed is None:
                continue
            kind, pids = killed
            processes_killed += len(pids)
            kills[kind] += 1
        chaos_time = time.monotonic() - began
        # The faults stop; the restarted supervisors finish the work.
        for i, s in enumerate(supervisors):
            if s.proc.poll() is not None:
                supervisors[i] = start_supervisor()
                restarts["supervisor"] += 1
        produced = logged()
        assert len(produced) == total

        def unfinished():
            return sql(project.db, "SELECT count(*) FROM tasks WHERE state != 'SUCCESS'")[0][0]
        wait_until(lambda: unfinished() == 0, 90,
                   lambda: f"every task to succeed ({unfinished()} not yet: "
                   f"{sql(project.db, 'SELECT state, count(*) FROM tasks GROUP BY state')})")
        wall = time.monotonic() - began

        rows = {task_id: (state, result, retries) for task_id, state, result, retries in
                sql(project.db, "SELECT id, state, result, retries FROM tasks")}
        starts, executions = collections.Counter(), collections.Counter()
        for path in project.marks.glob("exec.*"):
            for line in path.read_text().splitlines():
                what, task_id, n = line.split()
                (starts if what == "start" else executions)[task_id] += 1
        lost = [i for i, n in produced.items()
                if i not in rows or rows[i][0] != SUCCESS or msgpack.unpackb(rows[i][1]) != n]
        never_ran = [i for i in rows if executions[i] == 0]
        # Executions run to the end beyond one per task, and runs begun beyond one.
        duplicates = sum(count - 1 for count in executions.values() if count > 1)
        restarted = sum(count - 1 for count in starts.values() if count > 1)
        locked = [(path.name, line) for path in self._logs(workers)
                  for line in path.read_text(errors="replace").splitlines()
                  if "locked" in line.lower() or "BusyError" in line or "DatabaseBusy" in line]
        print(f"chaos (seed {seed}): {chaos_time:.1f} s of faults, wall {wall:.1f} s; kills: "
              f"{dict(kills)} = {sum(kills.values())} kills reaching {processes_killed} "
              f"processes; restarts: {dict(restarts)}; tasks: {len(produced)} logged, "
              f"{len(rows)} in the database; lost {len(lost)}; duplicate executions "
              f"{duplicates} (runs begun again: {restarted}); retries charged "
              f"{sum(r[2] for r in rows.values())}")
        assert lost == [], f"{len(lost)} task(s) lost, e.g. {lost[:5]}"
        assert never_ran == [], f"{len(never_ran)} task(s) never executed: {never_ran[:5]}"
        assert set(executions) <= set(rows) and set(starts) == set(rows)
        assert duplicates <= sum(kills.values()), (duplicates, kills)
        assert restarted <= processes_killed, (restarted, processes_killed)
        assert locked == [], locked[:10]
        assert sql(project.db, "PRAGMA integrity_check") == [("ok",)]
        assert chaos_time >= chaos_for
        assert kills["child"] and kills["supervisor"] and kills["group"] and kills["producer"]
        for s in supervisors:                     # the restarted workers are still serving
            assert s.proc.poll() is None

    @pytest.mark.chaos
    @pytest.mark.slow
    @pytest.mark.timeout(240)
    def test_sigkill_with_coroutines_and_rate_limits(self, aio, workers):
        """Two supervisors (-c 2, up to 20 coroutines per process) share the file. For
        20 s, every 0.3-0.6 s, a random child, a supervisor alone, or a supervisor's whole
        process group is SIGKILLed, and dead supervisors are restarted, while 3 000
        coroutine tasks (200-600 ms) and 300 rate-limited (20/s) coroutine tasks run."""
        seed = int(os.environ.get("LQ_CHAOS_SEED", time.time_ns() % 10**6))
        rng = random.Random(seed)
        chaos_for = 20.0
        killed = set()                     # every pid a SIGKILL reached
        kills = collections.Counter()

        def start_supervisor():
            return start_aio_worker(workers, aio, "--async-concurrency", 20, concurrency=2,
                                    loglevel="WARNING", ready=False)

        supervisors = [start_supervisor(), start_supervisor()]
        for s in supervisors:
            s.wait_ready()
        produced = aio.client(f'''
            import random
            rng = random.Random({seed})
            work = {{r.id: n for n, r in enumerate(achaos.delay(n, rng.randint(200, 600))
                                                   for n in range(3000))}}
            limits = {{alimited.delay("crl", n).id: n for n in range(300)}}
            print(json.dumps([work, limits]))
        ''', timeout=120)
        expected = {**produced[0], **produced[1]}
        began = time.monotonic()
        while time.monotonic() - began < chaos_for:
            time.sleep(rng.uniform(0.3, 0.6))
            for i, s in enumerate(supervisors):
                if s.proc.poll() is not None:
                    supervisors[i] = start_supervisor()
            done = sigkill_a_worker(rng, supervisors)
            if done is None:
                continue
            kind, pids = done
            killed.update(pids)
            kills[kind] += 1
        for i, s in enumerate(supervisors):
            if s.proc.poll() is not None:
                supervisors[i] = start_supervisor()

        def unfinished():
            return sql(aio.db, "SELECT count(*) FROM tasks WHERE state != 'SUCCESS'")[0][0]
        wait_until(lambda: unfinished() == 0, 120,
                   lambda: f"every task to succeed ({unfinished()} not yet: "
                   f"{sql(aio.db, 'SELECT state, count(*) FROM tasks GROUP BY state')})")
        rows = {task_id: msgpack.unpackb(result) for task_id, result in
                sql(aio.db, "SELECT id, result FROM tasks")}
        lost = [i for i, n in expected.items() if rows.get(i) != n]
        # A task ran to its end more than once only where a killed process ran it.
        ends = collections.defaultdict(list)
        for line in aio.logged("achaos"):
            if line[0] == "done":
                ends[line[1]].append(line[-2])
        repeated = {i: pids for i, pids in ends.items() if len(pids) > 1}
        unexplained = {i: pids for i, pids in repeated.items()
                       if sum(pid not in killed for pid in pids) > 1}
        # The rate limit holds over every window: the claims (each row's last started_at,
        # the instant it took its start) keep to 20 a second. A row whose process was
        # killed runs again on a new start: every start beyond one per task was made by
        # a killed process.
        claims = [t for (t,) in sql(aio.db, "SELECT started_at FROM tasks WHERE name = "
                                            "'aio_tasks.alimited'")]
        worst = most_in_a_second(claims)
        starts = aio.starts("crl")
        by_task = collections.defaultdict(list)
        for line in starts:
            by_task[line[1]].append(line[-2])
        extra_starts = {i: pids for i, pids in by_task.items()
                        if sum(pid not in killed for pid in pids) > 1}
        locked = [line for w in workers.started if w.log.exists()
                  for line in w.log_text().splitlines()
                  if "locked" in line.lower() or "DatabaseBusy" in line]
        print(f"coroutine chaos (seed {seed}): kills {dict(kills)} reaching {len(killed)} "
              f"processes; {len(expected)} tasks, lost {len(lost)}; tasks run to the end "
              f"twice or more: {len(repeated)}; rate-limited starts {len(starts)} of "
              f"{len(claims)} tasks, most claims in a 1 s window: {worst}")
        assert lost == [], f"{len(lost)} task(s) lost, e.g. {lost[:5]}"
        assert set(ends) == set(produced[0])
        assert unexplained == {}, list(unexplained.items())[:5]
        assert worst <= 21 and len(claims) == 300
        assert set(by_task) == set(produced[1]) and extra_starts == {}
        assert locked == [], locked[:10]
        assert sql(aio.db, "PRAGMA integrity_check") == [("ok",)]
        assert kills["child"] and kills["supervisor"] and kills["group"]

    @staticmethod
    def _logs(workers):
        return [w.log for w in workers.started if w.log.exists()]
