"""The supervisor's scheduler: ETAs, expiry and periodic tasks with real supervisors.
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


class TestScheduler:
    """ETA, expiry and periodic tasks with real worker supervisors."""

    @pytest.mark.worker
    def test_countdown_runs_after_its_eta_and_not_before(self, project, workers):
        workers.start(project, concurrency=1)
        r = project.app.tasks["tasks.stamp"].apply_async(["countdown"], countdown=1.5)
        (eta,), = sql(project.db, "SELECT eta FROM tasks WHERE id = ?", r.id)
        # Until shortly before its ETA the state reads SCHEDULED and nothing has run.
        seen = collections.Counter()
        while time.time() < eta - 0.15:
            seen[r.state] += 1
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

    @pytest.mark.worker
    def test_eta_aware_naive_in_the_app_zone_and_in_the_past(self, project, workers):
        workers.start(project, concurrency=1)
        shanghai_zone = zoneinfo.ZoneInfo("Asia/Shanghai")
        shanghai = LiteQueue(project.db, timezone="Asia/Shanghai")
        aware = dt.datetime.now(zoneinfo.ZoneInfo("America/New_York")) + \
            dt.timedelta(seconds=1.5)
        naive = dt.datetime.now(shanghai_zone).replace(tzinfo=None) + dt.timedelta(seconds=1.5)
        r_aware = project.app.tasks["tasks.stamp"].apply_async(["aware"], eta=aware)
        r_naive = shanghai.send_task("tasks.stamp", ["naive"], eta=naive)
        sent = time.time()
        r_past = shanghai.send_task("tasks.stamp", ["past"],
                                    eta=dt.datetime.now(shanghai_zone).replace(tzinfo=None)
                                    - dt.timedelta(hours=1))
        assert r_aware.state == r_naive.state == SCHEDULED
        # The past ETA runs at once, while the others wait.
        assert r_past.get(timeout=10) - sent < 1.0
        assert r_aware.state == r_naive.state == SCHEDULED
        for r, due in [(r_aware, aware.timestamp()),
                       (r_naive, naive.replace(tzinfo=shanghai_zone).timestamp())]:
            started = r.get(timeout=10)
            assert due <= started < due + 0.5, f"started {started - due:+.3f} s from its ETA"

    def test_expired_tasks_never_run(self, project, here):
        stamp = project.app.tasks["tasks.stamp"]
        # No worker yet: one expires while it waits, one while it is scheduled.
        waiting = stamp.apply_async(["waiting"], expires=1.0)
        scheduled = stamp.apply_async(["scheduled"], countdown=0.5, expires=1.0)
        wait_until(lambda: waiting.state == scheduled.state == EXPIRED, 10,
                   lambda: f"both to read EXPIRED ({waiting.state}, {scheduled.state})")
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
            assert r.state == EXPIRED
            with pytest.raises(TaskRevoked, match="expired"):
                r.get(timeout=5)
            assert r.get(timeout=5, propagate=False) is None
            assert project.row(r.id)["result"] is None
        assert [p.name for p in project.marks.glob("stamp.*")] == ["stamp.later"]

    @pytest.mark.worker
    def test_definitions_are_synced_when_a_worker_starts_and_fire(self, project, workers):
        project.write_module("beat", BEAT_SOURCE)
        before = time.time()
        workers.start(project, app=("tasks", "beat"), concurrency=1)
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

        # The 1-second schedule fires on whole seconds, each fire once, named by its time.
        def done():
            return sorted(i for i, (state, _) in fires_of(project.db, "tick").items()
                          if state == SUCCESS)
        ticks = wait_until(lambda: len(done()) >= 2 and done(), 10, "two ticks")
        times = [fire_time(t) for t in ticks]
        assert all(t == int(t) and t > before for t in times)
        assert times[1] - times[0] == 1.0
        assert all(project.ledger()[t] == 1 for t in ticks)

    @pytest.mark.worker
    def test_schedules_removed_from_the_code_are_deleted_on_the_next_start(self, project,
                                                                           workers):
        project.write_module("beat", BEAT_SOURCE)
        w = workers.start(project, app=("tasks", "beat"), concurrency=1)
        assert set(project.schedules()) == {"tick", "morning", "six-hourly"}
        w.signal(signal.SIGTERM)
        assert w.wait(20) == 0
        # A schedule of a module this worker does not run.
        sql(project.db, "INSERT INTO schedules (name, task, module, schedule, tz, payload, "
            "queue, next_fire, updated_at) VALUES ('other', 'elsewhere.job', 'elsewhere', "
            "'cron:0 0 1 1 *', 'UTC', ?, 'default', ?, 0)", pack({}), time.time() + 86400 * 30)
        last_tick = project.schedules()["tick"]["last_fire"]
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
        workers.start(project, app=("tasks", "beat"), concurrency=1)
        rows = project.schedules()
        assert set(rows) == {"tick", "six-hourly", "other"}
        assert rows["tick"]["last_fire"] >= last_tick        # unchanged: keeps its history

    @pytest.mark.worker
    def test_a_module_s_last_periodic_task_removed_is_deleted(self, project, workers):
        project.write_module("beat", BEAT_SOURCE)
        w = workers.start(project, app=("tasks", "beat"), concurrency=1)
        assert "six-hourly" in project.schedules()
        w.signal(signal.SIGTERM)
        assert w.wait(20) == 0
        project.write_module("beat", '''
            from tasks import app, record
            app.add_periodic_task(1.0, record.s("tick"), name="tick")
        ''')
        workers.start(project, app=("tasks", "beat"), concurrency=1)
        # six_hourly and its schedule are gone from beat.py; the row lingers and would
        # queue an unknown task every six hours.
        assert set(project.schedules()) == {"tick"}

    @pytest.mark.worker
    def test_a_worker_without_the_schedule_module_leaves_its_schedules(self, project,
                                                                       workers):
        project.write_module("beat", '''
            from litequeue import crontab
            from tasks import app, record
            app.add_periodic_task(crontab(minute=0, hour=9), record.s("morning"),
                                  name="morning")
        ''')
        workers.start(project, app=("tasks", "beat"), concurrency=1)
        assert set(project.schedules()) == {"morning"}
        # A second pool for other work, e.g. `worker jobs.sqlite -A tasks -Q mail`.
        workers.start(project, "-Q", "mail", app=("tasks",), concurrency=1)
        assert set(project.schedules()) == {"morning"}

    @pytest.mark.worker
    def test_catch_up_policies_after_downtime(self, project, workers):
        now = time.time()
        # An interval long enough that no fire falls due during the test, with the latest
        # missed one well over 10 s late (choose the length that puts now mid-period).
        period = next(p for p in (7 * 86400, 8 * 86400, 9 * 86400)
                      if 20 < now % p < p - 300)
        project.write_module("beat", f'''
            from tasks import app, record
            for policy in ("once", "all", "none"):
                app.add_periodic_task({period}, record.s(policy), name=policy,
                                      catch_up=policy)
        ''')
        w = workers.start(project, app=("tasks", "beat"), concurrency=1)
        w.signal(signal.SIGTERM)
        assert w.wait(20) == 0
        # Downtime: the schedules last fired five periods before the latest fire time.
        latest = now // period * period
        sql(project.db, "UPDATE schedules SET last_fire = ?, next_fire = ?",
            latest - 5 * period, latest - 4 * period)
        w = workers.start(project, app=("tasks", "beat"), concurrency=1)

        def cursors():
            return {name: row["last_fire"] for name, row in project.schedules().items()}
        wait_until(lambda: cursors() == dict.fromkeys(("once", "all", "none"), latest), 10,
                   lambda: f"every schedule to have handled {latest} ({cursors()})")
        assert {name: row["next_fire"] for name, row in project.schedules().items()} == \
            dict.fromkeys(("once", "all", "none"), latest + period)

        def iso(t):
            return dt.datetime.fromtimestamp(t, UTC).isoformat()
        expected = {"once": [f"once@{iso(latest)}"],
                    "all": [f"all@{iso(latest - k * period)}" for k in range(4, -1, -1)],
                    "none": []}
        for policy, ids in expected.items():
            assert sorted(fires_of(project.db, policy)) == sorted(ids), policy
        everything = expected["once"] + expected["all"]
        wait_until(lambda: all(project.state(i) == SUCCESS for i in everything), 20,
                   "the caught-up fires to run")
        assert {i: project.ledger()[i] for i in everything} == dict.fromkeys(everything, 1)

        # A restart fires none of them again: the last fire is persisted.
        w.signal(signal.SIGTERM)
        assert w.wait(20) == 0
        workers.start(project, app=("tasks", "beat"), concurrency=1)
        # A short countdown task runs only after a scheduler pass (which also fires).
        assert project.app.tasks["tasks.stamp"].apply_async(["pass"], countdown=0.2) \
            .get(timeout=10) > 0
        for policy, ids in expected.items():
            assert sorted(fires_of(project.db, policy)) == sorted(ids), policy
        assert cursors() == dict.fromkeys(("once", "all", "none"), latest)

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
