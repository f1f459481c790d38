"""Time: crontab, intervals, DST and the catch-up planner, with injected instants; the
machine's zone as the default.
"""

import collections
import datetime as dt
import json
import os
import sys
import zoneinfo

import pytest

import litequeue
from litequeue import ConfigurationError, LiteQueue, crontab

from .helpers import UTC, run, sql, utc_ts, wait_until, worker_cmd

pytestmark = pytest.mark.timeout(120)


def fires_between(schedule, start, end):
    """Every fire of schedule in (start, end], by repeated next_after: the clock is
    injected, nothing sleeps."""
    fires, t = [], start
    while True:
        t = schedule.next_after(t)
        if t > end:
            return fires
        fires.append(t)


def daily_fires_around(tz, day, wall):
    """A daily crontab at the wall time (hour, minute) in tz, the same wall time on the days
    before and after `day`, and every fire from an hour before the first to the last."""
    zone = zoneinfo.ZoneInfo(tz)
    daily = crontab(minute=wall[1], hour=wall[0], tz=tz)
    midnight, _ = local_day(tz, day)
    before = dt.datetime.combine(midnight.date() - dt.timedelta(days=1), dt.time(*wall), zone)
    after = dt.datetime.combine(midnight.date() + dt.timedelta(days=1), dt.time(*wall), zone)
    return daily, before, after, fires_between(daily, before - dt.timedelta(hours=1), after)


def local_day(zone_name, day):
    """(local midnight of day, local midnight of the next day) as aware datetimes."""
    zone = zoneinfo.ZoneInfo(zone_name)
    date = dt.date(*day)
    return (dt.datetime.combine(date, dt.time(), zone),
            dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), zone))


def wall_exists(zone_name, naive):
    """False if spring-forward skips this wall time in the zone."""
    zone = zoneinfo.ZoneInfo(zone_name)
    return naive.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) \
        == naive


def plan_row(schedule, catch_up, last_fire, tz="UTC", name="job"):
    """A schedules row as the scheduler reads it (_SQL_DUE_SCHEDULES)."""
    return {"name": name, "task": "tasks.record", "schedule": schedule, "tz": tz,
            "payload": b"", "queue": "default", "priority": 0, "catch_up": catch_up,
            "last_fire": last_fire}


class TestScheduling:
    """crontab, intervals, the DST policy and the catch-up planner, with injected instants."""

    # -- DST: spring-forward, fall-back, hourly jobs --------------------------------------

    @pytest.mark.parametrize("tz, day, wall, expected", [
        ("America/New_York", (2026, 3, 8), (2, 30), "2026-03-08T03:00:00-04:00"),
        ("Europe/London", (2026, 3, 29), (1, 30), "2026-03-29T02:00:00+01:00"),
        ("Australia/Lord_Howe", (2026, 10, 4), (2, 15), "2026-10-04T02:30:00+11:00"),
    ], ids=["new-york", "london", "lord-howe"])
    def test_wall_time_skipped_by_spring_forward_fires_once_after_the_gap(
            self, tz, day, wall, expected):
        zone = zoneinfo.ZoneInfo(tz)
        assert not wall_exists(tz, dt.datetime(*day, *wall))        # the premise
        daily, before, after, fires = daily_fires_around(tz, day, wall)
        assert [f.isoformat() for f in fires] == \
            [before.isoformat(), expected, after.isoformat()]
        # The late fire is the first instant after the gap, in the schedule's zone.
        gap_end = fires[1]
        assert gap_end.tzinfo == zone
        assert gap_end.astimezone(UTC) == dt.datetime.fromisoformat(expected).astimezone(UTC)
        assert dt.datetime.fromtimestamp(gap_end.timestamp() - 1, zone).utcoffset() != \
            gap_end.utcoffset()
        # Asked a second before the gap ends (UTC arithmetic: wall arithmetic would land
        # in the gap), the answer is the same.
        assert daily.next_after(gap_end.astimezone(UTC) - dt.timedelta(seconds=1)) == gap_end
        assert daily.next_after(gap_end) == after

    def test_new_york_spring_forward_fire_is_0700_utc(self):
        daily = crontab(minute=30, hour=2, tz="America/New_York")
        fire = daily.next_after(dt.datetime(2026, 3, 8, 0, 0, tzinfo=UTC))
        assert fire.astimezone(UTC) == dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC)

    @pytest.mark.parametrize("tz, day, wall, expected", [
        ("America/New_York", (2026, 11, 1), (1, 30), "2026-11-01T01:30:00-04:00"),
        ("Europe/London", (2026, 10, 25), (1, 30), "2026-10-25T01:30:00+01:00"),
        ("Australia/Lord_Howe", (2026, 4, 5), (1, 45), "2026-04-05T01:45:00+11:00"),
    ], ids=["new-york", "london", "lord-howe"])
    def test_wall_time_repeated_by_fall_back_fires_once_at_its_first_occurrence(
            self, tz, day, wall, expected):
        zone = zoneinfo.ZoneInfo(tz)
        naive = dt.datetime(*day, *wall)
        first = naive.replace(tzinfo=zone, fold=0)
        second = naive.replace(tzinfo=zone, fold=1)
        assert first.utcoffset() != second.utcoffset()               # the premise
        daily, before, after, fires = daily_fires_around(tz, day, wall)
        assert [f.isoformat() for f in fires] == \
            [before.isoformat(), expected, after.isoformat()]
        assert fires[1].astimezone(UTC) == first.astimezone(UTC)
        # Between the two occurrences, and at the second, the next fire is the next day's.
        assert daily.next_after(first) == after
        assert daily.next_after(second.astimezone(UTC) - dt.timedelta(seconds=1)) == after

    @pytest.mark.parametrize("tz, day, hours", [
        ("America/New_York", (2026, 3, 8), 23),
        ("America/New_York", (2026, 11, 1), 25),
        ("Europe/London", (2026, 3, 29), 23),
        ("Europe/London", (2026, 10, 25), 25),
    ], ids=["new-york-spring", "new-york-fall", "london-spring", "london-fall"])
    def test_hourly_job_fires_every_real_hour_through_dst(self, tz, day, hours):
        hourly = crontab(minute=0, tz=tz)
        midnight, next_midnight = local_day(tz, day)
        fires = fires_between(hourly, midnight - dt.timedelta(microseconds=1),
                              next_midnight - dt.timedelta(microseconds=1))
        start = midnight.astimezone(UTC)
        # Every real hour of the local day, none skipped, none doubled.
        assert [f.astimezone(UTC) for f in fires] == \
            [start + dt.timedelta(hours=k) for k in range(hours)]
        gaps = {b.timestamp() - a.timestamp() for a, b in zip(fires, fires[1:])}
        assert gaps == {3600.0}
        # The wall clock shows the change: one hour missing, or one shown twice.
        walls = collections.Counter(f.hour for f in fires)
        if hours == 23:
            assert len(walls) == 23 and set(walls.values()) == {1}
        else:
            (twice,) = [h for h, n in walls.items() if n == 2]
            offsets = {f.utcoffset() for f in fires if f.hour == twice}
            assert len(offsets) == 2

    @pytest.mark.parametrize("day, missing_hour", [((2026, 10, 4), 2), ((2026, 4, 5), None)],
                             ids=["spring-forward", "fall-back"])
    def test_hourly_job_in_lord_howe(self, day, missing_hour):
        """Lord Howe shifts by 30 minutes, so no hourly job can fire at :00 every 3600 s.
        The policy (crontab's docstring: hour '*' follows real time): each wall hour whose
        :00 exists fires exactly once, fires never coincide, and the interval across a
        change is 90 minutes instead of 60."""
        tz = "Australia/Lord_Howe"
        hourly = crontab(minute=0, tz=tz)
        midnight, next_midnight = local_day(tz, day)
        fires = fires_between(hourly, midnight - dt.timedelta(microseconds=1),
                              next_midnight - dt.timedelta(microseconds=1))
        existing = [h for h in range(24) if wall_exists(tz, dt.datetime(*day, h))]
        assert [h for h in range(24) if h not in existing] == \
            ([] if missing_hour is None else [missing_hour])
        assert [f.hour for f in fires] == existing                     # each exactly once
        assert all(f.minute == 0 for f in fires)
        instants = [f.timestamp() for f in fires]
        assert instants == sorted(set(instants))                       # never coincide
        gaps = collections.Counter(b - a for a, b in zip(instants, instants[1:]))
        assert set(gaps) <= {3600.0, 5400.0} and gaps[5400.0] == 1, gaps
        assert all(1800 <= g <= 5400 for g in gaps)

    @pytest.mark.parametrize("tz, day, minute", [
        ("America/New_York", (2026, 11, 1), 30),
        ("Australia/Lord_Howe", (2026, 4, 5), 45),
    ], ids=["new-york", "lord-howe"])
    def test_every_hour_schedule_fires_both_occurrences_of_a_repeated_minute(
            self, tz, day, minute):
        """hour='*' follows real time: a repeated wall minute is a real instant twice."""
        zone = zoneinfo.ZoneInfo(tz)
        naive = dt.datetime(*day, 1, minute)
        first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
        schedule = crontab(minute=minute, tz=tz)
        assert schedule.next_after(first - dt.timedelta(seconds=1)).astimezone(UTC) == \
            first.astimezone(UTC)
        assert schedule.next_after(first).astimezone(UTC) == second.astimezone(UTC)

    def test_zone_without_dst_fires_daily_every_86400_seconds(self):
        tz = "Asia/Shanghai"
        daily = crontab(minute=30, hour=2, tz=tz)
        # The whole of 2026, which holds every US, UK and Lord Howe change of that year.
        start = dt.datetime(2026, 1, 1, tzinfo=zoneinfo.ZoneInfo(tz))
        fires = fires_between(daily, start, start + dt.timedelta(days=365))
        assert len(fires) == 365
        assert {b.timestamp() - a.timestamp() for a, b in zip(fires, fires[1:])} == {86400.0}
        assert {f.isoformat()[10:] for f in fires} == {"T02:30:00+08:00"}

    # -- next_after's contract -------------------------------------------------------------

    def test_next_after_is_aware_in_the_schedule_zone_and_strictly_after(self):
        tz = "Asia/Shanghai"
        at_nine = crontab(minute=0, hour=9, tz=tz)
        fire = at_nine.next_after(dt.datetime(2026, 1, 1, 0, 0, tzinfo=UTC))
        assert fire.isoformat() == "2026-01-01T09:00:00+08:00"
        assert isinstance(fire.tzinfo, zoneinfo.ZoneInfo) and fire.tzinfo.key == tz
        # Exactly at a fire time: the next one. A microsecond before: that one.
        assert at_nine.next_after(fire).isoformat() == "2026-01-02T09:00:00+08:00"
        assert at_nine.next_after(fire - dt.timedelta(microseconds=1)) == fire
        # dt in any zone means that instant.
        ny = dt.datetime(2025, 12, 31, 19, 59, tzinfo=zoneinfo.ZoneInfo("America/New_York"))
        assert at_nine.next_after(ny) == fire
        # Without a zone of its own, a crontab reads in the zone it is given, else UTC.
        hourly = crontab(minute=0)
        assert hourly.next_after(dt.datetime(2026, 1, 1, 1, 0, tzinfo=UTC)).isoformat() == \
            "2026-01-01T02:00:00+00:00"
        kolkata = zoneinfo.ZoneInfo("Asia/Kolkata")
        assert hourly.next_after(dt.datetime(2026, 1, 1, 1, 0, tzinfo=UTC), kolkata) \
            .isoformat() == "2026-01-01T07:00:00+05:30"
        with pytest.raises(ConfigurationError, match="aware datetime"):
            at_nine.next_after(dt.datetime(2026, 1, 1))

    # -- crontab syntax --------------------------------------------------------------------

    @pytest.mark.parametrize("fields, attribute, expected", [
        ({}, "minutes", list(range(60))),
        ({"minute": "*/15"}, "minutes", [0, 15, 30, 45]),
        ({"minute": "5,20,35"}, "minutes", [5, 20, 35]),
        ({"minute": [0, 30]}, "minutes", [0, 30]),
        ({"minute": 7}, "minutes", [7]),
        ({"hour": "1-5"}, "hours", [1, 2, 3, 4, 5]),
        ({"hour": "9-17/4"}, "hours", [9, 13, 17]),
        ({"hour": "0,12-14"}, "hours", [0, 12, 13, 14]),
        ({"day_of_week": "mon-fri"}, "days_of_week", {1, 2, 3, 4, 5}),
        ({"day_of_week": "sat,Sun"}, "days_of_week", {0, 6}),
        ({"day_of_week": 7}, "days_of_week", {0}),
        ({"day_of_month": "1,15"}, "days_of_month", {1, 15}),
        ({"month_of_year": "jan-mar"}, "months", {1, 2, 3}),
        ({"month_of_year": "jul,DEC"}, "months", {7, 12}),
        ({"day_of_week": "sunday"}, "days_of_week", {0}),                 # Celery's guide
        ({"day_of_week": "Monday-Wednesday,saturday"}, "days_of_week", {1, 2, 3, 6}),
        ({"month_of_year": "january,September"}, "months", {1, 9}),
    ], ids=["star", "step", "list", "python-list", "int", "range", "range-step", "mixed",
            "mon-fri", "day-names", "sunday-7", "days-of-month", "month-range", "month-names",
            "full-day-name", "full-day-range", "full-month-names"])
    def test_crontab_field_syntax(self, fields, attribute, expected):
        value = getattr(crontab(**fields), attribute)
        assert (sorted(value) if isinstance(expected, list) else set(value)) == expected

    def test_crontab_from_string(self):
        every5 = crontab.from_string("*/5 * * * *", tz="Europe/London")
        assert every5.minutes == list(range(0, 60, 5)) and every5.hours == list(range(24))
        assert every5 == crontab(minute="*/5", tz="Europe/London")
        start = dt.datetime(2026, 6, 1, 10, 2, tzinfo=UTC)
        assert [f.strftime("%H:%M%z") for f in fires_between(every5, start,
                start + dt.timedelta(minutes=15))] == ["11:05+0100", "11:10+0100", "11:15+0100"]
        # cron's field order: minute hour day_of_month month_of_year day_of_week.
        c = crontab.from_string("30 2 1 jan,jul mon-fri")
        assert (c.minutes, c.hours, c.days_of_month, c.months, c.days_of_week) == \
            ([30], [2], {1}, {1, 7}, {1, 2, 3, 4, 5})
        # Day of month and day of week must both match (Celery's rule): Friday the 13th.
        friday13 = crontab.from_string("0 0 13 * fri")
        fires = fires_between(friday13, dt.datetime(2026, 1, 1, tzinfo=UTC),
                              dt.datetime(2027, 1, 1, tzinfo=UTC))
        assert [f.date().isoformat() for f in fires] == ["2026-02-13", "2026-03-13",
                                                          "2026-11-13"]

    @pytest.mark.parametrize("make, field, value", [
        (lambda: crontab(minute=60), "minute", "60"),
        (lambda: crontab(hour="25"), "hour", "25"),
        (lambda: crontab(day_of_week="funday"), "day_of_week", "funday"),
        (lambda: crontab(minute="*/0"), "minute", "*/0"),
        (lambda: crontab(hour="5-1"), "hour", "5-1"),
        (lambda: crontab(day_of_month=0), "day_of_month", "0"),
        (lambda: crontab(month_of_year="smarch"), "month_of_year", "smarch"),
        (lambda: crontab(minute="1,,2"), "minute", "1,,2"),
        (lambda: crontab(minute=""), "minute", "''"),
        (lambda: crontab.from_string("0 25 * * *"), "hour", "25"),
        (lambda: crontab.from_string("* * * *"), "5 fields", "* * * *"),
        (lambda: crontab.from_string("0 0 * * * *"), "5 fields", "0 0 * * * *"),
        (lambda: crontab(day_of_month=31, month_of_year=2), "day_of_month", "31"),
        (lambda: crontab.from_string("0 0 30,31 feb *"), "month_of_year", "feb"),
    ], ids=["minute-60", "hour-25", "funday", "step-0", "reversed-range", "day-0",
            "month-name", "empty-list-item", "empty", "string-hour-25", "4-fields",
            "6-fields", "feb-31", "feb-30-31"])
    def test_invalid_cron_fields_name_the_field_and_the_value(self, make, field, value):
        with pytest.raises(ConfigurationError) as info:
            make()
        assert field in str(info.value) and value in str(info.value), str(info.value)

    def test_unknown_time_zone_is_refused_and_nothing_is_written(self, tmp_path):
        db = tmp_path / "tz.sqlite"
        with pytest.raises(ConfigurationError, match="unknown time zone 'Mars/Olympus_Mons'"):
            crontab(minute=0, tz="Mars/Olympus_Mons")
        with pytest.raises(ConfigurationError, match="unknown time zone 'Mars/Olympus_Mons'"):
            LiteQueue(str(db), timezone="Mars/Olympus_Mons")
        with pytest.raises(ConfigurationError, match="unknown time zone 'EST5EDT/Nowhere'"):
            crontab.from_string("0 0 * * *", tz="EST5EDT/Nowhere")
        app = LiteQueue(str(db))
        with pytest.raises(ConfigurationError, match="never occurs"):
            app.add_periodic_task(crontab(day_of_month=31, month_of_year="apr"), "tasks.add")
        with pytest.raises(ConfigurationError, match="minute"):
            app.periodic_task(crontab(minute=99))
        assert app.periodic == {} and app.tasks == {}
        assert not db.exists()

    # -- intervals ---------------------------------------------------------------------------

    def test_intervals_fire_at_multiples_of_their_length(self):
        for schedule, seconds in [(litequeue._as_schedule(dt.timedelta(minutes=5)), 300),
                                  (litequeue._as_schedule(2), 2),
                                  (litequeue._as_schedule(0.5), 0.5)]:
            start = dt.datetime(2026, 3, 8, 6, 58, 1, 250000, tzinfo=UTC)
            fires = fires_between(schedule, start, start + dt.timedelta(seconds=seconds * 20))
            assert len(fires) == 20
            assert all(f.timestamp() % seconds == 0 for f in fires)
            assert {round(b.timestamp() - a.timestamp(), 6)
                    for a, b in zip(fires, fires[1:])} == {seconds}
            # Every process computes the same fire times, whatever its clock's phase.
            assert schedule.next_after(fires[0] - dt.timedelta(microseconds=1)) == fires[0]

    @pytest.mark.parametrize("seconds", [0, -1, "60", True, None, dt.timedelta(0)],
                             ids=["zero", "negative", "text", "bool", "none", "zero-delta"])
    def test_invalid_intervals(self, tmp_path, seconds):
        app = LiteQueue(str(tmp_path / "iv.sqlite"))
        with pytest.raises(ConfigurationError, match="interval"):
            app.add_periodic_task(seconds, "tasks.add")
        assert app.periodic == {} and not (tmp_path / "iv.sqlite").exists()

    @pytest.mark.parametrize("seconds", [0.1, 1.1, 7 / 3], ids=["0.1", "1.1", "7/3"])
    def test_fractional_interval_next_after_is_strictly_after(self, seconds):
        schedule = litequeue._as_schedule(seconds)
        t = dt.datetime(2026, 5, 1, tzinfo=UTC)
        for _ in range(1000):
            fire = schedule.next_after(t)
            assert fire > t, f"next_after({t.isoformat()}) returned {fire.isoformat()}"
            t = fire

    # -- how schedules are stored ---------------------------------------------------------

    @pytest.mark.parametrize("schedule", [
        crontab(minute="*/15", hour="9-17", day_of_week="mon-fri", tz="Asia/Shanghai"),
        crontab(minute=[0, 30], day_of_week=["mon", "fri"]),
        crontab(minute=5, month_of_year="jan,jul"),
        lambda: crontab(minute="0, 30"),
        lambda: crontab(minute=0, day_of_week=[1, "fri"]),
    ], ids=["fields", "lists", "int-and-names", "spaces-in-a-list", "numbers-and-names"])
    def test_crontab_survives_the_schedules_table(self, schedule):
        if callable(schedule):
            schedule = schedule()
        text = litequeue._schedule_to_text(schedule)
        back = litequeue._schedule_from_text(text, schedule.tz)
        assert back == schedule
        start = dt.datetime(2026, 3, 1, tzinfo=UTC)
        end = start + dt.timedelta(days=3)
        assert fires_between(back, start, end) == fires_between(schedule, start, end)

    def test_fire_id_is_the_same_in_every_process_and_zone(self):
        instant = dt.datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
        ny = instant.astimezone(zoneinfo.ZoneInfo("America/New_York"))
        assert litequeue._fire_id("nightly", ny) == litequeue._fire_id("nightly", instant) \
            == "nightly@2026-11-01T06:00:00+00:00"

    # -- catch-up planning (_plan_fires with an injected now) ---------------------------

    @pytest.mark.parametrize("catch_up, late, expected_hours", [
        ("once", 3, [17]),
        ("once", 1800, [17]),
        ("all", 3, [13, 14, 15, 16, 17]),
        ("all", 1800, [13, 14, 15, 16, 17]),
        ("none", 3, [17]),
        ("none", 1800, []),
    ], ids=["once", "once-very-late", "all", "all-very-late", "none-on-time",
            "none-late"])
    def test_catch_up_policies(self, catch_up, late, expected_hours):
        """An hourly job last fired at 12:00; no worker ran until 17:00 + late."""
        last = utc_ts(2026, 6, 1, 12, 0)
        now = utc_ts(2026, 6, 1, 17, 0) + late
        fires, last_fire, next_fire = litequeue._plan_fires(
            plan_row("cron:0 * * * *", catch_up, last), now)
        assert fires == [(f"job@2026-06-01T{h}:00:00+00:00", utc_ts(2026, 6, 1, h, 0))
                         for h in expected_hours]
        # Whatever was queued, the missed times are handled and the cursor moves on.
        assert last_fire == utc_ts(2026, 6, 1, 17, 0)
        assert next_fire == utc_ts(2026, 6, 1, 18, 0)

    @pytest.mark.parametrize("late, queued", [(0.0, True), (9.9, True), (10.1, False)])
    def test_catch_up_none_runs_only_a_fire_less_than_10_s_late(self, late, queued):
        fire = utc_ts(2026, 6, 1, 12, 0, 0)
        fires, last_fire, next_fire = litequeue._plan_fires(
            plan_row("every:60.0", "none", fire - 60), fire + late)
        assert fires == ([("job@2026-06-01T12:00:00+00:00", fire)] if queued else [])
        assert (last_fire, next_fire) == (fire, fire + 60)

    def test_catch_up_all_across_fall_back_fires_every_real_hour(self):
        ny = zoneinfo.ZoneInfo("America/New_York")
        last = dt.datetime(2026, 11, 1, 0, 0, tzinfo=ny).timestamp()        # 04:00Z
        now = dt.datetime(2026, 11, 1, 4, 0, 1, tzinfo=ny).timestamp()      # 09:00:01Z
        fires, last_fire, next_fire = litequeue._plan_fires(
            plan_row("cron:0 * * * *", "all", last, tz="America/New_York"), now)
        assert [t for _, t in fires] == [last + 3600 * k for k in range(1, 6)]
        assert [task_id for task_id, _ in fires] == \
            [f"job@2026-11-01T0{h}:00:00+00:00" for h in range(5, 10)]
        assert (last_fire, next_fire) == (now - 1, now - 1 + 3600)

    def test_catch_up_all_across_spring_forward_and_daily_fall_back(self):
        ny = zoneinfo.ZoneInfo("America/New_York")

        def missed(schedule, since, until):
            fires, _, _ = litequeue._plan_fires(
                plan_row(schedule, "all", dt.datetime(*since, tzinfo=ny).timestamp(),
                         tz="America/New_York"),
                dt.datetime(*until, tzinfo=ny).timestamp())
            return [dt.datetime.fromtimestamp(t, ny).isoformat() for _, t in fires]
        # A daily 02:30 over the spring-forward weekend: one fire a day, 03:00 EDT on the 8th.
        assert missed("cron:30 2 * * *", (2026, 3, 6, 12), (2026, 3, 10, 12)) == [
            "2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00",
            "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]
        # A daily 01:30 over the fall-back weekend: the repeated 01:30 once.
        assert missed("cron:30 1 * * *", (2026, 10, 31, 12), (2026, 11, 2, 12)) == [
            "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]

    def test_catch_up_all_is_capped_and_never_fires_before_the_last_fire(self):
        last = utc_ts(2026, 6, 1, 0, 0)
        now = last + 3 * 86400 + 0.5                       # 3 days of a 1-s schedule
        fires, last_fire, next_fire = litequeue._plan_fires(plan_row("every:1.0", "all", last),
                                                            now)
        assert len(fires) == litequeue._CATCH_UP_MAX
        assert [t for _, t in fires] == [last + k for k in range(1, litequeue._CATCH_UP_MAX + 1)]
        assert (last_fire, next_fire) == (now - 0.5, now + 0.5)

    def test_a_schedule_never_fired_queues_nothing_before_now(self):
        now = utc_ts(2026, 6, 1, 12, 0, 30)
        for catch_up in ("once", "all", "none"):
            fires, last_fire, next_fire = litequeue._plan_fires(
                plan_row("cron:* * * * *", catch_up, None), now)
            assert fires == [] and last_fire == now and next_fire == now + 30

    def test_plan_sync(self):
        """A new schedule starts at the sync; an unchanged one keeps its last fire (so its
        catch-up policy applies to the downtime); a changed one starts again."""
        now = utc_ts(2026, 6, 1, 12, 0, 30)
        hourly = {"name": "job", "schedule": "cron:0 * * * *", "tz": "Europe/London"}
        assert litequeue._plan_sync(hourly, None, now) == (now, utc_ts(2026, 6, 1, 13, 0))
        last = utc_ts(2026, 6, 1, 9, 0)
        stored = ("cron:0 * * * *", "Europe/London", last)
        assert litequeue._plan_sync(hourly, stored, now) == (last, utc_ts(2026, 6, 1, 10, 0))
        for changed in [("cron:30 * * * *", "Europe/London", last),
                        ("cron:0 * * * *", "Asia/Shanghai", last),
                        ("cron:0 * * * *", "Europe/London", None)]:
            assert litequeue._plan_sync(hourly, changed, now) == \
                (now, utc_ts(2026, 6, 1, 13, 0))


ZONE_PROBE = '''
import datetime, json, sys
from litequeue import LiteQueue

db = sys.argv[1]
app = LiteQueue(db)
utc = LiteQueue(db, timezone="UTC")


@app.task(name="tasks.add")
def add(x, y):
    return x + y


@utc.task(name="tasks.add")
def add_utc(x, y):
    return x + y


eta = datetime.datetime(2030, 1, 1, 9, 0)
print(json.dumps({"zone": app.conf["timezone"], "utc_zone": utc.conf["timezone"],
                  "id": add.apply_async((1, 2), eta=eta).id,
                  "utc_id": add_utc.apply_async((1, 2), eta=eta).id}))
'''


def _localtime_is_utc():
    try:
        target = os.path.realpath("/etc/localtime")
    except OSError:
        return True
    if not os.path.exists("/etc/localtime"):
        return True
    return target.rsplit("zoneinfo/", 1)[-1] in ("UTC", "Etc/UTC", "Etc/UCT", "UCT",
                                                  "Universal", "Zulu", "Etc/Universal",
                                                  "Etc/Zulu")


@pytest.mark.worker
class TestLocalTimeZone:

    def test_default_zone_is_the_machine_s(self, tmp_path):
        db = tmp_path / "jobs.sqlite"
        env = dict(os.environ, TZ="Asia/Shanghai")
        done = run([sys.executable, "-c", ZONE_PROBE, str(db)], cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["zone"] == "Asia/Shanghai"
        assert sql(db, "SELECT eta FROM tasks WHERE id = ?", out["id"]) == \
            [(utc_ts(2030, 1, 1, 1, 0),)]
        # timezone="UTC" given explicitly wins over the machine's zone.
        assert out["utc_zone"] == "UTC"
        assert sql(db, "SELECT eta FROM tasks WHERE id = ?", out["utc_id"]) == \
            [(utc_ts(2030, 1, 1, 9, 0),)]

        if _localtime_is_utc():      # TZ unset: /etc/localtime (UTC here, or missing)
            env = {k: v for k, v in os.environ.items() if k != "TZ"}
            done = run([sys.executable, "-c", ZONE_PROBE, str(tmp_path / "utc.sqlite")],
                       cwd=tmp_path, env=env)
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["zone"] == "UTC"

    def test_worker_logs_its_zone_at_start(self, project, workers):
        w = workers.start(project, cmd=worker_cmd(project.db, "-A", "tasks", "-c", 1,
                                                  env={"TZ": "Asia/Shanghai"}))
        wait_until(lambda: "Asia/Shanghai" in w.log_text(), 5,
                   lambda: f"the zone in the worker log\n{w.log_text()}")
