"""The supervisor's scheduler: ETAs, expiry and periodic tasks.

Most tests open a supervisor's scheduling parts in this process (InProcess.supervisor():
the definitions synced as a worker's start syncs them) and drive its scheduler on an
injected clock, so that hours of downtime take no time; a worker child's steps, here too,
run what it queued. Real worker processes remain where the process is the point: a
running worker on time for a countdown and a schedule, and two supervisors racing for
the same fires.
"""

import collections
import datetime as dt
import signal
import time
import zoneinfo

import pytest

import litequeue
from litequeue import EXPIRED, SCHEDULED, SUCCESS, LiteQueue, TaskRevoked, crontab

from .helpers import UTC, fire_time, fires_of, pack, sql, task_source, wait_until

pytestmark = pytest.mark.timeout(120)


# Periodic definitions for the scheduler tests; each test writes its own beat.py.
BEAT_SOURCE = task_source("beat.py")


def start_worker(here, project, modules=("tasks", "beat"), queues=None):
    """What `litequeue worker DB -A MODULES` does at its start, in this process: the
    modules imported (w, an InProcess, runs their tasks) and a supervisor opened, which
    syncs the served names and periodic definitions (sup, its scheduler to step). w.close()
    stops that worker: its supervisor closes and its modules go, so that a worker started
    after it imports the code as it then is."""
    w = here(project, modules)
    return w, w.supervisor(queues)


def fires_by(project, schedule):
    """Sorted ids of a schedule's fires."""
    return sorted(fires_of(project.db, schedule))


def iso(t):
    return dt.datetime.fromtimestamp(t, UTC).isoformat()


class TestScheduler:
    """ETA, expiry and periodic tasks: the scheduler in process, on an injected clock,
    and real worker supervisors where the process is the point."""

    @pytest.mark.worker
    def test_a_running_worker_is_on_time_for_a_countdown_and_a_schedule(self, project,
                                                                        workers):
        """End to end, as the clock runs: a `litequeue worker -A tasks -A beat` process
        syncs the definitions as it starts; its supervisor wakes the child for an eta,
        which starts the task within half a second of it and not before; and it fires the
        1-second schedule on whole seconds, each fire once. (What the sync writes, how
        fires are planned and how etas are read, on an injected clock: the tests below.)"""
        project.write_module("beat", BEAT_SOURCE)
        before = time.time()
        workers.start(project, app=("tasks", "beat"), concurrency=1)
        assert set(project.schedules()) == {"tick", "morning", "six-hourly"}
        r = project.app.tasks["tasks.stamp"].apply_async(["countdown"], countdown=1.5)
        (eta,), = sql(project.db, "SELECT eta FROM tasks WHERE id = ?", r.id)
        # Until shortly before its ETA the state reads SCHEDULED and nothing has run.
        seen = collections.Counter()
        while time.time() < eta - 0.15:
            seen[r.detailed_state] += 1
            assert project.stamps("countdown") == []
            time.sleep(0.02)
        assert set(seen) == {SCHEDULED} and sum(seen.values()) > 10, seen
        started = r.get(timeout=10)
        assert eta <= started < eta + 0.5, f"started {started - eta:+.3f} s from its ETA"
        assert project.stamps("countdown") == [(started, r.id)]      # ran once
        # The same id, and a fresh handle on it, see the result after the move.
        assert project.app.AsyncResult(r.id).get(timeout=5) == started
        (state, started_at), = sql(project.db,
                                   "SELECT state, started_at FROM tasks WHERE id = ?", r.id)
        assert state == SUCCESS and started_at >= eta

        # Meanwhile the 1-second schedule fired on whole seconds, each fire once.
        def done():
            return sorted(i for i, (state, _) in fires_of(project.db, "tick").items()
                          if state == SUCCESS)
        ticks = wait_until(lambda: len(done()) >= 2 and done(), 10, "two ticks")
        times = [fire_time(t) for t in ticks]
        assert all(t == int(t) and t > before for t in times)
        assert times[1] - times[0] == 1.0
        assert all(project.ledger()[t] == 1 for t in ticks)

    def test_eta_aware_naive_in_the_app_zone_and_in_the_past(self, project, here):
        """An aware eta is its instant, a naive one a wall time in the app's zone, and one
        in the past runs at once; the scheduler (on an injected clock) lets each row go
        at its instant and not before. (How close to its eta a real worker starts one:
        test_a_running_worker_is_on_time_for_a_countdown_and_a_schedule.)"""
        w = here(project)
        sup = w.supervisor()
        shanghai_zone = zoneinfo.ZoneInfo("Asia/Shanghai")
        shanghai = LiteQueue(project.db, timezone="Asia/Shanghai")
        aware = dt.datetime.now(zoneinfo.ZoneInfo("America/New_York")) + dt.timedelta(hours=1)
        naive = dt.datetime.now(shanghai_zone).replace(tzinfo=None) + dt.timedelta(hours=2)
        r_aware = project.app.tasks["tasks.stamp"].apply_async(["aware"], eta=aware)
        r_naive = shanghai.send_task("tasks.stamp", ["naive"], eta=naive)
        sent = time.time()
        r_past = shanghai.send_task("tasks.stamp", ["past"],
                                    eta=dt.datetime.now(shanghai_zone).replace(tzinfo=None)
                                    - dt.timedelta(hours=1))
        assert r_aware.detailed_state == r_naive.detailed_state == SCHEDULED
        due = {r_aware.id: aware.timestamp(),
               r_naive.id: naive.replace(tzinfo=shanghai_zone).timestamp()}
        for r in (r_aware, r_naive):
            assert sql(project.db, "SELECT eta FROM tasks WHERE id = ?", r.id) == [(due[r.id],)]

        def ran():
            return sorted(path.name for path in project.marks.glob("stamp.*"))
        # The past ETA runs at once, while the others wait.
        assert w.work() == 1
        assert r_past.get(timeout=5) - sent < 1.0
        assert ran() == ["stamp.past"]
        assert r_aware.detailed_state == r_naive.detailed_state == SCHEDULED
        # Each row goes at its own instant: not a hundredth of a second before it.
        for r, tag in [(r_aware, "aware"), (r_naive, "naive")]:
            sup.scheduler.step(due[r.id] - 0.01)
            assert w.work() == 0 and project.state(r.id) == SCHEDULED
            sup.scheduler.step(due[r.id] + litequeue._DUE_CLAIM_GRACE)
            assert w.work() == 1
            assert project.stamps(tag) == [(r.get(timeout=5), r.id)]      # ran once
        assert ran() == ["stamp.aware", "stamp.naive", "stamp.past"]

    def test_expired_tasks_never_run(self, project, here):
        stamp = project.app.tasks["tasks.stamp"]
        # No worker yet: one expires while it waits, one while it is scheduled.
        waiting = stamp.apply_async(["waiting"], expires=1.0)
        scheduled = stamp.apply_async(["scheduled"], countdown=0.5, expires=1.0)
        wait_until(lambda: waiting.detailed_state == scheduled.detailed_state == EXPIRED, 10,
                   lambda: f"both to read EXPIRED ({waiting.detailed_state}, {scheduled.detailed_state})")
        with pytest.raises(TaskRevoked):
            waiting.get(timeout=5)
        past = stamp.apply_async(["past"], expires=dt.datetime.now(UTC) - dt.timedelta(seconds=1))
        later = stamp.apply_async(["later"], expires=60)
        here(project).work()            # a worker child's steps, in this process
        assert later.get(timeout=10) > 0                              # the worker ran it
        expired = [waiting, scheduled, past]
        # The worker met each expired row and marked it, without running it.
        assert [project.state(r.id) for r in expired] == [EXPIRED] * 3
        for r in expired:
            assert r.detailed_state == EXPIRED
            with pytest.raises(TaskRevoked, match="expired"):
                r.get(timeout=5)
            assert r.get(timeout=5, propagate=False) is None
            assert project.row(r.id)["result"] is None
        assert [p.name for p in project.marks.glob("stamp.*")] == ["stamp.later"]

    def test_definitions_are_synced_when_a_worker_starts_and_fire(self, project, here):
        project.write_module("beat", BEAT_SOURCE)
        before = time.time()
        w, sup = start_worker(here, project)
        after = time.time()
        rows = project.schedules()
        assert set(rows) == {"tick", "morning", "six-hourly"}
        assert {k: rows["tick"][k] for k in ("task", "module", "schedule", "tz", "catch_up",
                                             "queue")} == {
            "task": "tasks.record", "module": "beat", "schedule": "every:1.0", "tz": "UTC",
            "catch_up": "once", "queue": "default"}
        assert litequeue._unpack_envelope(rows["tick"]["payload"]) == (["tick"], {})
        morning = rows["morning"]
        assert (morning["schedule"], morning["tz"]) == ("cron:0 9 * * mon-fri", "Asia/Shanghai")
        cron = crontab(minute=0, hour=9, day_of_week="mon-fri", tz="Asia/Shanghai")
        assert morning["next_fire"] in {cron.next_after(dt.datetime.fromtimestamp(t, UTC))
                                        .timestamp() for t in (before, after)}
        six = rows["six-hourly"]
        assert (six["task"], six["module"], six["schedule"]) == \
            ("beat.six_hourly", "beat", "every:21600.0")
        assert litequeue._unpack_envelope(six["payload"]) == ([], {"n": "six"})
        # A new schedule starts at the sync: nothing before it fires.
        for row in rows.values():
            assert before <= row["last_fire"] <= after < row["next_fire"]

        # The 1-second schedule fires on whole seconds, each fire once, named by its time:
        # its first fire time, and the next a second later, not a moment before either.
        first = rows["tick"]["next_fire"]
        assert first == int(first) and first - 1 <= after
        for t in (first, first + 1):
            sup.scheduler.step(t - 0.001)
            assert [fire_time(i) for i in fires_by(project, "tick")] == \
                [f for f in (first, first + 1) if f < t]
            sup.scheduler.step(t)
            sup.scheduler.step(t + 0.5)         # a second look queues it no second time
        ticks = fires_by(project, "tick")
        assert ticks == [f"tick@{iso(first)}", f"tick@{iso(first + 1)}"]
        assert project.schedules()["tick"]["last_fire"] == first + 1
        # (A sync a moment before six-hourly's or morning's time sees that fire too.)
        others = fires_by(project, "six-hourly") + fires_by(project, "morning")
        assert w.work() == 2 + len(others)
        assert {i: state for i, (state, _) in fires_of(project.db, "tick").items()} == \
            dict.fromkeys(ticks, SUCCESS)
        times = [fire_time(t) for t in ticks]
        assert all(t == int(t) and t > before for t in times)
        assert times[1] - times[0] == 1.0
        assert all(project.ledger()[t] == 1 for t in ticks)

    def test_schedules_removed_from_the_code_are_deleted_on_the_next_start(self, project,
                                                                           here):
        project.write_module("beat", BEAT_SOURCE)
        w, _ = start_worker(here, project)
        assert set(project.schedules()) == {"tick", "morning", "six-hourly"}
        w.close()                                   # the worker stops
        # A schedule of a module this worker does not run.
        sql(project.db, "INSERT INTO schedules (name, task, module, schedule, tz, payload, "
            "queue, next_fire, updated_at) VALUES ('other', 'elsewhere.job', 'elsewhere', "
            "'cron:0 0 1 1 *', 'UTC', ?, 'default', ?, 0)", pack({}), time.time() + 86400 * 30)
        tick = project.schedules()["tick"]
        # "morning" is removed from the code; the rest stays.
        project.write_module("beat", '''
            import datetime
            from tasks import app, record

            app.add_periodic_task(1.0, record.s("tick"), name="tick")

            @app.periodic_task(datetime.timedelta(hours=6), name="six-hourly",
                               kwargs={"n": "six"})
            def six_hourly(n):
                return n
        ''')
        start_worker(here, project)
        rows = project.schedules()
        assert set(rows) == {"tick", "six-hourly", "other"}
        # Unchanged, it keeps its history: nothing fired in between, so its cursor and
        # next fire time are those of the first start.
        assert (rows["tick"]["last_fire"], rows["tick"]["next_fire"]) == \
            (tick["last_fire"], tick["next_fire"])

    def test_a_module_s_last_periodic_task_removed_is_deleted(self, project, here):
        project.write_module("beat", BEAT_SOURCE)
        w, _ = start_worker(here, project)
        assert "six-hourly" in project.schedules()
        w.close()                                   # the worker stops
        project.write_module("beat", '''
            from tasks import app, record
            app.add_periodic_task(1.0, record.s("tick"), name="tick")
        ''')
        start_worker(here, project)
        # six_hourly and its schedule are gone from beat.py; the row lingers and would
        # queue an unknown task every six hours.
        assert set(project.schedules()) == {"tick"}

    def test_a_worker_without_the_schedule_module_leaves_its_schedules(self, project,
                                                                       here):
        project.write_module("beat", '''
            from litequeue import crontab
            from tasks import app, record
            app.add_periodic_task(crontab(minute=0, hour=9), record.s("morning"),
                                  name="morning")
        ''')
        start_worker(here, project)
        morning = project.schedules()
        assert set(morning) == {"morning"}
        # A second pool for other work, e.g. `worker jobs.sqlite -A tasks -Q mail`, while
        # the first runs.
        _, sup = start_worker(here, project, modules=("tasks",), queues=["mail"])
        assert sup.periodic == {} and sup.queues == ["mail"]
        assert project.schedules() == morning

    def test_catch_up_policies_after_downtime(self, project, here):
        """Three 6-hour schedules, one per catch-up policy, synced when a worker starts;
        it stops, and the next starts a day and a half later (an injected clock): "once"
        queues the latest missed fire, "all" every missed one, "none" nothing (the latest
        is half an hour late). The cursors are persisted: a restart fires none again."""
        period = 6 * 3600.0
        project.write_module("beat", f'''
            from tasks import app, record
            for policy in ("once", "all", "none"):
                app.add_periodic_task({period}, record.s(policy), name=policy,
                                      catch_up=policy)
        ''')
        policies = ("once", "all", "none")
        before = time.time()
        w, _ = start_worker(here, project)
        after = time.time()

        def cursors():
            return {name: (row["last_fire"], row["next_fire"])
                    for name, row in project.schedules().items()}
        synced = cursors()
        # New, they start at the sync, and fire next at the first multiple of 6 h after it.
        (start, first), = set(synced.values())
        assert set(synced) == set(policies) and before <= start <= after
        assert first == (start // period + 1) * period
        w.close()                                   # the worker stops
        # Five fire times pass while no worker runs; the next starts half an hour after
        # the latest. Its start keeps the cursors (the definitions are unchanged).
        latest = first + 4 * period
        now = latest + 1800
        w, sup = start_worker(here, project)
        assert cursors() == synced
        sup.scheduler.step(now)
        assert cursors() == dict.fromkeys(policies, (latest, latest + period))
        expected = {"once": [f"once@{iso(latest)}"],
                    "all": [f"all@{iso(latest - k * period)}" for k in range(4, -1, -1)],
                    "none": []}
        for policy, ids in expected.items():
            assert fires_by(project, policy) == sorted(ids), policy
        everything = expected["once"] + expected["all"]
        assert w.work() == len(everything)
        assert all(project.state(i) == SUCCESS for i in everything)
        assert {i: project.ledger()[i] for i in everything} == dict.fromkeys(everything, 1)

        # A restart fires none of them again: the last fire is persisted.
        w.close()
        w, sup = start_worker(here, project)
        for t in (now, latest + period - 1):
            sup.scheduler.step(t)
        assert w.work() == 0
        for policy, ids in expected.items():
            assert fires_by(project, policy) == sorted(ids), policy
        assert cursors() == dict.fromkeys(policies, (latest, latest + period))

    @pytest.mark.worker
    @pytest.mark.slow
    def test_exactly_one_fire_over_two_supervisors(self, project, workers):
        """Two supervisors share the file with two 1-second schedules (catch-up "once", the
        default, and "all") for 22 s, and one of them restarts half way: every fire time
        is queued once and runs once, and consecutive fire times are 1 s apart."""
        project.write_module("beat", '''
            from tasks import app, record
            app.add_periodic_task(1.0, record.s("once"), name="tick-once")
            app.add_periodic_task(1.0, record.s("all"), name="tick-all", catch_up="all")
        ''')
        schedules = ("tick-once", "tick-all")
        modules = ("tasks", "beat")
        a = workers.start(project, app=modules, concurrency=1, loglevel="WARNING", ready=False)
        b = workers.start(project, app=modules, concurrency=2, loglevel="WARNING", ready=False)
        a.wait_ready()
        b.wait_ready()

        def fire_times(schedule):
            return sorted(fire_time(i) for i in fires_of(project.db, schedule))
        first = max(wait_until(lambda: fire_times(s), 10, f"the first {s}")[0]
                    for s in schedules)
        window = 22
        wait_until(lambda: fire_times("tick-once")[-1] >= first + window // 2, window,
                   "half the window")
        b.signal(signal.SIGTERM)
        assert b.wait(20) == 0
        workers.start(project, app=modules, concurrency=2, loglevel="WARNING")
        last = first + window
        wait_until(lambda: min(fire_times(s)[-1] for s in schedules) >= last, window + 10,
                   "the whole window")
        for schedule in schedules:
            def in_window():
                return {i: row for i, row in fires_of(project.db, schedule).items()
                        if first <= fire_time(i) <= last}
            wait_until(lambda: all(state == SUCCESS for state, _ in in_window().values()), 20,
                       f"every {schedule} fire in the window to run")
            fires = in_window()
            times = collections.Counter(fire_time(i) for i in fires)
            expected = [first + k for k in range(window + 1)]
            assert sorted(times) == expected, \
                f"{schedule}: missing fire times {sorted(set(expected) - set(times))}"
            assert set(times.values()) == {1}, schedule        # one task per fire time
            runs = project.ledger()
            assert {i: runs[i] for i in fires} == dict.fromkeys(fires, 1), schedule
            late = max(created - fire_time(i) for i, (_, created) in fires.items())
            print(f"{schedule}: latest fire queued {late * 1000:.1f} ms after its time")
        assert a.proc.poll() is None
