"""Tests of litequeue, with real SQLite files, real worker processes and real signals.

Layout: one class per section of litequeue.py, in its order. The helpers are in
helpers.py, the fixtures in conftest.py, the task modules in tasks/.

Nothing here mocks SQLite or multiprocessing. Workers are started as subprocesses in
their own session (``start_new_session=True``), so teardown can kill the supervisor and
every child it spawned with one ``os.killpg``. Nothing waits a fixed time for a state:
``wait_until`` polls a condition against a deadline and fails saying what it waited for.
"""

import collections
import contextlib
import datetime as dt
import gc
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import stat
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import types
import uuid
import zoneinfo
from pathlib import Path

import apsw
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

import litequeue
from litequeue import (
    EXPIRED, FAILURE, PENDING, RETRY, REVOKED, SCHEDULED, STARTED, SUCCESS, UNKNOWN,
    ConfigurationError, CorruptDatabase, DuplicateTaskId, EagerResult, ForeignDatabase,
    GroupResult, LiteQueue, LitequeueError, MaxRetriesExceededError, RemoteError, Retry,
    SchemaTooNew, SerializationError, SoftTimeLimitExceeded, TaskNotFound, TaskRevoked,
    TimeLimitExceeded, UnknownTask, WorkerLostError, crontab, group,
)

from .helpers import (
    LITEQUEUE_PY, PLAIN_TASKS, UTC, CanvasProject, Folder, Project, _chromium, _suppress_lookup,
    alive, assert_canary, assert_one_line_error, create_db, files_in, fill_disk, fire_time,
    fires_of, group_members, insert_finished, insert_raw, insert_schedule, log_lines, lq,
    make_victim, most_in_a_second, msgpack_values, need_root, pack, page_click, parent_of,
    producer, python, run, same, sha256, sql, sql_write, stand_in_app, start_aio_worker,
    tables_rows, task_source, utc_ts, wait_until, worker_cmd,
)

pytestmark = pytest.mark.timeout(120)

# The supervisor logs this when the first SIGTERM/SIGINT starts a warm shutdown.
WARM_SHUTDOWN_LOG = "warm shutdown"


def envelope_problem(payload):
    """What is wrong with a payload as a task envelope, decoded independently of
    litequeue, or None if it is a valid envelope."""
    if not isinstance(payload, bytes):
        return f"payload is {type(payload).__name__}, not msgpack bytes"
    try:
        envelope = msgpack.unpackb(payload, raw=False, strict_map_key=False, timestamp=3)
    except Exception:
        return "payload is not valid msgpack"
    if not isinstance(envelope, dict):
        return "not a map"
    if not isinstance(envelope.get("args", []), list):
        return "'args' is not an array"
    kwargs = envelope.get("kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        return "'kwargs' is not a map with string keys"
    return None


def collect(strategy, max_examples):
    """Draw examples of a strategy with hypothesis (no I/O per example): tests that need
    a worker insert them all at once."""
    drawn = []

    @hsettings(max_examples=max_examples, deadline=None, database=None,
               suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(value):
        drawn.append(value)
    draw()
    return drawn


class TestSerialization:

    def test_envelope_round_trip(self):
        when = dt.datetime(2024, 3, 10, 2, 30, tzinfo=dt.timezone.utc)
        args = (1, -2**63, 2**64 - 1, 1.5, "ü", b"\x00\xff", None, True, [1, [2]], {"k": 1}, when)
        payload = litequeue._pack_envelope("t", args, {"x": (1, 2)})
        assert msgpack.unpackb(payload, timestamp=3)["args"][0] == 1
        got_args, got_kwargs = litequeue._unpack_envelope(payload)
        assert got_args == [1, -2**63, 2**64 - 1, 1.5, "ü", b"\x00\xff", None, True, [1, [2]],
                            {"k": 1}, when]
        assert got_kwargs == {"x": [1, 2]}

    @pytest.mark.parametrize("value", [{1, 2}, object(), 2**64, -2**63 - 1,
                                       dt.datetime(2024, 1, 1)],
                             ids=["set", "object", "int-2**64", "int-below-int64",
                                  "naive-datetime"])
    def test_unencodable_arguments(self, value):
        with pytest.raises(SerializationError, match="cannot be encoded as msgpack") as info:
            litequeue._pack_envelope("tasks.add", (value,), {})
        assert "tasks.add" in str(info.value)
        assert isinstance(info.value, TypeError) and isinstance(info.value, LitequeueError)

    @pytest.mark.parametrize("payload, message", [
        ("text", "not msgpack bytes"),
        (b"\xc1", "not valid msgpack"),
        (pack({"args": []}) + b"\x01", "not valid msgpack"),
        (pack([1, 2]), "envelope is list, not a map"),
        (pack({"args": 1}), "'args' is not an array"),
        (pack({"kwargs": [1]}), "'kwargs' is not a map"),
        (pack({"kwargs": {1: 2}}), "'kwargs' is not a map with string keys"),
    ], ids=["text", "bad-byte", "trailing-data", "list", "args-int", "kwargs-list",
            "kwargs-int-keys"])
    def test_invalid_envelopes(self, payload, message):
        with pytest.raises(ValueError, match=message):
            litequeue._unpack_envelope(payload)

    def test_missing_args_and_kwargs_default_to_empty(self):
        assert litequeue._unpack_envelope(pack({})) == ([], {})

    def test_error_rebuilt_as_its_type_or_a_stand_in(self):
        exc = litequeue._rebuild_error(litequeue._encode_error(KeyError("k")), "tb text")
        assert type(exc) is KeyError and exc.args == ("k",)
        assert any("tb text" in note for note in exc.__notes__)
        blob = pack({"type": "nowhere.Missing", "message": "gone", "args": ["gone"]})
        stand_in = litequeue._rebuild_error(blob, "remote tb")
        assert isinstance(stand_in, RemoteError)
        assert (stand_in.exc_type, stand_in.exc_message) == ("nowhere.Missing", "gone")
        assert stand_in.remote_traceback == "remote tb"
        assert str(stand_in) == "nowhere.Missing: gone"

    def test_exception_tree(self):
        for name in litequeue.__all__:
            obj = getattr(litequeue, name)
            if isinstance(obj, type) and issubclass(obj, BaseException) and name != "Retry" \
                    and not issubclass(obj, Warning):
                assert issubclass(obj, LitequeueError), name
        assert not issubclass(litequeue.Retry, LitequeueError)
        assert issubclass(litequeue.LitequeueWarning, UserWarning)   # shown by default
        assert issubclass(litequeue.TimeoutError, TimeoutError)
        assert issubclass(UnknownTask, KeyError) and issubclass(ConfigurationError, ValueError)

    @hsettings(max_examples=300, deadline=None, database=None)
    @given(args=st.lists(msgpack_values(), max_size=4),
           kwargs=st.dictionaries(st.text(), msgpack_values(), max_size=3))
    def test_every_supported_value_round_trips_exactly(self, args, kwargs):
        got_args, got_kwargs = litequeue._unpack_envelope(
            litequeue._pack_envelope("tasks.echo", args, kwargs))
        assert same(args, got_args), (args, got_args)
        assert same(kwargs, got_kwargs), (kwargs, got_kwargs)

    @pytest.mark.parametrize("value", [
        {(1, 2): "x"},
        dt.datetime(1, 1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    ], ids=["tuple-dict-key", "datetime-before-year-1-in-utc", "datetime-after-9999-in-utc"])
    def test_what_delay_accepts_a_worker_can_read(self, value):
        try:
            payload = litequeue._pack_envelope("tasks.echo", [value], {})
        except SerializationError:
            return                              # refused at delay(): fine, and documented
        litequeue._unpack_envelope(payload)     # accepted: then a worker must read it back


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
    ], ids=["star", "step", "list", "python-list", "int", "range", "range-step", "mixed",
            "mon-fri", "day-names", "sunday-7", "days-of-month", "month-range", "month-names"])
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


# The layout of a file litequeue wrote at schema version 3 before commit c7ea920 (the
# versions from the first with pruning up to 557827e): a snapshot, taken from such a file,
# so that a later edit of an old migration cannot hide from the upgrade test.
SCHEMA_V3_SNAPSHOT = """
CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    queue TEXT NOT NULL DEFAULT 'default', priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'PENDING', payload BLOB NOT NULL, eta REAL, expires REAL,
    attempt INTEGER NOT NULL DEFAULT 0, retries INTEGER NOT NULL DEFAULT 0, max_retries INTEGER,
    worker TEXT, pid INTEGER,
    created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    started_at REAL, finished_at REAL, result BLOB, traceback TEXT, errors BLOB);
CREATE INDEX tasks_ready ON tasks (queue, priority DESC, seq) WHERE state = 'PENDING';
CREATE INDEX tasks_due ON tasks (eta) WHERE state IN ('SCHEDULED', 'RETRY');
CREATE INDEX tasks_running ON tasks (worker) WHERE state = 'STARTED';
CREATE TABLE workers (
    id TEXT PRIMARY KEY, parent TEXT, hostname TEXT NOT NULL, pid INTEGER NOT NULL,
    queues TEXT NOT NULL, concurrency INTEGER, started_at REAL NOT NULL);
CREATE TABLE registry (name TEXT PRIMARY KEY, module TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE schedules (
    name TEXT PRIMARY KEY, task TEXT NOT NULL, module TEXT NOT NULL, schedule TEXT NOT NULL,
    tz TEXT NOT NULL, payload BLOB NOT NULL, queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0, catch_up TEXT NOT NULL DEFAULT 'once',
    last_fire REAL, next_fire REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX schedules_next ON schedules (next_fire);
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
"""


class TestStorage:

    def test_new_file_is_ours_in_wal_mode(self, tmp_path):
        db = str(tmp_path / "new.sqlite")
        litequeue._Storage(db).close()
        conn = sqlite3.connect(db)
        try:
            pragma = lambda name: conn.execute(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
            assert pragma("application_id") == litequeue.APPLICATION_ID
            assert pragma("user_version") == litequeue.SCHEMA_VERSION == len(litequeue._MIGRATIONS)
            assert pragma("journal_mode") == "wal"
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
        finally:
            conn.close()
        assert {"tasks", "workers", "registry", "tasks_ready"} <= tables

    def test_reopening_changes_nothing(self, tmp_path):
        db = str(tmp_path / "again.sqlite")
        litequeue._Storage(db).close()
        before = sha256(db)
        litequeue._Storage(db).close()
        assert sha256(db) == before

    def test_migrations_run_in_order_and_once(self, tmp_path, monkeypatch):
        db = str(tmp_path / "old.sqlite")
        app = LiteQueue(db)
        app.task(name="m.t")(lambda: None).delay()
        app._storage().close()
        # A later version of litequeue with one more migration opens the old file.
        extra = "ALTER TABLE tasks ADD COLUMN note TEXT DEFAULT 'migrated'"
        monkeypatch.setattr(litequeue, "_MIGRATIONS", [*litequeue._MIGRATIONS, extra])
        monkeypatch.setattr(litequeue, "SCHEMA_VERSION", len(litequeue._MIGRATIONS))
        litequeue._Storage(db).close()
        migrated = sha256(db)
        litequeue._Storage(db).close()
        assert sha256(db) == migrated                 # each migration runs once
        assert sql(db, "PRAGMA user_version") == [(litequeue.SCHEMA_VERSION,)]
        assert sql(db, "SELECT name, note FROM tasks") == [("m.t", "migrated")]
        # And this version refuses the file that the newer one wrote.
        monkeypatch.undo()
        with pytest.raises(SchemaTooNew, match="upgrade litequeue"):
            litequeue._Storage(db)

    def test_a_schema_3_file_from_an_earlier_version_still_fires(self, tmp_path):
        """Upgrading litequeue keeps the user's file working: its schedules still fire."""
        db = str(tmp_path / "v3.sqlite")
        conn = apsw.Connection(db)
        try:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA journal_mode = WAL")
            with conn:
                conn.execute(SCHEMA_V3_SNAPSHOT)
                conn.execute(f"PRAGMA application_id = {litequeue.APPLICATION_ID}")
                conn.execute("PRAGMA user_version = 3")
        finally:
            conn.close()
        storage = litequeue._Storage(db)
        try:
            now = time.time()
            definition = {"name": "tick", "task": "tasks.record", "module": "beat",
                          "schedule": "every:1.0", "tz": "UTC", "queue": "default",
                          "payload": litequeue._pack_envelope("tasks.record", ["t"], {}),
                          "priority": 0, "catch_up": "once"}
            storage.sync_schedules([definition], ["beat"], now - 5, litequeue._plan_sync)
            assert storage.fire_due_schedules(now, litequeue._plan_fires) == 1
            assert [row["name"] for row in storage.schedules()] == ["tick"]
        finally:
            storage.close()

    def test_synchronous_setting(self, tmp_path):
        db = str(tmp_path / "sync.sqlite")
        assert LiteQueue(db)._storage()._pragma("synchronous") == 1                 # NORMAL
        assert LiteQueue(db, synchronous="FULL")._storage()._pragma("synchronous") == 2

    def test_claim_uses_the_partial_ready_index(self, tmp_path):
        """Internal invariant: the claim's cost must not depend on finished rows."""
        storage = litequeue._Storage(str(tmp_path / "plan.sqlite"))
        try:
            plan = storage.conn.execute("EXPLAIN QUERY PLAN " + litequeue._SQL_CLAIM,
                                        ("w", 1, 0.0, "default", 1)).fetchall()
        finally:
            storage.close()
        details = " | ".join(row[3] for row in plan)
        assert "INDEX tasks_ready" in details, details
        assert "SCAN tasks" not in details, details

    def test_the_supervisor_s_periodic_reads_seek_and_never_scan_tasks(self, tmp_path):
        """Internal invariant: the quarantine check (every 2 s) and the rescue's look at
        STARTED rows cost the same with a million scheduled or finished rows."""
        storage = litequeue._Storage(str(tmp_path / "plan.sqlite"))
        try:
            for query in (litequeue._SQL_NEEDS_QUARANTINE, litequeue._SQL_QUARANTINE_ETA,
                          litequeue._SQL_CLAIMING_WORKERS):
                plan = storage.conn.execute("EXPLAIN QUERY PLAN " + query,
                                            {"result": b"", "now": 0.0}).fetchall()
                # Only the index of STARTED rows (a few), the small schedules, rate-limit
                # and pause tables, and the distinct rate keys (k: one seek each) are
                # read from end to end; tasks never.
                scans = [row[3] for row in plan if row[3].startswith("SCAN")]
                assert all(scan in ("SCAN CONSTANT ROW", "SCAN schedules", "SCAN rate_limits",
                                    "SCAN paused", "SCAN k")
                           or "tasks_running" in scan for scan in scans), plan
        finally:
            storage.close()

    def test_claim_plan_is_independent_of_scheduled_rows(self, tmp_path):
        """Issue 3: scheduled rows wait where the claim never looks. The claim searches the
        partial index tasks_ready (and never scans tasks) whether the table is empty or
        holds 50 000 SCHEDULED rows, before and after ANALYZE; promotion uses tasks_due."""
        db = str(tmp_path / "plan.sqlite")
        storage = litequeue._Storage(db)

        def plan(statement, bindings):
            rows = storage.conn.execute("EXPLAIN QUERY PLAN " + statement, bindings).fetchall()
            return " | ".join(row[3] for row in rows)

        def check():
            claim = plan(litequeue._SQL_CLAIM, ("w", 1, 0.0, "default", 16))
            assert "USING COVERING INDEX tasks_ready" in claim, claim
            assert "SCAN" not in claim, claim
            promote = plan(litequeue._SQL_PROMOTE_DUE, (time.time(), litequeue._PROMOTE_BATCH))
            assert re.search(r"USING (COVERING )?INDEX tasks_due", promote), promote
            assert "SCAN" not in promote, promote
            next_due = plan(litequeue._SQL_NEXT_DUE, ())
            assert "tasks_due" in next_due and "SCAN" not in next_due, next_due

        try:
            check()
            now = time.time()
            with storage.write() as conn:
                conn.executemany(
                    "INSERT INTO tasks (id, name, state, payload, eta, created_at) "
                    "VALUES (?, 'tasks.add', 'SCHEDULED', ?, ?, ?)",
                    ((f"later-{i}", pack({"args": [i, i]}), now + 3600 + i, now)
                     for i in range(50_000)))
            check()
            storage.conn.execute("ANALYZE")
            storage.close()
            storage = litequeue._Storage(db)
            check()
            # And the claim takes none of them.
            rows, _ = storage.complete_and_claim([], "w", 1, time.time(), "default", 16)
            assert rows == []
            assert storage.counts() == [("default", SCHEDULED, 50_000)]
        finally:
            storage.close()

    @staticmethod
    def _make_bad_file(kind, path):
        if kind == "not-sqlite":
            path.write_bytes(b"id,name\n1,add\n" * 200)
            return CorruptDatabase
        if kind == "damaged-sqlite":
            good = path.with_name("good.sqlite")
            litequeue._Storage(str(good)).close()
            path.write_bytes(good.read_bytes()[:100] + bytes(range(256)) * 48)
            return CorruptDatabase
        if kind == "foreign":
            conn = sqlite3.connect(path)
            conn.execute("CREATE TABLE notes (body TEXT)")
            conn.execute("INSERT INTO notes VALUES ('mine')")
            conn.commit()
            conn.close()
            return ForeignDatabase
        if kind == "too-new":
            litequeue._Storage(str(path)).close()
            conn = sqlite3.connect(path)
            conn.execute("PRAGMA user_version = 99")
            conn.commit()
            conn.close()
            return SchemaTooNew
        raise AssertionError(kind)

    @pytest.mark.parametrize("kind", ["not-sqlite", "damaged-sqlite", "foreign", "too-new"])
    def test_refuses_bad_files_without_touching_them(self, tmp_path, kind):
        path = tmp_path / "file.sqlite"
        expected = self._make_bad_file(kind, path)
        siblings = sorted(p.name for p in tmp_path.iterdir())
        before = sha256(path)
        with pytest.raises(expected) as info:
            litequeue._Storage(str(path))
        assert str(path) in str(info.value)
        assert isinstance(info.value, litequeue.DatabaseError)
        # The public API refuses it the same way.
        with pytest.raises(expected):
            LiteQueue(str(path)).AsyncResult("some-id").state
        assert sha256(path) == before
        if kind != "too-new":
            # No -wal or -shm left behind: nothing was journalled.
            assert sorted(p.name for p in tmp_path.iterdir()) == siblings

    def test_concurrent_first_open_of_a_new_file(self, tmp_path):
        """Two supervisors, or a producer and a worker, may create the file at once."""
        script = textwrap.dedent("""
            import collections, json, multiprocessing, os, sys
            sys.path.insert(0, sys.argv[4])                 # the litequeue under test
            import litequeue

            def open_it(path, barrier, results):
                barrier.wait()
                try:
                    litequeue._Storage(path).close()
                    results.put("ok")
                except BaseException as exc:
                    results.put(f"{type(exc).__module__}.{type(exc).__name__}")

            if __name__ == "__main__":
                directory, trials, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
                ctx = multiprocessing.get_context("fork")   # nothing is open yet here
                outcomes = collections.Counter()
                for trial in range(trials):
                    path = os.path.join(directory, f"fresh{trial}.sqlite")
                    barrier, results = ctx.Barrier(n), ctx.Queue()
                    procs = [ctx.Process(target=open_it, args=(path, barrier, results))
                             for _ in range(n)]
                    for proc in procs:
                        proc.start()
                    for _ in range(n):
                        outcomes[results.get(timeout=60)] += 1
                    for proc in procs:
                        proc.join()
                print(json.dumps(outcomes))
        """)
        (tmp_path / "opener.py").write_text(script)
        done = run([sys.executable, str(tmp_path / "opener.py"), str(tmp_path), "40", "6",
                    str(LITEQUEUE_PY.parent)], cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"ok": 240}

    def test_directory_is_refused(self, tmp_path):
        with pytest.raises(CorruptDatabase, match="directory"):
            litequeue._Storage(str(tmp_path))

    def test_missing_file_when_create_is_off(self, tmp_path):
        with pytest.raises(litequeue.DatabaseError, match="no database"):
            litequeue._Storage(str(tmp_path / "absent.sqlite"), create=False)
        assert not (tmp_path / "absent.sqlite").exists()


class TestRetryOptions:

    def test_max_retries_reads_the_app_default_until_the_task_sets_it(self, tmp_path):
        app = LiteQueue(str(tmp_path / "x.sqlite"), task_max_retries=5)

        @app.task
        def plain():
            pass

        @app.task(max_retries=None)
        def forever():
            pass
        assert (plain.max_retries, forever.max_retries) == (5, None)
        app.conf.task_max_retries = 7
        assert plain.max_retries == 7

    def test_a_naive_retry_eta_is_read_in_the_app_s_zone(self, tmp_path):
        app = LiteQueue(str(tmp_path / "x.sqlite"), timezone="Asia/Shanghai")

        @app.task
        def job():
            pass
        naive = dt.datetime(2030, 1, 1, 9, 0)
        now = dt.datetime(2030, 1, 1, 0, 0, tzinfo=dt.timezone.utc).timestamp()
        delay = litequeue._retry_delay(job, Retry(eta=naive), 0, now)
        assert delay == 3600.0          # 09:00 in Shanghai is 01:00 UTC


class TestTaskPolicy:
    """The one retry policy, as a pure function with an injected clock: the same rules
    for a task that raised and for a row whose process died."""

    NOW = 1_800_000_000.0

    def decide(self, retries, budget, wants_retry=True, delay=5.0, history=()):
        error = litequeue._error_entry(ValueError("boom"), retries + 1, self.NOW)
        return litequeue._after_failure(retries=retries, budget=budget,
                                        wants_retry=wants_retry, delay=lambda: delay,
                                        now=self.NOW, history=list(history), error=error)

    def test_a_retry_within_the_budget_is_due_after_its_delay(self):
        state, eta, retried, history = self.decide(retries=2, budget=3, delay=7.5)
        assert (state, eta, retried) == (RETRY, self.NOW + 7.5, 1)
        assert history == [{"type": "builtins.ValueError", "message": "boom",
                            "time": self.NOW, "attempt": 3}]

    def test_a_spent_budget_or_no_wish_to_retry_fails(self):
        assert self.decide(retries=3, budget=3)[:3] == (FAILURE, None, 0)
        assert self.decide(retries=0, budget=3, wants_retry=False)[:3] == (FAILURE, None, 0)

    def test_no_budget_means_no_bound_and_the_history_grows(self):
        earlier = [{"type": "x.Y", "message": "old", "time": 1.0, "attempt": 1}]
        state, _, _, history = self.decide(retries=10_000, budget=None, history=earlier)
        assert state == RETRY and history[0] == earlier[0] and len(history) == 2

    def test_delay_is_only_drawn_for_a_retry(self):
        drawn = []
        litequeue._after_failure(retries=3, budget=3, wants_retry=True,
                                 delay=lambda: drawn.append(1) or 1.0, now=self.NOW,
                                 history=[], error={})
        assert drawn == []

    def test_the_budget_comes_from_the_request_then_the_row_then_the_task_then_the_app(self):
        budget, unset = litequeue._retry_budget, litequeue._UNSET
        assert budget(1, 2, 3, 4) == 1
        assert budget(None, 2, 3, 4) == 2
        assert budget(None, None, 3, 4) == 3
        assert budget(None, None, unset, 4) == 4
        assert budget(None, None, None, 4) is None      # max_retries=None: no bound

    def test_an_unreadable_history_starts_over_with_a_note(self):
        assert litequeue._history(b"\xc1")[0]["type"] == "litequeue.CorruptResult"
        assert litequeue._history(None) == []


class TestApp:

    def test_the_admin_surface(self, project):
        """What the CLI (and later the dashboard) uses: counts, listing, requeue, purge."""
        app = project.app
        first = project.delay("add", 1, 1)
        mailed = app.tasks["tasks.record"].apply_async([1], queue="mail")
        failed = insert_finished(project.db, FAILURE, result=pack({"type": "x.Y"}))
        admin = app.admin
        assert sorted(admin.counts()) == [("default", FAILURE, 1), ("default", PENDING, 1),
                                          ("mail", PENDING, 1)]
        assert [t["id"] for t in admin.tasks()] == [failed, mailed.id, first.id]
        assert [t["id"] for t in admin.tasks(queue="mail")] == [mailed.id]
        assert [t["id"] for t in admin.tasks(state=PENDING, limit=1)] == [mailed.id]
        assert [t["id"] for t in admin.tasks(name="tasks.add")] == [failed, first.id]
        assert admin.registry()["tasks.add"] == "tasks"
        assert admin.requeue(failed) and app.AsyncResult(failed).state == PENDING
        assert not admin.requeue(first.id)                     # only finished ones
        with pytest.raises(TaskNotFound):
            admin.requeue("nobody")
        assert admin.purge("mail") == 1 and admin.purge() == 2
        assert admin.counts() == [] and admin.workers() == [] and admin.schedules() == []

    def test_group_queues_every_signature_in_one_transaction_or_none(self, tmp_path):
        app = LiteQueue(str(tmp_path / "g.sqlite"))

        @app.task
        def add(x, y):
            return x + y

        g = group(add.s(i, i) for i in range(300)).apply_async()
        assert isinstance(g, GroupResult) and len(g) == 300
        assert {r.state for r in g} == {PENDING} and not g.ready() and g.waiting()
        later = group(add.s(1, 1), add.s(2, 2)).apply_async(countdown=60)
        assert [r.state for r in later] == [SCHEDULED, SCHEDULED]
        assert len(group([add.s(5, 5)])()) == 1 and len(group().apply_async()) == 0
        count = lambda: sql(str(tmp_path / "g.sqlite"), "SELECT count(*) FROM tasks")[0][0]
        assert count() == 303
        # One bad member, at the end of a big group: nothing is written.
        with pytest.raises(SerializationError):
            group([add.s(i, i) for i in range(500)] + [add.s(1, {2})]).apply_async()
        with pytest.raises(DuplicateTaskId):
            group(add.s(1, 1).set(task_id="same"), add.s(2, 2).set(task_id="same")).apply_async()
        with pytest.raises(TypeError, match="signatures"):
            group(add, add)
        assert count() == 303

    def test_group_in_eager_mode_runs_inline(self, tmp_path):
        app = LiteQueue(str(tmp_path / "eager.sqlite"), task_always_eager=True)

        @app.task
        def div(x, y):
            return x / y

        g = group(div.s(6, 3), div.s(1, 0)).apply_async()
        assert g.ready() and g.failed() and not g.successful() and g.completed_count() == 1
        assert g.get(propagate=False)[0] == 2.0
        with pytest.raises(ZeroDivisionError):
            g.get()
        assert g.revoke() == 0                  # they have run already
        assert not (tmp_path / "eager.sqlite").exists()

    def test_eager_mode_runs_inline_and_writes_nothing(self, tmp_path):
        db = tmp_path / "eager.sqlite"
        app = LiteQueue(str(db), task_always_eager=True)

        @app.task
        def echo(*args, **kwargs):
            return [list(args), kwargs]

        @app.task
        def boom(message):
            raise ValueError(message)  # the raise line

        when = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
        result = echo.delay(1, (2, 3), b"x", when, k={"a": None})
        assert result.get() == [[1, [2, 3], b"x", when], {"k": {"a": None}}]  # what a worker sees
        assert result.state == SUCCESS and result.successful() and result.ready()

        failed = boom.apply_async(["bad"])
        assert failed.state == FAILURE and failed.failed() and not failed.successful()
        assert isinstance(failed.result, ValueError)
        assert "raise ValueError(message)  # the raise line" in failed.traceback
        with pytest.raises(ValueError, match="bad"):
            failed.get()
        assert isinstance(failed.get(propagate=False), ValueError)
        with pytest.raises(SerializationError):
            echo.delay({1})
        assert not db.exists()

    def test_config_from_object(self, tmp_path, monkeypatch):
        db = str(tmp_path / "conf.sqlite")
        module = types.ModuleType("celeryconfig")
        module.CELERY_TASK_RESULT_EXPIRES = 3600
        module.CELERY_IMPORTS = "tasks"
        module.CELERY_TIMEZONE = "Asia/Shanghai"
        module.BROKER_URL = "redis://ignored"
        module.worker_prefetch = 4
        app = LiteQueue(db)
        app.config_from_object(module)
        assert app.conf["result_expires"] == 3600
        assert tuple(app.conf["imports"]) == ("tasks",)
        assert app.conf["timezone"] == "Asia/Shanghai"
        assert app.conf["worker_prefetch"] == 4
        assert "BROKER_URL" not in app.conf

        (tmp_path / "lq_test_settings.py").write_text("task_default_queue = 'mail'\n"
                                                      "CELERYD_CONCURRENCY = 3\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        app.config_from_object("lq_test_settings")
        assert app.conf["task_default_queue"] == "mail"
        assert app.conf["worker_concurrency"] == 3

        class Settings:
            task_max_retries = 7
        app.config_from_object(Settings)
        app.config_from_object({"synchronous": "FULL"})
        assert app.conf["task_max_retries"] == 7 and app.conf["synchronous"] == "FULL"

    @pytest.mark.parametrize("settings, message", [
        ({"bogus": 1}, "unknown setting 'bogus'"),
        ({"result_expire": 1}, "did you mean 'result_expires'"),
        ({"synchronous": "SOMETIMES"}, "synchronous"),
        ({"worker_concurrency": 0}, "worker_concurrency"),
        ({"busy_timeout": -1}, "busy_timeout"),
        ({"worker_poll_interval": 0}, "worker_poll_interval must be a number >= 0.01"),
    ], ids=["unknown", "misspelt", "synchronous", "concurrency", "busy-timeout", "poll-0"])
    def test_bad_settings(self, tmp_path, settings, message):
        with pytest.raises(ConfigurationError, match=message):
            LiteQueue(str(tmp_path / "x.sqlite"), **settings)
        app = LiteQueue(str(tmp_path / "x.sqlite"))
        with pytest.raises(ConfigurationError, match=message):
            app.conf.update(settings)                  # checked at once, as Celery's is not
        assert app.conf == LiteQueue(str(tmp_path / "y.sqlite")).conf
        if "unknown setting" in message:
            # A config module holds other names too (imports, helpers): they are skipped.
            app.config_from_object(settings)
            assert not set(settings) & set(app.conf)
        else:
            # A misspelt setting in a config module is refused with a suggestion.
            with pytest.raises(ConfigurationError, match=message):
                app.config_from_object(settings)

    def test_task_decorator(self, tmp_path):
        app = LiteQueue(str(tmp_path / "t.sqlite"))

        @app.task
        def plain(x):
            return x * 2

        @app.task(name="custom.name", bind=True)
        def bound(self, x):
            return [self.name, self.request.id, x]

        assert plain.name == f"{__name__}.{plain.__wrapped__.__qualname__}"
        assert plain.name in app.tasks and app.tasks["custom.name"] is bound
        assert plain(21) == 42                      # calling runs inline
        assert bound(1) == ["custom.name", None, 1]
        assert not (tmp_path / "t.sqlite").exists()  # and writes nothing
        with pytest.raises(ConfigurationError, match="unknown task option"):
            app.task(retries=3)
        with pytest.raises(ConfigurationError):
            app.task(42)

    def test_delay_commits_the_row(self, project):
        result = project.delay("add", 4, 4)
        # Another connection sees it at once: the row was committed before delay returned.
        name, queue, priority, state, payload = sql(
            project.db, "SELECT name, queue, priority, state, payload FROM tasks WHERE id = ?",
            result.id)[0]
        assert (name, queue, priority, state) == ("tasks.add", "default", 0, PENDING)
        assert msgpack.unpackb(payload) == {"args": [4, 4], "kwargs": {}}
        assert sql(project.db,
                   "SELECT module FROM registry WHERE name = 'tasks.add'") == [("tasks",)]

    def test_apply_async_options(self, tmp_path):
        app = LiteQueue(str(tmp_path / "opts.sqlite"))

        @app.task(queue="mail", priority=5)
        def send(to):
            return to

        r = send.apply_async(["a"], task_id="my-id")
        assert r.id == "my-id" and r.state == PENDING and r.name == send.name
        r2 = send.apply_async(args=("b",), kwargs={}, priority=-1, queue="other")
        rows = dict((row[0], row[1:]) for row in sql(
            app.path, "SELECT id, queue, priority FROM tasks"))
        assert rows == {"my-id": ("mail", 5), r2.id: ("other", -1)}
        with pytest.raises(DuplicateTaskId):
            send.apply_async(["c"], task_id="my-id")
        with pytest.raises(TypeError, match="unsupported option"):
            send.apply_async(["c"], countdown_typo=3)
        with pytest.raises(TypeError, match="args must be a list or tuple"):
            send.apply_async("abc")
        with pytest.raises(TypeError, match="kwargs must be a dict"):
            send.apply_async([], ["x"])
        assert sql(app.path, "SELECT count(*) FROM tasks") == [(2,)]

    def test_send_task(self, project, tmp_path):
        project.delay("add", 1, 1)                  # a producer registered tasks.add
        other = LiteQueue(project.db)               # this one does not import it
        result = other.send_task("tasks.add", [2, 3], queue="q", priority=3)
        assert project.row(result.id)["name"] == "tasks.add"
        assert (project.row(result.id)["queue"], project.row(result.id)["priority"]) == ("q", 3)
        with pytest.raises(UnknownTask, match=r"unknown task 'tasks.ad'.*did you mean tasks.add"):
            other.send_task("tasks.ad", [1, 2])
        assert sql(project.db, "SELECT count(*) FROM tasks") == [(2,)]

    def test_async_result_of_unknown_and_pending_ids(self, project):
        unknown = project.app.AsyncResult("no-such-id")
        assert unknown.state == UNKNOWN and not unknown.ready() and unknown.result is None
        with pytest.raises(TaskNotFound):
            unknown.get(timeout=5)

        pending = project.delay("add", 1, 2)
        assert pending.state == PENDING and not pending.ready() and pending.result is None
        assert pending.date_done is None and pending.traceback is None
        started = time.monotonic()
        with pytest.raises(litequeue.TimeoutError, match="not ready"):
            pending.get(timeout=0.2)
        assert time.monotonic() - started < 5
        with pytest.raises(TimeoutError):           # the builtin catches it too
            pending.get(timeout=0.05)
        pending.forget()
        assert pending.state == UNKNOWN
        assert sql(project.db, "SELECT count(*) FROM tasks") == [(0,)]

    @pytest.mark.parametrize("args, kwargs", [
        (({1, 2},), {}), ((object(),), {}), ((2**64,), {}), ((), {"x": {1}}),
    ], ids=["set", "object", "int-2**64", "kwarg-set"])
    def test_unencodable_arguments_write_no_row(self, project, args, kwargs):
        project.delay("add", 1, 1)
        with pytest.raises(SerializationError, match="tasks.add"):
            project.delay("add", *args, **kwargs)
        assert sql(project.db, "SELECT count(*) FROM tasks") == [(1,)]

    # -- scheduling options (issue 3) ------------------------------------------------------

    @staticmethod
    def _timing(db, task_id):
        state, eta, expires = sql(db, "SELECT state, eta, expires FROM tasks WHERE id = ?",
                                  task_id)[0]
        return state, eta, expires

    def test_countdown_eta_and_expires_set_the_row(self, tmp_path):
        db = str(tmp_path / "eta.sqlite")
        app = LiteQueue(db, timezone="Asia/Shanghai")

        @app.task
        def job(x):
            return x

        before = time.time()
        r = job.apply_async([1], countdown=30)
        after = time.time()
        state, eta, expires = self._timing(db, r.id)
        assert state == SCHEDULED and before + 30 <= eta <= after + 30 and expires is None
        assert r.state == SCHEDULED and not r.ready() and r.result is None
        r = job.apply_async([1], countdown=dt.timedelta(minutes=2))
        assert self._timing(db, r.id)[1] == pytest.approx(time.time() + 120, abs=5)

        # An aware eta is that instant; a naive one is wall time in the app's zone, so a
        # Shanghai user's 09:00 is 01:00 UTC, never eight hours off.
        aware = dt.datetime(2030, 1, 1, 9, 0, tzinfo=zoneinfo.ZoneInfo("America/New_York"))
        r = job.apply_async([1], eta=aware)
        assert self._timing(db, r.id)[:2] == (SCHEDULED, utc_ts(2030, 1, 1, 14, 0))
        r = job.apply_async([1], eta=dt.datetime(2030, 1, 1, 9, 0))
        assert self._timing(db, r.id)[:2] == (SCHEDULED, utc_ts(2030, 1, 1, 1, 0))
        utc_app = LiteQueue(db)
        r = utc_app.send_task(job.name, [1], eta=dt.datetime(2030, 1, 1, 9, 0))
        assert self._timing(db, r.id)[:2] == (SCHEDULED, utc_ts(2030, 1, 1, 9, 0))

        # An eta in the past: ready at once.
        r = job.apply_async([1], eta=dt.datetime.now(UTC) - dt.timedelta(hours=1))
        assert self._timing(db, r.id) == (PENDING, None, None) and r.state == PENDING
        r = job.apply_async([1], countdown=-5)
        assert self._timing(db, r.id) == (PENDING, None, None)

        # expires: seconds from now, an aware datetime, or a naive one in the app's zone.
        r = job.apply_async([1], expires=60)
        assert self._timing(db, r.id)[2] == pytest.approx(time.time() + 60, abs=5)
        r = job.apply_async([1], expires=aware)
        assert self._timing(db, r.id)[2] == utc_ts(2030, 1, 1, 14, 0)
        r = job.apply_async([1], countdown=10, expires=dt.datetime(2030, 1, 1, 9, 0))
        assert self._timing(db, r.id)[0::2] == (SCHEDULED, utc_ts(2030, 1, 1, 1, 0))

    @pytest.mark.parametrize("options, message", [
        ({"countdown": 5, "eta": "future"}, "countdown or eta, not both"),
        ({"eta": "future", "expires": "past"}, "expires is earlier than eta"),
        ({"countdown": 60, "expires": 30}, "expires is earlier than eta"),
        ({"eta": "future", "expires": 10}, "expires is earlier than eta"),
        ({"eta": "2030-01-01T00:00:00"}, "eta must be a datetime"),
        ({"eta": 1893456000}, "eta must be a datetime"),
        ({"countdown": "5"}, "countdown must be a number"),
        ({"countdown": float("nan")}, "countdown must be a number"),
        ({"countdown": True}, "countdown must be a number"),
        ({"expires": "tomorrow"}, "expires must be a datetime or a number"),
        ({"expires": float("nan")}, "expires"),
    ], ids=["countdown-and-eta", "expires-before-eta", "expires-before-countdown",
            "expires-seconds-before-eta", "eta-text", "eta-number", "countdown-text",
            "countdown-nan", "countdown-bool", "expires-text", "expires-nan"])
    def test_bad_timing_options_are_refused_and_write_nothing(self, project, options, message):
        future = dt.datetime.now(UTC) + dt.timedelta(hours=1)
        options = {k: {"future": future, "past": future - dt.timedelta(minutes=10)}.get(v, v)
                   if isinstance(v, str) else v for k, v in options.items()}
        project.delay("add", 1, 1)
        before = sha256(project.db)
        task = project.app.tasks["tasks.add"]
        try:
            task.apply_async([1, 2], **options)
        except ConfigurationError as exc:
            assert message in str(exc)
        else:
            pytest.fail(f"apply_async accepted {options}")
        assert sha256(project.db) == before
        assert sql(project.db, "SELECT count(*) FROM tasks") == [(1,)]

    def test_expired_before_it_could_start(self, project):
        """No worker runs here: the state reads EXPIRED as soon as expires passes, and
        get() says the task was expired instead of waiting forever."""
        for expires in (-1, dt.datetime.now(UTC) - dt.timedelta(minutes=1)):
            r = project.app.tasks["tasks.add"].apply_async([1, 1], expires=expires)
            assert r.state == EXPIRED and r.ready() and not r.successful()
            with pytest.raises(TaskRevoked, match="expired"):
                r.get(timeout=5)
            assert r.get(timeout=5, propagate=False) is None
        r = project.app.tasks["tasks.add"].apply_async([1, 1], countdown=30, expires=40)
        assert r.state == SCHEDULED

    def test_periodic_task_registration(self, tmp_path):
        db = tmp_path / "beat.sqlite"
        app = LiteQueue(str(db), timezone="Europe/London")

        @app.task
        def add(x, y):
            return x + y

        @app.periodic_task(crontab(minute=0, hour=7, tz="Asia/Shanghai"), name="morning",
                           args=(1,), kwargs={"y": 2})
        def report(x, y):
            return x + y

        assert isinstance(report, litequeue.Task) and report(1, y=2) == 3
        assert app.tasks[report.name] is report
        assert app.add_periodic_task(dt.timedelta(minutes=5), add.s(2, 2),
                                     name="add-every-5-min") == "add-every-5-min"
        assert app.add_periodic_task(30, add, args=(1, 2), name="add-30s", catch_up="all") \
            == "add-30s"
        assert app.add_periodic_task(crontab(minute="*/5"), "tasks.remote", name="remote",
                                     catch_up="none", queue="q") == "remote"
        assert app.add_periodic_task(60.0, add) == add.name          # named after its task

        def definition(name):
            d = dict(app.periodic[name])
            d["payload"] = litequeue._unpack_envelope(d["payload"])
            return {k: d[k] for k in ("task", "module", "schedule", "tz", "payload", "queue",
                                      "catch_up")}
        assert definition("morning") == {
            "task": report.name, "module": __name__, "schedule": "cron:0 7 * * *",
            "tz": "Asia/Shanghai", "payload": ([1], {"y": 2}), "queue": "default",
            "catch_up": "once"}
        assert definition("add-every-5-min") == {
            "task": add.name, "module": __name__, "schedule": "every:300.0",
            "tz": "Europe/London", "payload": ([2, 2], {}), "queue": "default",
            "catch_up": "once"}
        assert definition("add-30s")["schedule"] == "every:30.0"
        assert definition("add-30s")["payload"] == ([1, 2], {})
        assert definition("add-30s")["catch_up"] == "all"
        assert definition("remote") == {
            "task": "tasks.remote", "module": __name__, "schedule": "cron:*/5 * * * *",
            "tz": "Europe/London", "payload": ([], {}), "queue": "q", "catch_up": "none"}

        with pytest.raises(ConfigurationError, match="'morning' is already defined"):
            app.add_periodic_task(10, add, name="morning")
        with pytest.raises(ConfigurationError, match="already defined"):
            app.add_periodic_task(10, add)
        with pytest.raises(ConfigurationError, match="catch_up must be one of"):
            app.add_periodic_task(10, add, name="x", catch_up="sometimes")
        assert set(app.periodic) == {"morning", "add-every-5-min", "add-30s", "remote", add.name}
        assert not db.exists()                  # defining schedules writes nothing

    # -- failure handling and serialization (issue 4) ---------------------------------------

    @staticmethod
    def _unopened_app(**settings):
        """An app whose database is never opened (the tests below do no I/O)."""
        return LiteQueue(os.path.join(os.sep, "nonexistent", "never-opened.sqlite"), **settings)

    @hsettings(max_examples=300, deadline=None, database=None)
    @given(factor=st.just(True) | st.integers(1, 10) | st.floats(0.01, 100),
           cap=st.floats(0.01, 3600), retries=st.integers(0, 1000), jitter=st.booleans())
    def test_backoff_stays_within_zero_and_the_capped_exponential(self, factor, cap,
                                                                  retries, jitter):
        app = self._unopened_app()
        task = app.task(lambda: None, name="t", retry_backoff=factor, retry_backoff_max=cap,
                        retry_jitter=jitter)
        ceiling = min(cap, (1 if factor is True else factor) * 2 ** retries)
        countdown = task.backoff(retries)
        assert isinstance(countdown, float)
        if jitter:
            assert 0 <= countdown <= ceiling
        else:
            assert countdown == pytest.approx(ceiling)
        fixed = app.task(lambda: None, name="u", default_retry_delay=7)
        assert fixed.backoff(retries) == 7.0                   # no retry_backoff

    def test_jittered_backoff_spreads_over_the_whole_range(self):
        task = self._unopened_app().task(lambda: None, name="t", retry_backoff=True,
                                         retry_backoff_max=600, retry_jitter=True)
        samples = [task.backoff(3) for _ in range(2000)]        # uniform in [0, 8]
        assert 0 <= min(samples) < 0.5 and 7.5 < max(samples) <= 8
        assert 3.5 < sum(samples) / len(samples) < 4.5

    def test_backoff_of_a_late_retry_is_capped_not_an_overflow(self):
        task = self._unopened_app().task(lambda: None, name="t", max_retries=5000,
                                         retry_backoff=0.5, retry_backoff_max=600,
                                         retry_jitter=False)
        assert task.backoff(1024) == 600.0

    @hsettings(max_examples=200, deadline=None, database=None)
    @given(args=st.lists(msgpack_values(), max_size=4),
           kwargs=st.dictionaries(st.text(), msgpack_values(), max_size=3))
    def test_eager_mode_round_trips_every_supported_value(self, args, kwargs):
        app = self._unopened_app(task_always_eager=True)

        @app.task
        def echo(*a, **k):
            return [list(a), k]
        result = echo.apply_async(args, kwargs)
        assert result.state == SUCCESS, result.result
        got_args, got_kwargs = result.get()
        assert same(args, got_args), (args, got_args)
        assert same(kwargs, got_kwargs), (kwargs, got_kwargs)


QUICKSTART_CHECK = '''
import json
import litequeue
from tasks import add, fail, TaskFailed

out = {"litequeue_file": litequeue.__file__}
r = add.delay(4, 4)
out["get"] = r.get(timeout=20)
out["result"], out["successful"], out["failed"], out["state"] = \\
    r.result, r.successful(), r.failed(), r.state
f = fail.delay("boom")
try:
    f.get(timeout=20)
    out["raised"] = None
except TaskFailed as exc:
    out["raised"] = str(exc)
out["f_successful"], out["f_failed"], out["f_state"] = f.successful(), f.failed(), f.state
out["f_result_type"] = type(f.result).__name__
out["f_result_is_task_failed"] = isinstance(f.result, TaskFailed)
out["f_traceback"] = f.traceback
out["f_no_propagate"] = repr(f.get(timeout=20, propagate=False))
print(json.dumps(out))
'''


# Reads failed tasks' exceptions in a process that has imported tasks.py.
READ_ERRORS = '''
import json, sys
import tasks
out = {}
for task_id in sys.argv[1:]:
    exc = tasks.app.AsyncResult(task_id).result
    notes = getattr(exc, "__notes__", [])
    out[task_id] = {"type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                    "exc_type": getattr(exc, "exc_type", None),
                    "exc_message": getattr(exc, "exc_message", None),
                    "traceback": any("Traceback" in note for note in notes)}
print(json.dumps(out))
'''


class TestWorker:

    def test_group_results_come_back_in_order(self, project, workers):
        workers.start(project, concurrency=2)
        add = project.app.tasks["tasks.add"]
        fail = project.app.tasks["tasks.fail"]
        g = group(add.s(i, i) for i in range(200)).apply_async()
        assert g.get(timeout=30) == [2 * i for i in range(200)]
        assert g.ready() and g.successful() and g.completed_count() == 200
        mixed = group(add.s(1, 2), fail.s("boom"), add.s(3, 4)).apply_async()
        values = mixed.get(timeout=30, propagate=False)
        assert values[0] == 3 and values[2] == 7 and str(values[1]).endswith("boom")
        assert mixed.failed() and not mixed.successful() and mixed.completed_count() == 2
        with pytest.raises(Exception, match="boom"):
            mixed.get(timeout=5)

    @pytest.mark.parametrize("mode", ["vendored", "installed"])
    def test_quickstart(self, tmp_path, workers, mode):
        proj = Project(tmp_path / "quickstart", vendored=mode == "vendored")
        if mode == "vendored":
            # `python litequeue.py worker jobs.sqlite`, no -A: the worker imports the
            # modules that producers registered.
            cmd = [sys.executable, "litequeue.py", "worker", "jobs.sqlite"]
        else:
            script = Path(sys.executable).with_name("litequeue")
            cmd = [str(script)] if script.exists() else [sys.executable, "-m", "litequeue"]
            cmd += ["worker", "jobs.sqlite", "-A", "tasks"]
        concurrency = os.cpu_count() or 1
        producer = "from tasks import add; r = add.delay(4, 4); print(r.get(timeout=20))"
        if mode == "vendored":
            # The tutorial's order: the worker starts first, with no database yet and
            # nothing registered, and still finds tasks.py once a producer uses it.
            first_worker = workers.start(proj, cmd=cmd, concurrency=concurrency)
            assert python(producer, proj.dir) == "8\n"
            first_worker.signal(signal.SIGTERM)
            assert first_worker.wait(20) == 0
        # With no worker running, the row is committed and not ready.
        first_id, ready, state = python(
            "from tasks import add; r = add.delay(4, 4); print(r.id, r.ready(), r.state)",
            proj.dir).split()
        assert (ready, state) == ("False", PENDING)
        workers.start(proj, cmd=cmd, concurrency=concurrency)
        assert python(producer, proj.dir) == "8\n"

        first = LiteQueue(proj.db).AsyncResult(first_id)
        assert first.get(timeout=20) == 8
        assert (first.result, first.successful(), first.state) == (8, True, SUCCESS)
        assert first.date_done is not None

        checks = json.loads(python(QUICKSTART_CHECK, proj.dir))
        if mode == "vendored":
            assert checks["litequeue_file"] == str(proj.dir / "litequeue.py")
        else:
            assert Path(checks["litequeue_file"]).parent != proj.dir
        assert checks["get"] == 8 and checks["result"] == 8
        assert (checks["successful"], checks["failed"], checks["state"]) == \
            (True, False, SUCCESS)
        assert checks["raised"] == "boom"
        assert (checks["f_successful"], checks["f_failed"], checks["f_state"]) == \
            (False, True, FAILURE)
        assert checks["f_result_is_task_failed"], checks["f_result_type"]
        assert "raise TaskFailed(message)" in checks["f_traceback"]
        assert "tasks.py" in checks["f_traceback"]
        assert checks["f_no_propagate"] == "TaskFailed('boom')"

    def test_exactly_once_over_two_supervisors(self, project, workers):
        a = workers.start(project, concurrency=2, loglevel="WARNING", ready=False)
        b = workers.start(project, concurrency=2, loglevel="WARNING", ready=False)
        a.wait_ready()
        b.wait_ready()
        children = {c["id"]: "a" for c in a.children()} | {c["id"]: "b" for c in b.children()}
        record = project.app.tasks["tasks.record"]
        expected = {record.delay(n).id: n for n in range(2000)}

        def done():
            return sql(project.db, "SELECT count(*) FROM tasks WHERE state = ?", SUCCESS)[0][0]
        wait_until(lambda: done() == 2000, 120,
                   lambda: f"2000 SUCCESS rows (have {done()})")

        rows = sql(project.db, "SELECT id, state, result, attempt, worker, retries FROM tasks")
        assert len(rows) == 2000
        # Every execution, as the tasks themselves recorded it.
        runs = collections.Counter()
        for ledger in project.marks.glob("ledger.*"):
            for line in ledger.read_text().splitlines():
                task_id, n = line.split()
                assert expected[task_id] == int(n)
                runs[task_id] += 1
        assert set(runs) == set(expected)
        for task_id, state, result, attempt, worker, retries in rows:
            assert state == SUCCESS and msgpack.unpackb(result) == expected[task_id]
        # Each task ran exactly once and was never charged a failed attempt. (The attempt
        # column counts claims: a child may hand prefetched rows back unrun.)
        again = [(task_id, attempt, retries, worker, runs[task_id])
                 for task_id, _, _, attempt, worker, retries in rows
                 if retries != 0 or runs[task_id] != 1]
        assert again == [], f"{len(again)} task(s) run more than once: {again[:5]}"
        # Both supervisors took part.
        by_supervisor = collections.Counter(children[row[4]] for row in rows)
        assert set(by_supervisor) == {"a", "b"}, by_supervisor
        assert a.proc.poll() is None and b.proc.poll() is None

    def test_sigkill_of_a_child_mid_task(self, project, workers):
        w = workers.start(project, concurrency=2)
        r = project.delay("block", "k")
        (attempt, pid), = wait_until(lambda: project.started("k"), 10, "block('k') to start")
        assert attempt == 1 and pid in {c["pid"] for c in w.children()}
        assert (project.row(r.id)["state"], project.row(r.id)["pid"]) == (STARTED, pid)

        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        runs = wait_until(lambda: len(project.started("k")) == 2 and project.started("k"), 10,
                          "block('k') to run again")
        requeue_latency = time.monotonic() - killed_at
        assert runs[1][0] == 2 and runs[1][1] != pid
        assert requeue_latency < 5, f"requeued after {requeue_latency:.1f} s"
        project.go("k")
        assert r.get(timeout=20) == "k"
        assert (r.state, r.retries) == (SUCCESS, 1)
        assert project.row(r.id)["attempt"] >= 2     # the fencing token moved on
        assert sql(project.db, "SELECT count(*) FROM tasks") == [(1,)]

        # The supervisor replaced the dead child.
        def replaced():
            pids = [c["pid"] for c in w.live_children()]
            return len(pids) == 2 and pid not in pids
        wait_until(replaced, 15, "a replacement child")
        status = lq("status", project.db, cwd=project.dir)
        assert status.returncode == 0, status.stderr
        assert status.stdout.count("    child ") == 2, status.stdout
        assert w.proc.poll() is None

    def test_a_restarted_child_runs_its_supervisors_code_not_the_edited_file(
            self, tmp_path, workers):
        """The supervisor hands each child the code it was started with: a child that
        replaces a dead one neither reads nor compiles litequeue.py again, so an edit of
        the file (here, one that would not even import) does not reach a running
        worker until it is restarted."""
        proj = Project(tmp_path / "vendored", vendored=True)
        a = workers.start(proj, cmd=[sys.executable, "litequeue.py", "worker", proj.db,
                                     "-A", "tasks", "-c", "1", "-l", "INFO"])
        assert proj.delay("add", 2, 3).get(timeout=20) == 5
        (proj.dir / "litequeue.py").write_text("raise SystemExit('an edited litequeue.py')\n")
        (child,) = a.live_children()
        os.kill(child["pid"], signal.SIGKILL)
        wait_until(lambda: [c for c in a.live_children() if c["pid"] != child["pid"]], 20,
                   "a new child to replace the killed one")
        assert proj.delay("add", 4, 5).get(timeout=20) == 9
        assert "an edited litequeue.py" not in a.log.read_text()

    def test_sigkill_of_the_whole_supervisor_mid_task(self, project, workers):
        a = workers.start(project, concurrency=2)
        results = [project.delay("block", name) for name in ("s1", "s2")]
        wait_until(lambda: project.started("s1") and project.started("s2"), 10,
                   "both block tasks to start")
        a.killpg(signal.SIGKILL)
        assert a.wait(10) == -signal.SIGKILL
        wait_until(lambda: not group_members(a.pgid), 10, "the killed workers to be gone")
        assert [project.state(r.id) for r in results] == [STARTED, STARTED]  # orphaned
        status = lq("status", project.db, cwd=project.dir)
        assert f"{a.id} pid {a.pid}" in status.stdout and "DEAD" in status.stdout, status.stdout

        for name in ("s1", "s2"):
            project.go(name)
        restarted_at = time.monotonic()
        workers.start(project, concurrency=2)
        for r in results:
            r.get(timeout=30)
        latency = time.monotonic() - restarted_at
        assert latency < 15, f"rescued after {latency:.1f} s (the lease is 300 s)"
        for r in results:
            assert (r.state, r.retries) == (SUCCESS, 1)
        assert [len(project.started(name)) for name in ("s1", "s2")] == [2, 2]
        # The dead supervisor and its children are no longer listed.
        ids = {row[0] for row in sql(project.db, "SELECT id FROM workers")}
        assert a.id not in ids and not ({c["id"] for c in a.children()} & ids)

    def test_a_live_worker_is_never_rescued_however_long_its_task_runs(self, project, workers):
        """A held lock always means a live worker: there is no lease to run out (the
        retired worker_lease setting is accepted and ignored)."""
        settings = {"worker_lease": 1.0}
        a = workers.start(project, concurrency=1, settings=settings)
        r = project.delay("block", "long")
        wait_until(lambda: project.started("long"), 10, "block to start")
        b = workers.start(project, concurrency=1, settings=settings)
        # A negative check needs a window: several rescue rounds (every 2 s).
        window = time.monotonic() + 5
        wait_until(lambda: len(project.started("long")) > 1 or time.monotonic() > window,
                   10, "the window to pass")
        assert len(project.started("long")) == 1, "a live worker's running task was rescued"
        assert len(a.live_children()) == 1 and len(b.live_children()) == 1
        project.go("long")
        assert r.get(timeout=20) == "long"
        assert r.retries == 0

    def test_sigkill_of_the_supervisor_only(self, project, workers):
        a = workers.start(project, concurrency=2)
        r = project.delay("block", "orphan")
        (_, busy_pid), = wait_until(lambda: project.started("orphan"), 10, "block to start")
        (idle_pid,) = [c["pid"] for c in a.children() if c["pid"] != busy_pid]
        queued = [project.delay("add", n, n) for n in range(5)]
        wait_until(lambda: all(project.state(q.id) == SUCCESS for q in queued), 10,
                   "the idle child to run the adds")
        queued += [project.delay("add", n, n) for n in range(5, 8)]
        a.signal(signal.SIGKILL)
        assert a.wait(10) == -signal.SIGKILL
        # The idle orphan exits at once; the busy one keeps running its task.
        wait_until(lambda: not alive(idle_pid), 5, "the idle orphaned child to exit")
        assert alive(busy_pid)

        workers.start(project, concurrency=1)
        assert project.state(r.id) == STARTED        # its owner lives: nobody steals it
        project.go("orphan")
        assert r.get(timeout=20) == "orphan"
        assert project.started("orphan") == [(1, busy_pid)]  # finished by the orphan, once
        assert r.retries == 0
        wait_until(lambda: not alive(busy_pid), 15, "the orphaned child to exit")
        assert [q.get(timeout=20) for q in queued] == [0, 2, 4, 6, 8, 10, 12, 14]
        assert all(q.retries == 0 for q in queued)
        # The new supervisor notices the dead one (its lock is free) and drops it.
        wait_until(lambda: not sql(project.db, "SELECT 1 FROM workers WHERE id = ?", a.id), 15,
                   "the dead supervisor to leave the workers table")
        assert sql(project.db, "SELECT count(*) FROM tasks WHERE state != ?", SUCCESS) == [(0,)]

    @pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
    def test_warm_shutdown(self, project, workers, how):
        w = workers.start(project, concurrency=1)
        r = project.delay("block", "warm")
        wait_until(lambda: project.started("warm"), 10, "block to start")
        queued = [project.delay("add", n, 1) for n in range(3)]
        if how == "SIGTERM":
            w.signal(signal.SIGTERM)                 # kill PID
        else:
            w.killpg(signal.SIGINT)                  # Ctrl-C reaches the whole group
        wait_until(lambda: WARM_SHUTDOWN_LOG in w.log_text(), 10, "the warm shutdown to begin")
        assert w.proc.poll() is None                 # waiting for the running task
        project.go("warm")
        assert w.wait(20) == 0
        assert (r.state, r.result) == (SUCCESS, "warm")
        assert [project.state(q.id) for q in queued] == [PENDING] * 3   # never started
        assert sql(project.db, "SELECT count(*) FROM workers") == [(0,)]
        wait_until(lambda: not group_members(w.pgid), 10, "no process left")

    def test_cold_shutdown_requeues_the_running_task(self, project, workers):
        w = workers.start(project, concurrency=1)
        r = project.delay("block", "cold")
        wait_until(lambda: project.started("cold"), 10, "block to start")
        queued = project.delay("add", 2, 3)
        w.signal(signal.SIGTERM)
        wait_until(lambda: WARM_SHUTDOWN_LOG in w.log_text(), 10, "the warm shutdown to begin")
        second = time.monotonic()
        w.signal(signal.SIGTERM)
        assert w.wait(10) == 1
        assert time.monotonic() - second < 5
        wait_until(lambda: not group_members(w.pgid), 10, "the killed children to be gone")
        row = project.row(r.id)
        # Requeued, and not charged to the task: the shutdown was not its fault.
        assert (row["state"], row["retries"], row["worker"]) == (PENDING, 0, None)
        assert project.state(queued.id) == PENDING

        project.go("cold")
        workers.start(project, concurrency=1)
        assert r.get(timeout=20) == "cold"
        assert len(project.started("cold")) == 2
        assert queued.get(timeout=20) == 5

    def test_grace_period_over_turns_cold(self, project, workers):
        w = workers.start(project, "--grace", "0.5", concurrency=1)
        r = project.delay("block", "grace")
        wait_until(lambda: project.started("grace"), 10, "block to start")
        w.signal(signal.SIGTERM)
        assert w.wait(15) == 1
        wait_until(lambda: not group_members(w.pgid), 10, "the killed child to be gone")
        row = project.row(r.id)
        assert (row["state"], row["retries"]) == (PENDING, 0)

    def test_priority_and_queues(self, project, workers):
        w = workers.start(project, "-Q", "default,mail", concurrency=1)
        project.delay("block", "gate")
        wait_until(lambda: project.started("gate"), 10, "block to start")
        record = project.app.tasks["tasks.record"]
        low = [record.apply_async([n]) for n in range(3)]
        high = [record.apply_async([10 + n], priority=5) for n in range(3)]
        mail = record.apply_async([20], queue="mail")
        elsewhere = record.apply_async([30], queue="elsewhere")
        project.go("gate")
        assert [r.get(timeout=20) for r in low + high + [mail]] == [0, 1, 2, 10, 11, 12, 20]
        (ledger,) = project.marks.glob("ledger.*")   # one child ran them, in this order:
        order = [int(line.split()[1]) for line in ledger.read_text().splitlines()]
        assert [n for n in order if n != 20] == [10, 11, 12, 0, 1, 2]
        assert project.state(elsewhere.id) == PENDING  # a queue nobody serves
        assert w.proc.poll() is None

    def test_the_child_loop_one_step_at_a_time(self, project):
        """The child's one-iteration seam: each step() claims a batch or runs one row,
        outcomes wait for the next commit, and the batch doubles while tasks are fast.
        Driven in a separate process (the child installs signal handlers)."""
        results = [project.delay("add", n, n) for n in range(3)]
        script = textwrap.dedent(f'''
            import json, os, sys
            sys.path.insert(0, {str(project.dir)!r})
            import litequeue
            litequeue._GROUP_COMMIT_WINDOW = 60.0   # no commit on a timer: steps decide
            spec = {{"db": {project.db!r}, "worker_id": "0123456789ab", "parent_id": None,
                     "queues": ["default"], "modules": ["tasks"], "loglevel": "WARNING",
                     "settings": dict(litequeue.DEFAULTS), "autoimport": False,
                     "poll_interval": 1.0, "cwd": {str(project.dir)!r}, "hostname": "h",
                     "time_limit": None, "soft_time_limit": None, "max_tasks": None,
                     "max_memory": None}}
            child = litequeue._Child(spec)
            child.open()
            trace = []
            for _ in range(5):
                going = child.step()
                trace.append([going, len(child.pending.claimed), len(child.pending.outcomes)])
            child.stopping = True
            trace.append([child.step(), len(child.pending.claimed), len(child.pending.outcomes)])
            child.close()
            print(json.dumps(trace))
        ''')
        trace = json.loads(python(script, project.dir))
        assert trace == [[True, 1, 0],     # claimed a batch of 1
                         [True, 0, 1],     # ran it; its outcome waits
                         [True, 2, 0],     # committed it, claimed 2 (the batch doubled)
                         [True, 1, 1],     # ran one
                         [True, 0, 2],     # ran the other
                         [False, 0, 0]], trace   # stopping: committed both, and out
        assert [r.get(timeout=5) for r in results] == [0, 2, 4]
        assert sql(project.db, "SELECT count(*) FROM workers") == [(0,)]

    @staticmethod
    def _claimers(storage, *names):
        now = time.time()
        for pid, worker in enumerate(names, 100):     # only registered workers claim
            storage.register_worker({"id": worker, "parent": None, "hostname": "h",
                                     "pid": pid, "queues": "default", "concurrency": 1,
                                     "started_at": now})

    def test_a_claim_takes_a_fair_share_of_the_ready_rows(self, project):
        """One of a worker's 2 processes takes ceil(ready / 2) rows, however large its
        batch, so the first process a burst wakes leaves the other its half."""
        results = [project.delay("add", i, i) for i in range(10)]
        storage = litequeue._Storage(project.db)
        try:
            self._claimers(storage, "first", "second")
            storage.claim_share = 2
            taken = [len(storage.complete_and_claim([], worker, 1, time.time(), "default",
                                                    64)[0])
                     for worker in ("first", "second", "first", "second", "first")]
            assert taken == [5, 3, 1, 1, 0]
            storage.claim_share = 1       # a worker of one process takes what it asks for
            assert sql(project.db, "SELECT count(*) FROM tasks WHERE state = 'STARTED'") \
                == [(10,)]
        finally:
            storage.close()
        assert len(results) == 10

    def test_a_due_eta_row_is_claimed_as_it_stands(self, project):
        """A child claims a SCHEDULED row whose eta has come without waiting for the
        supervisor to promote it; not one that is still ahead, nor one in a paused
        queue."""
        due = project.app.tasks["tasks.add"].apply_async((1, 2), countdown=0.05)
        ahead = project.app.tasks["tasks.add"].apply_async((3, 4), countdown=3600)
        (eta,), = sql(project.db, "SELECT eta FROM tasks WHERE id = ?", due.id)
        wait_until(lambda: time.time() > eta, 5, "the eta to pass")
        assert project.state(due.id) == SCHEDULED
        storage = litequeue._Storage(project.db)
        try:
            self._claimers(storage, "w")
            lq("pause", project.db, "default", cwd=project.dir)
            rows, _ = storage.complete_and_claim([], "w", 1, time.time(), "default", 16)
            assert rows == []
            lq("resume", project.db, "default", cwd=project.dir)
            rows, _ = storage.complete_and_claim([], "w", 1, time.time(), "default", 16)
            assert [(r.id, r.attempt) for r in rows] == [(due.id, 1)]
            assert (project.state(due.id), project.state(ahead.id)) == (STARTED, SCHEDULED)
        finally:
            storage.close()

    def test_fencing_rejects_a_stale_completion(self, project):
        """Internal invariant: a rescued task's zombie cannot overwrite the real result."""
        result = project.delay("add", 1, 1)
        storage = litequeue._Storage(project.db)
        try:
            now = time.time()
            for worker, pid in (("zombie", 111), ("heir", 222)):   # only registered ones claim
                storage.register_worker({"id": worker, "parent": None, "hostname": "h",
                                         "pid": pid, "queues": "default", "concurrency": 1,
                                         "started_at": now})
            (first,), rejected = storage.complete_and_claim([], "zombie", 111, now, "default", 1)
            seq, task_id, _, _, attempt, *_ = first
            assert (task_id, attempt, rejected) == (result.id, 1, 0)
            # The zombie's worker is found dead: its row goes back to the queue.
            assert storage.rescue("zombie", None, None, now) == (1, 0)
            (second,), _ = storage.complete_and_claim([], "heir", 222, now, "default", 1)
            assert (second[0], second[4]) == (seq, 2)

            zombie = litequeue._Outcome(SUCCESS, pack("zombie"), seq=seq, attempt=attempt, tag="")
            _, rejected = storage.complete_and_claim([zombie], "zombie", 111, now, "default", 0)
            assert rejected == 1
            # Right attempt number, wrong worker: rejected too.
            forged = litequeue._Outcome(SUCCESS, pack("forged"), seq=seq, attempt=2, tag="")
            _, rejected = storage.complete_and_claim([forged], "zombie", 111, now, "default", 0)
            assert rejected == 1
            row = project.row(result.id)
            assert (row["state"], row["result"], row["worker"]) == (STARTED, None, "heir")

            heir = litequeue._Outcome(SUCCESS, pack(2), seq=seq, attempt=2, tag="")
            _, rejected = storage.complete_and_claim([heir], "heir", 222, now, "default", 0)
            assert rejected == 0
            _, rejected = storage.complete_and_claim([zombie], "zombie", 111, now, "default", 0)
            assert rejected == 1                     # still rejected after the result
        finally:
            storage.close()
        assert (result.get(timeout=5), result.state) == (2, SUCCESS)

    def test_wake_up_without_the_fallback(self, project, workers):
        w = workers.start(project, "--poll-interval", "60", concurrency=1)
        assert project.delay("add", 1, 1).get(timeout=10) == 2   # it has been busy, now idle
        latencies = []
        for n in range(3):
            started = time.monotonic()
            assert project.delay("add", n, n).get(timeout=10) == 2 * n
            latencies.append(time.monotonic() - started)
        # The issue asks for "a few seconds"; 1 s is stricter on purpose: the supervisor
        # also rings every child every 2 s, which would satisfy 3 s with no doorbell at all.
        assert max(latencies) < 1.0, latencies
        assert w.proc.poll() is None

    def test_bad_task_rows_fail_and_the_worker_keeps_serving(self, project, workers):
        w = workers.start(project, concurrency=1)
        cases = [
            ("tasks.nope", pack({"args": [], "kwargs": {}}), UnknownTask,
             "unknown task 'tasks.nope'"),
            ("tasks.add", b"\xc1\xc1", ValueError, "payload is not valid msgpack"),
            ("tasks.add", pack({"args": [1, 2]})[:-1], ValueError, "payload is not valid msgpack"),
            ("tasks.add", pack([4, 4]), ValueError, "envelope is list, not a map"),
            ("tasks.add", pack({"args": 4}), ValueError, "'args' is not an array"),
            ("tasks.add", pack({"args": [], "kwargs": [1]}), ValueError, "'kwargs' is not a map"),
            ("tasks.add", pack({"kwargs": {1: 2}}), ValueError, "string keys"),
            ("tasks.add", '{"args": [4, 4]}', ValueError, "payload is str, not msgpack bytes"),
            ("tasks.add", pack({"args": [1]}), TypeError, "missing 1 required positional"),
            ("tasks.bad_result", pack({}), SerializationError, "cannot be encoded as msgpack"),
            # Types this process has not imported come back as a stand-in naming them.
            ("tasks.fail", pack({"args": ["x"]}), RemoteError, "tasks.TaskFailed: x"),
            ("tasks.picky", pack({}), RemoteError, "tasks.Picky: 1-2"),
        ]
        ids = insert_raw(project.db, [(name, payload) for name, payload, _, _ in cases])
        (good_id,) = insert_raw(project.db, [("tasks.add", pack({"args": [4, 4]}))])
        good = project.app.AsyncResult(good_id)
        assert good.get(timeout=20) == 8
        for task_id, (name, _, exc_type, message) in zip(ids, cases):
            result = project.app.AsyncResult(task_id)
            assert result.state == FAILURE, (name, message)
            assert isinstance(result.result, exc_type), (message, result.result)
            assert message in str(result.result)
            with pytest.raises(exc_type):
                result.get(timeout=5)
        # One child served them all: none of these crashed it.
        (child,) = w.children()
        assert {project.row(i)["pid"] for i in ids + [good_id]} == {child["pid"]}
        assert w.proc.poll() is None

    @pytest.mark.parametrize("how, ended", [("sigkill", "signal 9"), ("exit", "exit code 1"),
                                            ("segfault", "signal 11")])
    def test_task_that_kills_its_process_fails_after_its_retry_budget(self, project, workers,
                                                                      how, ended):
        w = workers.start(project, concurrency=1)
        project.delay("block", "gate")
        wait_until(lambda: project.started("gate"), 10, "block to start")
        # Fast tasks around it, so it sits in a prefetched batch: only it is charged.
        record = project.app.tasks["tasks.record"]
        before = [record.delay(n) for n in range(20)]
        r = project.delay("die", how)
        after = [record.delay(n) for n in range(20, 40)]
        project.go("gate")
        exc = r.get(timeout=60, propagate=False)
        assert isinstance(exc, WorkerLostError), exc
        assert "died" in str(exc) and ended in str(exc), str(exc)
        assert (r.state, r.retries) == (FAILURE, 3)
        with pytest.raises(WorkerLostError):
            r.get(timeout=5)
        runs = list(project.marks.glob(f"die.{r.id}.*"))
        assert len(runs) == 4                        # task_max_retries=3: four runs at most
        # Each death is a failed attempt in the error history, with a clear message.
        assert len(r.errors) == 4
        for error in r.errors:
            assert error["type"] == "litequeue.WorkerLostError", error
            assert "died" in error["message"] and ended in error["message"], error
        # The worker kept serving, and the tasks around it were neither charged nor rerun
        # (results finished before a task of unknown duration are committed before it).
        assert [q.get(timeout=20) for q in before + after] == list(range(40))
        assert all(q.retries == 0 for q in before + after)
        ledger = collections.Counter(line.split()[0] for path in project.marks.glob("ledger.*")
                                     for line in path.read_text().splitlines())
        assert all(ledger[q.id] == 1 for q in before + after), ledger
        wait_until(lambda: len(w.live_children()) == 1, 15, "one live child")
        assert w.proc.poll() is None

    def test_a_dying_task_s_own_retry_budget_applies(self, project, workers):
        """die_once has max_retries=1: two runs, then FAILURE."""
        w = workers.start(project, concurrency=1)
        r = project.delay("die_once", "segfault")
        assert isinstance(r.get(timeout=30, propagate=False), WorkerLostError)
        assert (r.state, r.retries, len(r.errors)) == (FAILURE, 1, 2)
        assert len(list(project.marks.glob(f"die.{r.id}.*"))) == 2
        assert project.delay("add", 1, 1).get(timeout=20) == 2
        assert w.proc.poll() is None

    def test_task_raising_a_base_exception_does_not_loop(self, project, workers):
        w = workers.start(project, concurrency=1)
        r = project.delay("interrupt")
        after = project.delay("add", 3, 3)

        def runs():
            return len(list(project.marks.glob(f"interrupt.{r.id}.*")))
        wait_until(lambda: r.ready() or runs() > 4, 30, "the task to finish or loop")
        assert runs() <= 4, f"ran {runs()} times and is {r.state}"
        assert r.state == FAILURE
        assert after.get(timeout=20) == 6
        assert w.proc.poll() is None

    # -- bad input and round trips (issue 4) ------------------------------------------------

    def test_arguments_of_every_supported_type_round_trip_through_a_worker(self, project,
                                                                           workers):
        workers.start(project, concurrency=1)
        echo = project.app.tasks["tasks.echo"]
        checked = []

        @hsettings(max_examples=100, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))
        @given(args=st.lists(msgpack_values(), max_size=4),
               kwargs=st.dictionaries(st.text(), msgpack_values(), max_size=3))
        def round_trip(args, kwargs):
            got_args, got_kwargs = echo.apply_async(args, kwargs).get(timeout=20)
            assert same(args, got_args), (args, got_args)
            assert same(kwargs, got_kwargs), (kwargs, got_kwargs)
            checked.append(args)
        round_trip()
        assert len(checked) >= 50

    def test_fuzzed_envelopes_fail_cleanly_and_the_worker_survives(self, project, workers):
        """Arbitrary bytes, msgpack values and SQLite values as the payload of a registered
        task (fail(message), which fails on any good call too): each row ends FAILURE with
        a message that says what is wrong, and the worker's processes all survive."""
        w = workers.start(project, concurrency=1)
        (child,) = w.children()
        values = msgpack_values()
        envelope_like = st.dictionaries(st.sampled_from(["args", "kwargs", "other"]),
                                        values | st.lists(values, max_size=3), max_size=3)

        def packb(value):
            return msgpack.packb(value, use_bin_type=True, datetime=True)
        payloads = collect(st.binary(max_size=64), 150)
        payloads += [packb(v) for v in collect(values | envelope_like, 150)]
        payloads += [packb(v)[:cut] for v, cut in
                     collect(st.tuples(values | envelope_like, st.integers(0, 200)), 50)
                     if cut < len(packb(v))]
        payloads += collect(st.text(max_size=20) | st.integers(-2**63, 2**63 - 1)
                            | st.floats(allow_nan=False), 30)
        ids = insert_raw(project.db, [("tasks.fail", p) for p in payloads])  # one transaction
        good = project.delay("add", 20, 22)                       # queued after them all
        assert good.get(timeout=60) == 42
        states = dict(sql(project.db, "SELECT id, state FROM tasks"))
        assert collections.Counter(states[i] for i in ids) == {FAILURE: len(ids)}
        wrong, problems = [], collections.Counter()
        for task_id, payload in zip(ids, payloads):
            exc = project.app.AsyncResult(task_id).result
            problem = envelope_problem(payload)
            problems[problem or "valid envelope"] += 1
            if problem:
                ok = type(exc) is ValueError and \
                    str(exc).startswith("invalid task payload: ") and problem in str(exc)
            else:                                 # a bad call, or fail() raising as it should
                ok = isinstance(exc, TypeError) or \
                    (isinstance(exc, RemoteError) and exc.exc_type == "tasks.TaskFailed")
            if not ok:
                wrong.append((payload, problem, exc))
        print(f"{len(payloads)} fuzzed payloads: {dict(problems)}")
        assert not wrong, f"{len(wrong)} unclear failure(s), e.g. {wrong[:3]}"
        # Nothing died: the same supervisor and child, serving.
        assert w.proc.poll() is None and w.live_children() == [child]
        assert project.row(good.id)["pid"] == child["pid"]

    def test_exceptions_that_cannot_be_rebuilt_come_back_as_remote_errors(self, project,
                                                                         workers):
        workers.start(project, concurrency=1)
        cases = {
            project.delay("picky"): ("tasks.Picky", "1-2", "raise Picky(1, 2)"),
            project.delay("fail", "boom"): ("tasks.TaskFailed", "boom",
                                            "raise TaskFailed(message)"),
            project.delay("unprintable"): ("tasks.Unprintable", "<unprintable Unprintable>",
                                           'raise Unprintable("hidden")'),
            project.delay("unencodable_error"): ("tasks.TaskFailed", "{1, 2}",
                                                 "raise TaskFailed({1, 2})"),
        }
        for r, (exc_type, message, line) in cases.items():
            exc = r.get(timeout=20, propagate=False)
            assert isinstance(exc, RemoteError), exc
            assert (exc.exc_type, exc.exc_message) == (exc_type, message)
            assert str(exc) == f"{exc_type}: {message}"
            assert "Traceback" in exc.remote_traceback and line in exc.remote_traceback
            assert r.state == FAILURE and r.traceback == exc.remote_traceback
            with pytest.raises(RemoteError):                     # never hidden
                r.get(timeout=5)
        # A reader that has imported tasks.py rebuilds the types it can, and only those.
        ids = [r.id for r in cases]
        out = json.loads(python(READ_ERRORS, project.dir, *ids))
        assert [out[i]["type"] for i in ids] == [
            "litequeue.RemoteError", "tasks.TaskFailed", "tasks.Unprintable",
            "litequeue.RemoteError"]
        assert out[ids[0]]["exc_type"] == "tasks.Picky"              # constructor refused
        assert out[ids[3]]["exc_message"] == "{1, 2}"                # args not stored
        assert all(out[i]["traceback"] for i in ids)


# Periodic definitions for the scheduler tests; each test writes its own beat.py.
BEAT_SOURCE = task_source("beat.py")


class TestScheduler:
    """ETA, expiry and periodic tasks with real worker supervisors."""

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

    def test_expired_tasks_never_run(self, project, workers):
        stamp = project.app.tasks["tasks.stamp"]
        # No worker yet: one expires while it waits, one while it is scheduled.
        waiting = stamp.apply_async(["waiting"], expires=1.0)
        scheduled = stamp.apply_async(["scheduled"], countdown=0.5, expires=1.0)
        wait_until(lambda: waiting.state == scheduled.state == EXPIRED, 10,
                   lambda: f"both to read EXPIRED ({waiting.state}, {scheduled.state})")
        with pytest.raises(TaskRevoked):
            waiting.get(timeout=5)
        workers.start(project, concurrency=1)
        past = stamp.apply_async(["past"], expires=dt.datetime.now(UTC) - dt.timedelta(seconds=1))
        later = stamp.apply_async(["later"], expires=60)
        assert later.get(timeout=10) > 0                              # the worker runs
        expired = [waiting, scheduled, past]

        def marked():
            return [project.state(r.id) for r in expired]
        # The worker meets each expired row and marks it, without running it.
        wait_until(lambda: marked() == [EXPIRED] * 3, 10, lambda: f"rows marked ({marked()})")
        for r in expired:
            assert r.state == EXPIRED
            with pytest.raises(TaskRevoked, match="expired"):
                r.get(timeout=5)
            assert r.get(timeout=5, propagate=False) is None
            assert project.row(r.id)["result"] is None
        assert [p.name for p in project.marks.glob("stamp.*")] == ["stamp.later"]

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


# Slack allowed between a retry's due time and its next run starting: the supervisor
# promotes the row when it is due and rings a child, which claims it (about 1 ms idle).
RETRY_LATENESS_MAX = 0.25


def error_lines(errors):
    """(type, message) of each entry of an error history."""
    return [(e["type"], e["message"]) for e in errors]


class TestFailures:
    """Retries, time limits, revoke and worker hygiene, with real workers and signals."""

    # -- retries ----------------------------------------------------------------------------

    def test_autoretry_follows_the_backoff_schedule_then_fails(self, project, workers):
        """flaky: autoretry_for=(IOError,), max_retries=3, retry_backoff=0.2, no jitter:
        runs at about 0, 0.2, 0.6 and 1.4 s, then FAILURE with the last exception."""
        workers.start(project, concurrency=1)
        r = project.delay("flaky", "always", 99)
        exc = r.get(timeout=20, propagate=False)
        assert (r.state, r.retries) == (FAILURE, 3)
        assert type(exc) is OSError and str(exc) == "always failed on retry 3"
        with pytest.raises(OSError, match="always failed on retry 3"):
            r.get(timeout=5)
        errors = r.errors
        assert error_lines(errors) == [("builtins.OSError", f"always failed on retry {n}")
                                       for n in range(4)]
        assert [e["attempt"] for e in errors] == [1, 2, 3, 4]
        runs = project.runs("always")
        assert [run[0] for run in runs] == [0, 1, 2, 3]   # self.request.retries in the task
        # Timing against the schedule: each run starts backoff seconds after the error
        # before it, plus the worker's lateness.
        backoff = [0.2, 0.4, 0.8]
        lateness = [runs[n + 1][3] - errors[n]["time"] - backoff[n] for n in range(3)]
        offsets = [e["time"] - errors[0]["time"] for e in errors]
        print(f"retry lateness (s) against backoff 0.2/0.4/0.8: "
              f"{', '.join(f'{late:+.4f}' for late in lateness)}; error times at "
              f"{', '.join(f'{o:.3f}' for o in offsets)} s (schedule 0, 0.2, 0.6, 1.4)")
        assert all(0 <= late < RETRY_LATENESS_MAX for late in lateness), lateness
        for offset, due in zip(offsets, [0, 0.2, 0.6, 1.4]):
            assert due <= offset < due + 3 * RETRY_LATENESS_MAX, offsets

    def test_retry_jitter_stays_within_the_capped_backoff(self, project, workers):
        """jittery: retry_backoff=True (1, 2, 4 s), retry_backoff_max=0.5, full jitter:
        every countdown is random in [0, 0.5]."""
        workers.start(project, concurrency=1)
        results = [project.delay("jittery", f"j{n}") for n in range(3)]
        delays = []
        for n, r in enumerate(results):
            assert isinstance(r.get(timeout=30, propagate=False), OSError)
            assert (r.state, r.retries) == (FAILURE, 3)
            runs, errors = project.runs(f"j{n}"), r.errors
            assert len(runs) == len(errors) == 4
            delays += [runs[i + 1][3] - errors[i]["time"] for i in range(3)]
        print(f"jittered retry delays (s), cap 0.5: {sorted(round(d, 3) for d in delays)}")
        assert all(0 <= d < 0.5 + RETRY_LATENESS_MAX for d in delays), delays
        assert len({round(d, 2) for d in delays}) > 1, "no jitter at all"

    def test_bound_retry_with_countdown_reads_retry_while_it_waits(self, project, workers):
        workers.start(project, concurrency=1)
        r = project.delay("retrier", "bound", 2, 0.6)
        wait_until(lambda: r.state == RETRY, 10, lambda: f"RETRY (state {r.state})")
        assert not r.ready() and r.result is None
        row = project.row(r.id)
        assert (row["retries"], row["worker"] is not None) == (1, True)
        # self.request.retries counted the retries; Retry passed `except LitequeueError`.
        assert r.get(timeout=20) == 2
        assert (r.state, r.retries) == (SUCCESS, 2)
        runs = project.runs("bound")
        assert [run[0] for run in runs] == [0, 1, 2]
        errors = r.errors
        assert error_lines(errors) == [("tasks.TaskFailed", "bound try 0"),
                                       ("tasks.TaskFailed", "bound try 1")]
        assert errors[0]["time"] < errors[1]["time"] <= time.time()
        for n in range(2):
            assert runs[n + 1][3] - errors[n]["time"] >= 0.6      # the countdown held

    def test_bound_retry_out_of_budget_fails_with_the_last_exception(self, project, workers):
        workers.start(project, concurrency=1)
        with_exc = project.delay("retrier", "exc", 99, 0.01)
        without = project.delay("retrier", "bare", 99, 0.01, with_exc=False)
        exc = with_exc.get(timeout=20, propagate=False)
        # tasks.TaskFailed is not imported here: a stand-in carrying its name and message.
        assert isinstance(exc, RemoteError)
        assert (exc.exc_type, exc.exc_message) == ("tasks.TaskFailed", "exc try 3")
        assert "raise self.retry(exc=TaskFailed" in exc.remote_traceback
        assert (with_exc.state, with_exc.retries, len(with_exc.errors)) == (FAILURE, 3, 4)
        exc = without.get(timeout=20, propagate=False)
        assert isinstance(exc, MaxRetriesExceededError), exc
        assert (without.state, without.retries) == (FAILURE, 3)
        assert without.errors[-1]["type"] == "litequeue.MaxRetriesExceededError"
        assert [e["type"] for e in without.errors[:3]] == ["litequeue.Retry"] * 3
        assert len(project.runs("bare")) == len(project.runs("exc")) == 4

    def test_retry_is_outside_the_error_tree(self):
        assert issubclass(Retry, Exception) and not issubclass(Retry, LitequeueError)
        with pytest.raises(Retry):
            try:
                raise Retry(exc=ValueError("x"), countdown=1)
            except LitequeueError:
                pytest.fail("except LitequeueError caught a Retry")
        for cls in (MaxRetriesExceededError, TimeLimitExceeded, SoftTimeLimitExceeded,
                    WorkerLostError):
            assert issubclass(cls, LitequeueError)

    def test_task_max_retries_applies_when_queued_by_name(self, project, workers):
        workers.start(project, concurrency=1)
        done = lq("call", project.db, "tasks.flaky_max1", "byname", cwd=project.dir)
        assert done.returncode == 0, done.stderr
        r = project.app.AsyncResult(done.stdout.strip())
        assert isinstance(r.get(timeout=20, propagate=False), OSError)
        runs = (project.marks / "runs.byname").read_text().splitlines()
        assert (len(runs), r.retries) == (2, 1)           # max_retries=1: two runs

    def test_a_bad_retry_request_fails_the_task_instead_of_looping(self, project, workers):
        w = workers.start(project, concurrency=1)
        r = project.delay("bad_retry", "bad")
        wait_until(lambda: r.ready() or len(project.runs("bad")) > 4, 30,
                   "the task to finish or loop")
        assert len(project.runs("bad")) <= 4, f"ran {len(project.runs('bad'))} times"
        assert r.state == FAILURE
        assert project.delay("add", 1, 2).get(timeout=20) == 3
        assert w.proc.poll() is None

    # -- time limits ------------------------------------------------------------------------

    def test_hard_time_limit_kills_and_replaces_the_child(self, project, workers):
        w = workers.start(project, concurrency=1)
        (old,) = w.children()
        r = project.delay("hard_limited", "hard")               # time_limit=0.5 on the task
        exc = r.get(timeout=20, propagate=False)
        assert isinstance(exc, TimeLimitExceeded), exc
        assert "hard time limit" in str(exc)
        assert (r.state, r.retries) == (FAILURE, 0)
        assert error_lines(r.errors) == [("litequeue.TimeLimitExceeded", str(exc))]
        ((_, pid),) = project.started("hard")
        assert pid == old["pid"] and not alive(pid)
        assert project.marked("hard.finished.*") == []
        (started_at, finished_at), = sql(project.db, "SELECT started_at, finished_at FROM "
                                         "tasks WHERE id = ?", r.id)
        print(f"hard limit 0.5 s: killed and recorded after {finished_at - started_at:.3f} s")
        assert 0.5 <= finished_at - started_at < 1.5
        # A new child took its place, and the worker keeps serving.
        new = wait_until(lambda: [c for c in w.live_children() if c["pid"] != pid], 10,
                         "a replacement child")
        assert project.delay("add", 2, 2).get(timeout=20) == 4
        assert project.row(project.delay("add", 1, 1).id)["pid"] in (None, new[0]["pid"])
        assert w.proc.poll() is None

    def test_worker_time_limit(self, project, workers):
        w = workers.start(project, "--time-limit", 0.5, concurrency=1)
        slow = project.delay("nap", "slow", 60)
        quick = project.delay("nap", "quick", 0.05)
        assert quick.get(timeout=20) == "quick"
        assert isinstance(slow.get(timeout=20, propagate=False), TimeLimitExceeded)
        assert slow.state == FAILURE and project.marked("slow.finished.*") == []
        ((_, pid),) = project.started("slow")
        wait_until(lambda: len(w.live_children()) == 1 and
                   pid not in [c["pid"] for c in w.live_children()], 10, "a replacement child")
        assert project.delay("add", 3, 3).get(timeout=20) == 6

    def test_time_limit_in_autoretry_for_retries(self, project, workers):
        """limited_retry: time_limit=0.4, autoretry_for=(TimeLimitExceeded,), max_retries=2."""
        w = workers.start(project, concurrency=1)
        recovers = project.delay("limited_retry", "recovers", 2)   # too slow twice, then fast
        assert recovers.get(timeout=30) == "recovers"
        assert (recovers.state, recovers.retries) == (SUCCESS, 2)
        assert [e["type"] for e in recovers.errors] == ["litequeue.TimeLimitExceeded"] * 2
        runs = project.runs("recovers")
        assert [run[0] for run in runs] == [0, 1, 2]
        assert len({run[2] for run in runs}) == 3                 # a new child each time
        never = project.delay("limited_retry", "never", 99)
        assert isinstance(never.get(timeout=30, propagate=False), TimeLimitExceeded)
        assert (never.state, never.retries, len(never.errors)) == (FAILURE, 2, 3)
        assert project.marked("*.finished.*") == ["recovers.finished." + str(runs[2][2])]
        assert len(w.live_children()) == 1 and w.proc.poll() is None

    def test_time_limit_retry_reads_retry_while_it_waits(self, project, workers):
        workers.start(project, concurrency=1)
        r = project.delay("limited_retry", "waits", 1)
        seen = set()

        def finished():
            seen.add(r.state)
            return r.ready()
        wait_until(finished, 30, "the task to finish", interval=0.005)
        assert RETRY in seen and r.state == SUCCESS, seen

    def test_time_limit_retry_runs_on_its_backoff_schedule(self, project, workers):
        workers.start(project, concurrency=1)
        r = project.delay("limited_retry", "schedule", 2)      # backoff 0.1 s, then 0.2 s
        assert r.get(timeout=30) == "schedule"
        runs, errors = project.runs("schedule"), r.errors
        lateness = [runs[n + 1][3] - errors[n]["time"] - 0.1 * 2 ** n for n in range(2)]
        print(f"retry lateness after a time-limit kill (s): {lateness}")
        assert all(0 <= late < RETRY_LATENESS_MAX for late in lateness), lateness

    @pytest.mark.parametrize("where", ["task", "worker"])
    def test_soft_time_limit_lets_the_task_clean_up(self, project, workers, where):
        if where == "task":
            w = workers.start(project, concurrency=1)
            name, task = "soft", "soft_limited"                    # soft_time_limit=0.3
        else:
            w = workers.start(project, "--soft-time-limit", 0.3, "--time-limit", 10,
                              concurrency=1)
            name, task = "wsoft", "cleans_up"
        (child,) = w.children()
        started = time.monotonic()
        r = project.delay(task, name)
        assert r.get(timeout=20) == f"{name} cleaned up"
        assert 0.3 <= time.monotonic() - started < 5
        assert (r.state, r.retries, r.errors) == (SUCCESS, 0, [])
        assert project.marked(f"{name}.cleaned.*") == [f"{name}.cleaned.{child['pid']}"]
        assert project.marked(f"{name}.finished.*") == []
        # The same child ran it and is still serving: a soft limit kills nothing.
        assert w.live_children() == [child]
        assert project.delay("add", 1, 1).get(timeout=20) == 2
        if where == "worker":
            # A task that does not catch it fails with SoftTimeLimitExceeded.
            r = project.delay("nap", "uncaught", 60)
            assert isinstance(r.get(timeout=20, propagate=False), SoftTimeLimitExceeded)
            assert r.state == FAILURE and "soft time limit" in str(r.result)
            assert w.live_children() == [child]

    # -- revoke -----------------------------------------------------------------------------

    def test_revoked_queued_tasks_never_run(self, project, workers):
        stamp = project.app.tasks["tasks.stamp"]
        # No worker running yet.
        queued = stamp.delay("queued")
        assert queued.revoke() is True
        assert (queued.state, queued.ready(), queued.result) == (REVOKED, True, None)
        with pytest.raises(TaskRevoked, match="revoked"):
            queued.get(timeout=5)
        assert queued.get(timeout=5, propagate=False) is None
        assert queued.revoke() is False                  # nothing left to revoke
        w = workers.start(project, concurrency=1)
        # A queue nobody serves yet.
        elsewhere = stamp.apply_async(["elsewhere"], queue="other")
        assert stamp.delay("later").get(timeout=20) > 0  # queued after `queued`: FIFO
        assert elsewhere.state == PENDING and elsewhere.revoke() is True
        workers.start(project, "-Q", "other", concurrency=1)
        assert stamp.apply_async(["probe"], queue="other").get(timeout=20) > 0
        assert [queued.state, elsewhere.state] == [REVOKED, REVOKED]
        assert project.stamps("queued") == project.stamps("elsewhere") == []
        assert project.row(queued.id)["attempt"] == project.row(elsewhere.id)["attempt"] == 0
        assert w.proc.poll() is None

    def test_revoked_scheduled_and_retrying_tasks_never_run(self, project, workers):
        workers.start(project, concurrency=1)
        stamp = project.app.tasks["tasks.stamp"]
        scheduled = stamp.apply_async(["scheduled"], countdown=0.5)
        retrying = project.delay("retrier", "waiting", 5, 0.5)
        wait_until(lambda: retrying.state == RETRY, 10, "the retry to wait")
        assert scheduled.state == SCHEDULED
        assert scheduled.revoke() is True and retrying.revoke() is True
        (eta,), = sql(project.db, "SELECT max(eta) FROM tasks WHERE id IN (?, ?)",
                      scheduled.id, retrying.id)
        # A task due after both: once it has run, the scheduler went past their ETAs.
        after = stamp.apply_async(["after"], eta=dt.datetime.fromtimestamp(eta + 0.2, UTC))
        assert after.get(timeout=20) >= eta
        assert [scheduled.state, retrying.state] == [REVOKED, REVOKED]
        assert project.stamps("scheduled") == []
        assert len(project.runs("waiting")) == 1         # the first run only
        for r in (scheduled, retrying):
            with pytest.raises(TaskRevoked):
                r.get(timeout=5)

    def test_revoke_terminate_kills_and_replaces_the_child(self, project, workers):
        w = workers.start(project, concurrency=2)
        r = project.delay("nap", "victim", 30)
        ((_, pid),) = wait_until(lambda: project.started("victim"), 10, "the task to start")
        (other,) = [c["pid"] for c in w.children() if c["pid"] != pid]
        # Without terminate a running task is left to finish, as in Celery.
        assert r.revoke() is False and r.state == STARTED
        revoked_at = time.monotonic()
        assert r.revoke(terminate=True) is True
        assert r.state == REVOKED
        wait_until(lambda: not alive(pid), 5, "the child to be killed")
        killed = time.monotonic() - revoked_at
        new = wait_until(lambda: [c["pid"] for c in w.live_children() if c["pid"] != other
                                  and c["pid"] != pid], 5, "a replacement child")
        replaced = time.monotonic() - revoked_at
        print(f"revoke(terminate=True): child killed after {killed * 1000:.0f} ms, "
              f"replaced after {replaced * 1000:.0f} ms")
        assert replaced < 1.5
        assert alive(other) and len(new) == 1
        # The process is dead, so the rest of the task never happens, and nobody reruns it.
        assert project.delay("add", 2, 3).get(timeout=20) == 5
        assert project.marked("victim.finished.*") == []
        assert project.started("victim") == [(1, pid)]
        row = project.row(r.id)
        assert (row["state"], row["result"], row["retries"]) == (REVOKED, None, 0)
        with pytest.raises(TaskRevoked):
            r.get(timeout=5)
        assert w.proc.poll() is None

    @pytest.mark.parametrize("terminate", [False, True])
    def test_revoke_of_a_prefetched_task_drops_it_and_kills_nothing(self, project, workers,
                                                                    terminate):
        """A row a child claimed in a batch but has not started (it reads STARTED) is
        revoked and never runs, with or without terminate; the task the child is running
        is left alone, and a plain revoke() of it is refused. Batches grow 1, 2, 4, 8, 16
        rows while tasks are fast, so a slow task at position 20 shares a batch with the
        one after it."""
        w = workers.start(project, concurrency=1)
        (child,) = w.children()
        record = project.app.tasks["tasks.record"]
        prefetched = 0
        for round_ in range(3):
            project.delay("block", f"gate{round_}")
            wait_until(lambda: project.started(f"gate{round_}"), 10, "the gate to start")
            before = [record.delay(n) for n in range(20)]
            mid = project.delay("block", f"mid{round_}")
            target = project.delay("stamp", f"target{round_}")
            after = [record.delay(n) for n in range(20, 30)]
            project.go(f"gate{round_}")
            wait_until(lambda: project.started(f"mid{round_}"), 10, "the slow task to start")
            prefetched += project.state(target.id) == STARTED
            assert mid.revoke() is False                       # running: left to finish
            assert target.revoke(terminate=terminate) is True
            project.go(f"mid{round_}")
            assert mid.get(timeout=20) == f"mid{round_}" and mid.state == SUCCESS
            assert [r.get(timeout=20) for r in before + after] == list(range(30))
            assert target.state == REVOKED and project.stamps(f"target{round_}") == []
            assert w.live_children() == [child]                # nothing was killed
            if prefetched:
                break
        print(f"the target was prefetched in round {round_ + 1} of 3" if prefetched else
              "the target was never prefetched")
        assert prefetched, "the target was never in a prefetched batch"

    def test_revokes_racing_fast_tasks_never_let_a_revoked_task_run(self, project, workers):
        """While two children drain 3 000 fast tasks in batches, the producer revokes
        one of the last 30 it queued after every third delay(). Whatever the timing,
        revoke() returning True means the task never ran and reads REVOKED; False means it
        had begun or finished, and it ends SUCCESS, run once."""
        workers.start(project, concurrency=2)
        record = project.app.tasks["tasks.record"]
        rng = random.Random(4)
        results, outcome, seen_started = [], {}, 0
        for n in range(3000):
            results.append(record.delay(n))
            if n % 3 == 0 and n >= 30:
                r = results[n - rng.randrange(1, 30)]
                if r.id not in outcome:
                    before = project.state(r.id)
                    outcome[r.id] = r.revoke()
                    seen_started += before == STARTED and outcome[r.id]
        wait_until(lambda: all(r.ready() for r in results), 60, "every task to end")
        ledger = project.ledger()
        revoked = [task_id for task_id, done in outcome.items() if done]
        refused = [task_id for task_id, done in outcome.items() if not done]
        print(f"racing revokes: {len(revoked)} revoked ({seen_started} read STARTED just "
              f"before), {len(refused)} refused (running or finished)")
        assert revoked and refused, "the revokes never raced the children"
        assert [task_id for task_id in revoked if ledger[task_id]] == []
        assert {project.state(task_id) for task_id in revoked} == {REVOKED}
        others = [r.id for r in results if not outcome.get(r.id)]
        assert {project.state(task_id) for task_id in others} == {SUCCESS}
        assert {ledger[task_id] for task_id in others} == {1}

    # -- worker hygiene ---------------------------------------------------------------------

    def test_max_tasks_per_child_replaces_children_and_loses_nothing(self, project, workers):
        w = workers.start(project, "--max-tasks-per-child", 3, concurrency=2)
        first = {c["pid"] for c in w.children()}
        record = project.app.tasks["tasks.record"]
        results = [record.delay(n) for n in range(40)]
        assert [r.get(timeout=60) for r in results] == list(range(40))
        assert all(r.retries == 0 for r in results)
        assert set(project.ledger().values()) == {1}           # each ran exactly once
        per_child = {path.name: len(path.read_text().splitlines())
                     for path in project.marks.glob("ledger.*")}
        assert max(per_child.values()) <= 3, per_child
        assert len(per_child) >= 14, per_child
        wait_until(lambda: len(w.live_children()) == 2 and
                   not first & {c["pid"] for c in w.live_children()}, 15,
                   "two fresh children")
        assert "ran 3 tasks: replacing it" in w.log_text()
        assert project.delay("add", 1, 2).get(timeout=20) == 3
        assert w.proc.poll() is None

    @staticmethod
    def _fresh_child_kib(project, workers):
        """Resident KiB of a fresh child that has run one task (a worker without limits,
        stopped again)."""
        probe = workers.start(project, concurrency=1)
        assert project.delay("add", 0, 0).get(timeout=20) == 0
        (child,) = probe.children()
        with open(f"/proc/{child['pid']}/statm") as f:
            kib = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
        probe.signal(signal.SIGTERM)
        assert probe.wait(20) == 0
        return kib

    def test_max_memory_per_child_replaces_a_child_that_grew(self, project, workers):
        fresh = self._fresh_child_kib(project, workers)
        limit = fresh + 40 * 1024
        w = workers.start(project, "--max-memory-per-child", limit, concurrency=1)
        (child,) = w.children()
        small = [project.delay("add", n, n) for n in range(10)]
        assert [r.get(timeout=20) for r in small] == [2 * n for n in range(10)]
        assert {project.row(r.id)["pid"] for r in small} == {child["pid"]}
        assert project.delay("hog", 60).get(timeout=20) == child["pid"]
        wait_until(lambda: not alive(child["pid"]), 10, "the grown child to be replaced")
        after = project.delay("add", 1, 1)
        assert after.get(timeout=20) == 2
        assert project.row(after.id)["pid"] != child["pid"]
        print(f"fresh child {fresh} KiB; limit {limit} KiB; replaced after hog(60 MiB)")
        assert "KiB (limit" in w.log_text() and "is below a fresh child" not in w.log_text()
        assert w.proc.poll() is None

    def test_memory_limit_below_a_fresh_child_does_not_respawn_in_a_loop(self, project,
                                                                         workers):
        w = workers.start(project, "--max-memory-per-child", 1000, concurrency=1)
        (child,) = w.children()
        results = [project.delay("add", n, 1) for n in range(30)]
        assert [r.get(timeout=20) for r in results] == [n + 1 for n in range(30)]
        # One child ran them all; it was not replaced after each task.
        assert {project.row(r.id)["pid"] for r in results} == {child["pid"]}
        assert w.live_children() == [child]
        log = w.log_text()
        assert log.count("max memory per child 1000 KiB is below a fresh child's") == 1, log
        # The allowance it got instead (1.5 times its start size) still applies.
        assert project.delay("hog", 80).get(timeout=20) == child["pid"]
        wait_until(lambda: not alive(child["pid"]), 10, "the grown child to be replaced")
        assert project.delay("add", 2, 2).get(timeout=20) == 4
        assert w.proc.poll() is None

    # -- bounded storage --------------------------------------------------------------------

    @pytest.mark.slow
    @pytest.mark.timeout(300)
    def test_storage_stays_bounded_over_200_000_tasks(self, project, workers, request):
        """10 waves of 20 000 tasks, result_expires=3 s, one worker with 2 children: the
        supervisor prunes and vacuums as it goes, so the file and the -wal stay small.

        Each wave is inserted with apsw in one transaction (the columns and msgpack
        envelope delay() writes), then one delay() rings the workers: delay() commits
        one row at a time, about 2 800/s while two children drain here, which would
        spend some 70 s on enqueueing alone. The enqueue path has its own tests."""
        bound = 20 * 1024 * 1024                    # for the file and for the -wal alike
        waves, per_wave, expires = 10, 20_000, 3
        w = workers.start(project, concurrency=2, loglevel="WARNING",
                          settings={"result_expires": expires})
        add = project.app.tasks["tasks.add"]
        wal = project.db + "-wal"
        peak = {"db": 0, "wal": 0}
        peak_lock = threading.Lock()

        def sizes():
            now = {"db": os.path.getsize(project.db),
                   "wal": os.path.getsize(wal) if os.path.exists(wal) else 0}
            with peak_lock:
                for key in peak:
                    peak[key] = max(peak[key], now[key])
            return now

        # The -wal can grow by 100 MiB/s here: look at it every 2 ms, not only at each poll.
        sampling = threading.Event()

        def sample():
            while not sampling.wait(0.002):
                with contextlib.suppress(FileNotFoundError):
                    sizes()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        request.addfinalizer(lambda: (sampling.set(), sampler.join()))

        def unfinished():
            return sql(project.db, "SELECT (SELECT count(*) FROM tasks WHERE state = 'PENDING')"
                       " + (SELECT count(*) FROM tasks WHERE state = 'STARTED')")[0][0]

        started = time.monotonic()
        first_wave = []
        for wave in range(waves):
            # Pacing, not waiting for a state: a wave every `expires` seconds or so, so that
            # finished rows of about two waves are retained at any time.
            wait_until(lambda: time.monotonic() >= started + wave * (expires + 0.5),
                       expires + 1, "the next wave's start")
            conn = apsw.Connection(project.db, flags=apsw.SQLITE_OPEN_READWRITE)
            try:
                conn.set_busy_timeout(30_000)
                rows = [(litequeue._new_id(), "tasks.add",
                         litequeue._pack_envelope("tasks.add", (n, wave), {}), time.time())
                        for n in range(per_wave - 1)]
                with conn:
                    conn.executemany("INSERT INTO tasks (id, name, payload, created_at) "
                                     "VALUES (?, ?, ?, ?)", rows)
            finally:
                conn.close()
            last = add.delay(per_wave - 1, wave)                      # rings the workers
            if wave == 0:
                first_wave = [row[0] for row in rows[:100]] + [last.id]
            assert last.get(timeout=60) == per_wave - 1 + wave
            wait_until(lambda: unfinished() == 0, 60, "the wave to be done")
            print(f"wave {wave}: done at {time.monotonic() - started:.1f} s; now {sizes()}")
        drained = time.monotonic() - started
        failed = sql(project.db, "SELECT count(*) FROM tasks WHERE state != 'SUCCESS'")[0][0]
        assert failed == 0

        def left():
            return sql(project.db, "SELECT count(*) FROM tasks")[0][0]
        wait_until(lambda: left() == 0, 30, lambda: f"pruning to catch up ({left()} rows left)")
        pruned = time.monotonic() - started
        # The vacuum that follows the last prune, and a checkpoint after it.
        final = wait_until(lambda: (lambda s: s["db"] < 2 * 1024 * 1024 and s)(sizes()), 10,
                           lambda: f"the file to shrink ({sizes()})")
        mib = 1024 * 1024
        print(f"storage: {waves * per_wave} tasks in {drained:.1f} s, all pruned after "
              f"{pruned:.1f} s; peak file {peak['db'] / mib:.2f} MiB, peak -wal "
              f"{peak['wal'] / mib:.2f} MiB; final file {final['db'] / mib:.2f} MiB, "
              f"-wal {final['wal'] / mib:.2f} MiB (bound {bound / mib:.0f} MiB)")
        assert peak["db"] < bound, peak
        assert peak["wal"] < bound, peak
        assert sql(project.db, "PRAGMA integrity_check") == [("ok",)]
        for task_id in first_wave:
            assert project.app.AsyncResult(task_id).state == UNKNOWN
        with pytest.raises(TaskNotFound):
            project.app.AsyncResult(first_wave[-1]).get(timeout=5)
        assert w.proc.poll() is None and len(w.live_children()) == 2


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


#
# A negative check ("X never happens") waits for a positive event that proves the system
# has moved past the point where X would have happened: a canary task queued after the
# bad row has succeeded, or a task of a dead worker has been rescued, which proves a
# rescue pass ran.

NOBODY = 65534          # uid (and gid) of "another user"


ZEN = "Beautiful is better than ugly"


def sql_many(db, query, rows):
    """executemany in one transaction, on a fresh apsw connection."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        conn.set_busy_timeout(30_000)
        with conn:
            conn.executemany(query, rows)
    finally:
        conn.close()


def task_count(db):
    return sql(db, "SELECT count(*) FROM tasks")[0][0]


def insert_worker(db, worker_id, pid=999999, parent=None):
    """A workers row as a foreign writer (or an attacker with write access) would put
    there. pid_max is far below 999999 here, so the pid is dead."""
    sql(db, "INSERT INTO workers (id, parent, hostname, pid, queues, concurrency, started_at) "
            "VALUES (?, ?, 'x', ?, 'default', 1, 0)", worker_id, parent, pid)


def insert_started(db, worker_id, name="tasks.add", args=(20, 22)):
    """A STARTED row claimed by worker_id. Returns its id."""
    task_id = str(uuid.uuid4())
    sql(db, "INSERT INTO tasks (id, name, payload, state, attempt, worker, pid, started_at) "
            "VALUES (?, ?, ?, 'STARTED', 1, ?, 999999, 0)",
        task_id, name, pack({"args": list(args)}), worker_id)
    return task_id


def prove_rescue_passes(project, w, rounds=2):
    """Wait until the worker has run complete rescue passes over the workers table.

    Each round registers a dead worker with a well-formed id (12 hex digits, no lock
    file) holding a STARTED task, and waits until that task was requeued and SUCCEEDED.
    A pass handles every row of the table in one go, so once the task of round 2 has
    been rescued, the pass that rescued round 1 has finished: every row present before
    round 1 has been through a whole pass."""
    for _ in range(rounds):
        dead = secrets.token_hex(6)
        insert_worker(project.db, dead)
        task_id = insert_started(project.db, dead)
        wait_until(lambda: project.state(task_id) == SUCCESS, 20,
                   lambda: f"the task of dead worker {dead} rescued and run "
                           f"(state {project.state(task_id)})\nlog:\n{w.log_text()}")
    assert w.proc.poll() is None, w.log_text()


def error_text(row_result, traceback):
    """What a user reads about a failure: the stored error map and the traceback."""
    text = ""
    if isinstance(row_result, bytes):
        try:
            text += repr(msgpack.unpackb(row_result, raw=False, strict_map_key=False))
        except Exception:
            text += repr(row_result)
    return text + "\n" + (traceback or "")


def lq_ok(*args, cwd):
    done = lq(*args, cwd=cwd)
    assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done


@contextlib.contextmanager
def spy_socket(directory, name="spy"):
    """A datagram socket bound in a wake-up directory, as a sleeper would be: every
    ring of that directory leaves a datagram in it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.path.join(directory, name)
    try:
        sock.bind(path)
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)


def rang(sock):
    """True if anything rang the spy (delay() rings before it returns)."""
    try:
        sock.recv(64)
        return True
    except BlockingIOError:
        return False


def old_temp_side_dir(db):
    """Where the released code put the sockets of a deep database path."""
    real = os.path.realpath(db)
    digest = hashlib.blake2b(real.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return os.path.join(os.environ.get("TMPDIR", "/tmp"), "litequeue-" + digest)


def private_dir(path):
    """mkdir with mode 0o700 (what litequeue itself creates), whatever the umask."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def run_without_dac(cmd, cwd, timeout=60):
    """run() as root without the capabilities that let root ignore file permissions:
    a directory mode 0o555 stops it as it stops any user."""
    return run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--", *cmd],
               cwd=cwd, timeout=timeout)


@pytest.fixture
def short_tmp(tmp_path):
    """tmp_path seen through a short alias (a symlink /tmp/lqh-XXXXXXXX), so that the
    socket paths beside a database in it fit in sun_path's 107 bytes. The released code
    put the sockets of deeper databases in the temp dir instead, so without the alias it
    would never touch the side directories these tests booby-trap."""
    alias = Path(os.environ.get("TMPDIR", "/tmp")) / f"lqh-{secrets.token_hex(4)}"
    alias.symlink_to(tmp_path)
    try:
        yield alias
    finally:
        alias.unlink()


@pytest.fixture
def near_project(short_tmp):
    """A Project (tasks.py, jobs.sqlite) under the short alias."""
    return Project(short_tmp / "proj")


class TestSideDirectory:

    @pytest.mark.parametrize("link", ["work", "side"])
    def test_delay_does_not_follow_a_symlinked_side_directory(self, short_tmp, link):
        tmp_path = short_tmp
        db = tmp_path / "x.sqlite"
        victim = tmp_path / "victim"
        if link == "work":
            before = make_victim(victim)
            private_dir(tmp_path / "x.sqlite-lq")
            (tmp_path / "x.sqlite-lq" / "work").symlink_to(victim)
        else:
            before = make_victim(victim / "work")
            (tmp_path / "x.sqlite-lq").symlink_to(victim)
        before = files_in(victim)
        app = stand_in_app(db)
        r = app.tasks["tasks.add"].delay(1, 2)
        assert files_in(victim) == before
        # The task was queued all the same.
        assert sql(db, "SELECT state FROM tasks WHERE id = ?", r.id) == [(PENDING,)]

    def test_deep_path_never_rings_into_the_old_temp_directory(self, tmp_path):
        proj = Project(tmp_path / ("d" * 100))
        assert len(proj.db + "-lq/work/") > 107
        old = old_temp_side_dir(proj.db)
        assert not os.path.lexists(old), f"{old} exists before the test"
        victim = tmp_path / "victim"
        try:
            before = make_victim(victim)
            os.makedirs(old)
            os.symlink(victim, os.path.join(old, "work"))
            r = proj.delay("add", 1, 2)
            assert files_in(victim) == before
            assert sql(proj.db, "SELECT state FROM tasks WHERE id = ?", r.id) == [(PENDING,)]
        finally:
            shutil.rmtree(old, ignore_errors=True)

    def test_deep_path_worker_keeps_its_sockets_beside_the_database(self, tmp_path, workers):
        proj = Project(tmp_path / ("d" * 100))
        old = old_temp_side_dir(proj.db)
        assert not os.path.lexists(old), f"{old} exists before the test"
        try:
            workers.start(proj, concurrency=1)
            assert proj.delay("add", 2, 2).get(timeout=10) == 4
            work = proj.db + "-lq/work"
            assert os.path.isdir(work) and os.listdir(work), \
                f"no worker socket in {work}: {os.listdir(proj.db + '-lq') if os.path.isdir(proj.db + '-lq') else 'no side dir'}"
            assert not os.path.lexists(old), f"the worker used {old}"
        finally:
            workers.reap()
            shutil.rmtree(old, ignore_errors=True)

    def test_regular_files_in_the_socket_directories_are_never_deleted(self, near_project, workers):
        project = near_project
        side = private_dir(project.db + "-lq")
        work, done = private_dir(side / "work"), private_dir(side / "done")
        task_id = "decoy-task"
        # Names a ring of this task's waiters would match (the waiter prefix is a hash of
        # the task id), and names no prefix would.
        prefix = hashlib.blake2b(task_id.encode(), digest_size=5).hexdigest()
        for d in (work, done):
            for name in (f"{prefix}.1.2.3", "notes.txt", "zzz"):
                (d / name).write_text(f"not a socket: {name}\n")
        decoys = lambda: (files_in(work), files_in(done))
        before = decoys()
        add = project.app.tasks["tasks.add"]
        add.delay(1, 1)                                  # rings work/ with no worker
        assert decoys() == before
        workers.start(project, concurrency=1)
        assert add.apply_async((2, 3), task_id=task_id).get(timeout=10) == 5   # rings done/
        assert [add.delay(i, i).get(timeout=10) for i in range(5)] == [0, 2, 4, 6, 8]
        assert decoys() == before

    def test_side_directory_and_its_subdirectories_are_private(self, near_project, workers):
        project = near_project
        workers.start(project, concurrency=1)
        assert project.delay("add", 2, 2).get(timeout=10) == 4
        side = Path(project.db + "-lq")
        dirs = [side] + [p for p in side.iterdir() if p.is_dir()]
        assert {p.name for p in dirs} >= {side.name, "work", "done", "locks"}, dirs
        modes = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in dirs}
        assert set(modes.values()) == {"0o700"}, modes

    @pytest.mark.parametrize("unsafe", ["foreign_owner", "world_writable", "group_writable",
                                        "symlink", "regular_file", "symlinked_work"])
    def test_unsafe_side_directory_is_refused(self, near_project, workers, tmp_path, unsafe):
        project = near_project
        if unsafe == "foreign_owner":
            need_root()
        create_db(project)
        side = Path(project.db + "-lq")
        shutil.rmtree(side, ignore_errors=True)
        spy_dir = None
        if unsafe in ("foreign_owner", "world_writable", "group_writable"):
            spy_dir = private_dir(side / "work")
            if unsafe == "foreign_owner":
                os.chown(side, NOBODY, NOBODY)
            else:
                side.chmod(0o777 if unsafe == "world_writable" else 0o770)
        elif unsafe == "symlink":
            target = private_dir(tmp_path / "elsewhere")
            spy_dir = private_dir(target / "work")
            side.symlink_to(target)
        elif unsafe == "regular_file":
            side.write_text("not a directory\n")
        else:
            private_dir(side)
            spy_dir = private_dir(tmp_path / "elsewhere-work")
            (side / "work").symlink_to(spy_dir)
        with spy_socket(spy_dir) if spy_dir else contextlib.nullcontext() as spy:
            # A producer still queues: the row is committed, without a ring.
            r = project.delay("add", 1, 2)
            assert project.state(r.id) == PENDING
            if spy is not None:
                assert not rang(spy), "delay() rang through an unsafe side directory"
        # The worker refuses to run, with one line naming the side directory.
        w = workers.start(project, concurrency=1, ready=False)
        code = w.wait(30)
        assert code != 0, w.log_text()
        text = w.log_text()
        assert "Traceback" not in text, text
        lines = log_lines(text)
        assert len(lines) == 1 and "-lq" in lines[0], text
        assert project.state(r.id) == PENDING

    def test_producer_with_a_refused_side_directory_still_gets_results(self, near_project, workers):
        """A worker is running; then the side directory turns foreign. A new producer
        neither rings nor binds there, yet its task runs (the worker's fallback poll) and
        get() sees the result (its own fallback poll). (Passes on the released code too:
        it guards the refusal against breaking producers.)"""
        project = near_project
        need_root()
        workers.start(project, concurrency=1)
        assert project.delay("add", 1, 1).get(timeout=10) == 2
        os.chown(project.db + "-lq", NOBODY, NOBODY)
        out = producer(textwrap.dedent(f"""
            from litequeue import LiteQueue
            app = LiteQueue({project.db!r})
            print(app.send_task("tasks.add", (20, 22)).get(timeout=20))
        """), project.dir)
        assert out == "42\n"


LATE_MODULE = task_source("late.py")


class TestRegistryImport:

    @pytest.mark.parametrize("module", ["this.x", "venv.__main__.x", "pip.__main__.x",
                                        "antigravity.x"])
    def test_registry_never_imports_modules_outside_the_project(self, project, workers,
                                                               tmp_path, monkeypatch, module):
        marks = project.marks
        browser = tmp_path / "browser.sh"
        browser.write_text(f"#!/bin/sh\ntouch {marks / 'browser-opened'}\n")
        browser.chmod(0o755)
        monkeypatch.setenv("BROWSER", str(browser))       # what antigravity would open
        monkeypatch.setenv("PYTHONUNBUFFERED", "1")        # a print shows up at once
        create_db(project)
        sql(project.db, "INSERT INTO registry (name, module, updated_at) VALUES (?, ?, ?)",
            module + ".t", module, time.time())
        w = workers.start(project, concurrency=1)
        (bad,) = insert_raw(project.db, [(module + ".t", pack({}))])
        wait_until(lambda: project.state(bad) == FAILURE, 20,
                   lambda: f"{module}.t to fail\n{w.log_text()}")
        assert_canary(project, w)
        # A module registered after the worker started is still found under its directory.
        project.write_module("late", LATE_MODULE)
        assert producer("from late import triple; print(triple.delay(5).get(timeout=20))",
                        project.dir) == "15\n"
        w.signal(signal.SIGTERM)
        assert w.wait(20) == 0, w.log_text()
        text = w.log_text()
        assert ZEN not in text, text
        assert not list(project.dir.rglob("pyvenv.cfg")), list(project.dir.rglob("pyvenv.cfg"))
        assert not (project.dir / "bin").exists()
        assert not (marks / "browser-opened").exists(), "a browser was opened"

    @pytest.mark.parametrize("module", [b"\x00\x01", 42], ids=["blob", "integer"])
    def test_registry_row_of_another_type_does_not_stop_the_worker(self, project, workers,
                                                                  module):
        create_db(project)
        sql(project.db, "INSERT INTO registry (name, module, updated_at) VALUES (?, ?, ?)",
            "odd.t", module, time.time())
        w = workers.start(project, concurrency=1)
        (bad,) = insert_raw(project.db, [("odd.t", pack({}))])
        assert_canary(project, w)
        wait_until(lambda: project.state(bad) == FAILURE, 10, "odd.t to fail")

    def test_only_the_worker_s_own_directory_counts_not_a_venv_inside_it(
            self, tmp_path, monkeypatch):
        """A virtual environment or site-packages inside the project is under the
        worker's directory, but it is not the project's code: its modules, namespace
        packages, __main__ modules and an exit() at import are all kept out."""
        root = tmp_path / "project"
        site = root / ".venv" / "lib" / "site-packages"
        (site / "venvmod").mkdir(parents=True)
        (site / "venvmod" / "__init__.py").write_text("import sys; sys.stderr.write('RAN')\n")
        (root / "nspkg").mkdir()
        (root / "nspkg" / "mod.py").write_text("RAN = True\n")
        (root / "pkg").mkdir()
        (root / "pkg" / "__init__.py").write_text("")
        (root / "pkg" / "__main__.py").write_text("raise RuntimeError('ran __main__')\n")
        (root / "pkg" / "jobs.py").write_text("DEFINED = True\n")
        (root / "quitter.py").write_text("raise SystemExit(3)\n")
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.syspath_prepend(str(root))
        before = set(sys.modules)
        try:
            litequeue._autoimport(["venvmod", "nspkg.mod", "pkg.__main__", "quitter",
                                   "pkg.jobs"], str(root))
            loaded = set(sys.modules) - before
            assert loaded == {"pkg", "pkg.jobs"}, loaded
            assert sys.modules["pkg.jobs"].DEFINED
        finally:
            for name in set(sys.modules) - before:
                del sys.modules[name]

    def test_many_registry_rows_do_not_slow_unknown_tasks_down(self, project, workers):
        create_db(project)
        now = time.time()
        sql_many(project.db, "INSERT INTO registry (name, module, updated_at) VALUES (?, ?, ?)",
                 [(f"junk{i}.mod.t", f"junk{i}.mod", now) for i in range(10_000)])
        w = workers.start(project, concurrency=1)
        queued = time.monotonic()
        ids = insert_raw(project.db, [(f"junk{i}.mod.t", pack({})) for i in range(200)]
                         + [("tasks.add", pack({"args": [4, 4]}))])
        canary = ids[-1]
        wait_until(lambda: project.state(canary) == SUCCESS, 15,
                   lambda: f"the canary queued behind 200 unknown tasks to succeed (state "
                           f"{project.state(canary)}, "
                           f"{sql(project.db, 'SELECT count(*) FROM tasks WHERE state = ?', FAILURE)[0][0]}"
                           " failed so far)")
        elapsed = time.monotonic() - queued
        states = sql(project.db, "SELECT state, count(*) FROM tasks WHERE name LIKE 'junk%' "
                                 "GROUP BY state")
        assert states == [(FAILURE, 200)], states
        assert w.proc.poll() is None
        print(f"canary behind 200 unknown tasks and 10,000 registry rows: {elapsed:.2f} s")


BAD_RESULT_MODULE = task_source("badresult.py")


BAD_SCHEDULES = {
    "nan-next-fire": {"next_fire": "NaN"},
    "garbage-zone": {"tz": "Garbage/Zone"},
    "bad-cron": {"schedule": "cron:99 * * * *"},
    "every-zero": {"schedule": "every:0"},
    "year-9999": {"last_fire": 253402300799.0},
    # An interval so short that walking its missed fires would take the scheduler (and
    # the write lock it holds) for ever, with nothing raised.
    "every-10us": {"schedule": "every:0.00001", "last_fire": time.time() - 3600},
}


def assert_eta_promotion_works(project, w):
    """The supervisor still promotes ETA tasks, and the worker is alive."""
    r = project.app.tasks["tasks.add"].apply_async((3, 4), countdown=0.5)
    assert r.get(timeout=10) == 7
    assert w.proc.poll() is None, w.log_text()
    assert len(w.live_children()) == w.concurrency


def assert_schedules_disabled(project, names):
    def shown():
        done = lq("schedules", project.db, cwd=project.dir)
        if done.returncode == 0 and "Traceback" not in done.stderr and \
                done.stdout.count("DISABLED") >= len(names):
            return done
        return None
    done = wait_until(shown, 15, lambda: "`litequeue schedules` to show DISABLED for "
                      f"{names}:\n{lq('schedules', project.db, cwd=project.dir)}")
    for name in names:
        assert name in done.stdout, done.stdout
    status = lq_ok("status", project.db, cwd=project.dir)
    assert "DISABLED" in status.stdout, status.stdout


class TestBadRows:

    def test_worker_ids_that_are_paths_never_delete_files(self, project, workers, tmp_path):
        victim = tmp_path / "victim"
        before = make_victim(victim, names=("poetry.lock", "dotdot.lock"))
        w = workers.start(project, concurrency=1)
        # The lock file of worker ID is <side dir>/locks/ID.lock.
        insert_worker(project.db, str(victim / "poetry"))
        side_locks = Path(project.db + "-lq") / "locks"
        dotdot = os.path.relpath(victim / "dotdot", side_locks)
        assert dotdot.startswith("..")
        insert_worker(project.db, dotdot)
        prove_rescue_passes(project, w)
        assert files_in(victim) == before
        assert_canary(project, w)

    @pytest.mark.parametrize("worker_id", ["a\x00b", "z" * 5000, "../" * 40 + "nowhere",
                                           "/", ""], ids=["nul", "long", "dotdot", "slash",
                                                          "empty"])
    def test_strange_worker_ids_do_not_crash_the_rescue(self, project, workers, worker_id):
        w = workers.start(project, concurrency=1)
        insert_worker(project.db, worker_id)
        prove_rescue_passes(project, w)
        assert_canary(project, w)

    def test_scheduled_task_with_a_text_eta_fails_and_the_supervisor_goes_on(self, project,
                                                                            workers):
        w = workers.start(project, concurrency=1)
        task_id = str(uuid.uuid4())
        sql(project.db, "INSERT INTO tasks (id, name, payload, state, eta) "
                        "VALUES (?, 'tasks.add', ?, 'SCHEDULED', 'soon')",
            task_id, pack({"args": [1, 2]}))
        wait_until(lambda: project.state(task_id) == FAILURE, 15,
                   lambda: f"the task with eta 'soon' to fail (state {project.state(task_id)})"
                           f"\n{w.log_text()}")
        row = project.row(task_id)
        assert "eta" in error_text(row["result"], row["traceback"]).lower(), row
        assert_eta_promotion_works(project, w)

    @pytest.mark.parametrize("name", list(BAD_SCHEDULES))
    def test_bad_schedule_is_disabled_and_the_supervisor_goes_on(self, project, workers, name):
        w = workers.start(project, concurrency=1)
        insert_schedule(project.db, name, **BAD_SCHEDULES[name])
        assert_eta_promotion_works(project, w)          # its ring makes the scheduler look
        assert_schedules_disabled(project, [name])
        assert_eta_promotion_works(project, w)

    def test_all_bad_rows_at_once(self, project, workers):
        w = workers.start(project, concurrency=1)
        for name, overrides in BAD_SCHEDULES.items():
            insert_schedule(project.db, name, **overrides)
        good_payload = pack({"args": [100, 1]})
        insert_schedule(project.db, "good", schedule="every:1.0", next_fire=time.time() + 0.5,
                        payload=good_payload)
        task_id = str(uuid.uuid4())
        sql(project.db, "INSERT INTO tasks (id, name, payload, state, eta) "
                        "VALUES (?, 'tasks.add', ?, 'SCHEDULED', 'soon')",
            task_id, pack({"args": [1, 2]}))
        insert_worker(project.db, "nul\x00id")
        wait_until(lambda: project.state(task_id) == FAILURE, 15,
                   lambda: f"the task with eta 'soon' to fail\n{w.log_text()}")
        assert_eta_promotion_works(project, w)
        prove_rescue_passes(project, w)
        assert_schedules_disabled(project, list(BAD_SCHEDULES))
        # The valid schedule keeps firing (each fire of tasks.add(1, 1) succeeds).
        fired = lambda: sql(project.db, "SELECT count(*) FROM tasks WHERE payload = ? "
                                        "AND state = ?", good_payload, SUCCESS)[0][0]
        first = fired()
        wait_until(lambda: fired() > first, 10, "the valid schedule to fire again")
        assert_eta_promotion_works(project, w)

    @pytest.mark.parametrize("case", ["text_expires", "blob_id", "unencodable_result"])
    def test_row_that_crashes_its_process_ends_failure_without_a_loop(self, project, workers,
                                                                     case):
        if case == "unencodable_result":
            project.write_module("badresult", BAD_RESULT_MODULE)
            w = workers.start(project, concurrency=1, app=("tasks", "badresult"))
        else:
            w = workers.start(project, concurrency=1)
        if case == "text_expires":
            key = str(uuid.uuid4())
            sql(project.db, "INSERT INTO tasks (id, name, payload, expires) "
                            "VALUES (?, 'tasks.add', ?, 'soon')", key, pack({"args": [1, 2]}))
            why = "expires"
        elif case == "blob_id":
            key = b"\xffblob-id\x00"
            sql(project.db, "INSERT INTO tasks (id, name, payload) VALUES (?, 'tasks.add', ?)",
                key, pack({"args": [1, 2]}))
            why = "id"
        else:
            (key,) = insert_raw(project.db, [("badresult.sneaky", pack({}))])
            why = "result"

        def row():
            rows = sql(project.db, "SELECT state, attempt, result, traceback FROM tasks "
                                   "WHERE id = ?", key)
            return rows[0]
        wait_until(lambda: row()[0] == FAILURE, 30,
                   lambda: f"the {case} row to end FAILURE (state, attempt = {row()[:2]})"
                           f"\n{w.log_text()[-3000:]}")
        state, attempt, result, tb = row()
        assert attempt <= 4, (attempt, w.log_text()[-3000:])
        text = error_text(result, tb)
        assert why in text.lower(), text
        assert_canary(project, w)
        assert row()[:2] == (FAILURE, attempt)        # not run again since


class TestClearErrors:

    def test_odd_columns_and_control_characters_never_break_the_cli(self, project):
        """Database text reaches a terminal: odd types give no traceback, and control
        characters (a window-title escape in a traceback) are shown escaped."""
        create_db(project)
        task_id = insert_finished(project.db, FAILURE, result=pack({"type": "x.Y"}),
                                  errors=pack([1, {"time": "soon", "message": "m"}]))
        sql(project.db, "UPDATE tasks SET traceback = ?, finished_at = 'later', queue = ? "
                        "WHERE id = ?", "Traceback\x1b]0;owned\x07 end", b"\xffq", task_id)
        for args in (("result", project.db, task_id), ("result", project.db, task_id, "--json"),
                     ("status", project.db)):
            done = lq(*args, cwd=project.dir)
            assert "Traceback (most recent call last)" not in done.stderr, (args, done.stderr)
            assert "\x1b" not in done.stdout + done.stderr, (args, done.stdout, done.stderr)
            assert done.returncode in (0, 1), (args, done.returncode, done.stderr)
        assert "\\x1b]0;owned" in lq("result", project.db, task_id, cwd=project.dir).stderr

    def test_result_that_is_not_msgpack_is_one_line_in_the_cli(self, project):
        create_db(project)
        task_id = insert_finished(project.db, SUCCESS, result=b"\xc1")
        done = lq("result", project.db, task_id, cwd=project.dir)
        assert_one_line_error(done, code=1)

    def test_result_that_is_not_msgpack_raises_a_litequeue_error(self, project):
        create_db(project)
        task_id = insert_finished(project.db, SUCCESS, result=b"\xc1")
        with pytest.raises(LitequeueError) as caught:
            project.app.AsyncResult(task_id).get(timeout=5)
        assert type(caught.value).__module__ == "litequeue", caught.value
        assert not isinstance(caught.value, msgpack.exceptions.UnpackException)

    def test_errors_that_are_not_msgpack_raise_a_litequeue_error(self, project):
        create_db(project)
        task_id = insert_finished(project.db, FAILURE, errors=b"\xc1")
        with pytest.raises(LitequeueError) as caught:
            project.app.AsyncResult(task_id).errors
        assert type(caught.value).__module__ == "litequeue", caught.value
        assert not isinstance(caught.value, msgpack.exceptions.UnpackException)

    @pytest.mark.parametrize("options, error", [
        ({"priority": 2**70}, ValueError),
        ({"priority": "high"}, ValueError),
        ({"priority": float("nan")}, ValueError),
        ({"args": (), "kwargs": {1: 2}}, TypeError),
        ({"queue": object()}, (TypeError, ValueError)),
    ], ids=["priority-huge", "priority-text", "priority-nan", "kwargs-int-key", "queue-object"])
    def test_bad_options_raise_and_write_no_row(self, project, options, error):
        create_db(project)
        before = task_count(project.db)
        with pytest.raises(error):
            project.app.tasks["tasks.add"].apply_async(**options)
        assert task_count(project.db) == before

    def test_read_only_directory_without_a_side_directory(self, tmp_path):
        """The database's directory became read-only after the database was made, and no
        side directory exists. (Run without CAP_DAC_OVERRIDE: root ignores modes.)"""
        need_root()
        if not shutil.which("setpriv"):
            pytest.skip("needs setpriv to drop root's capabilities")
        home = tmp_path / "ro"
        home.mkdir()
        db = str(home / "jobs.sqlite")
        app = stand_in_app(db)
        task_id = app.tasks["tasks.add"].delay(1, 2).id
        shutil.rmtree(db + "-lq", ignore_errors=True)
        # An open connection keeps -wal and -shm in place: a WAL database cannot be read
        # where they can be neither found nor created.
        holder = apsw.Connection(db)
        try:
            holder.execute("SELECT count(*) FROM tasks").fetchall()
            home.chmod(0o555)
            producer = run_without_dac([sys.executable, "-c", textwrap.dedent(f"""
                import sys
                sys.path.insert(0, {str(LITEQUEUE_PY.parent)!r})
                import litequeue
                r = litequeue.LiteQueue({db!r}).AsyncResult({task_id!r})
                print(r.state)
                try:
                    r.get(timeout=0.5)
                except litequeue.TimeoutError:
                    print("timeout")
            """)], cwd=home)
            assert (producer.returncode, producer.stdout) == (0, "PENDING\ntimeout\n"), \
                producer.stderr
            assert "PermissionError" not in producer.stderr, producer.stderr
            worker = run_without_dac([sys.executable, str(LITEQUEUE_PY), "worker", db, "-c", "1"],
                                     cwd=home, timeout=30)
            assert worker.returncode != 0
            text = worker.stdout + worker.stderr
            assert "Traceback" not in text, text
            assert len(log_lines(text)) == 1, text
            assert not os.path.exists(db + "-lq")
        finally:
            holder.close()
            home.chmod(0o755)

    def test_huge_result_does_not_flood_the_log(self, project, workers):
        w = workers.start(project, concurrency=1, loglevel="INFO")
        big = "x" * 5_000_000
        r = project.delay("echo", big)
        assert r.get(timeout=30) == [[big], {}]
        w.signal(signal.SIGTERM)
        assert w.wait(20) == 0
        size = w.log.stat().st_size
        assert size < 100_000, f"worker log is {size} bytes"
        assert r.id in w.log_text()            # the task is still logged at INFO


STALE_SOCKETS = """\
import os, secrets, socket, sys
for i in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    # The name a waiter of this process would bind; closed without unlinking, as by a
    # process that was killed.
    s.bind(f"{secrets.token_hex(5)}.{os.getpid()}.{i % 999983}.{i}")
    s.close()
"""


class TestWakeupHygiene:

    def test_short_lived_apps_leave_no_descriptors_open(self, near_project, workers):
        """A program that makes an app per request must not run out of descriptors."""
        create_db(near_project)
        workers.start(near_project, concurrency=1)

        def open_fds():
            return len(os.listdir("/proc/self/fd"))
        for _ in range(3):                         # warm-up: caches and the first app
            stand_in_app(near_project.db).tasks["tasks.add"].delay(1, 1)
        gc.collect()
        before = open_fds()
        for _ in range(200):
            stand_in_app(near_project.db).tasks["tasks.add"].delay(1, 1)
        gc.collect()
        assert open_fds() - before < 20, open_fds() - before

    def test_a_lock_file_that_cannot_be_read_means_alive_and_a_fifo_never_blocks(
            self, near_project):
        """Only a missing lock file, or a free lock, means a dead worker: anything this
        process cannot read as a lock counts as alive, and opening never blocks."""
        create_db(near_project)
        side = litequeue._SideDir(near_project.db)
        locks = litequeue._Locks(side)
        try:
            locks_dir = Path(side.path) / "locks"
            os.mkfifo(locks_dir / "0123456789ab.lock")
            (locks_dir / "0123456789ac.lock").mkdir()
            assert not locks.dead("0123456789ab") and not locks.dead("0123456789ac")
            assert locks.record("0123456789ab") == ([], ())
            assert locks.dead("0123456789ad")              # no file: dead
            assert locks.dead("not-an-id/../x")            # never a path: dead, nothing read
        finally:
            locks.close()

    def test_stale_done_sockets_are_cleaned_up(self, near_project, workers):
        project = near_project
        create_db(project)
        side = private_dir(project.db + "-lq")
        done = private_dir(side / "done")
        python(STALE_SOCKETS, done, 10_000)
        entries = os.listdir(done)
        assert len(entries) == 10_000
        assert stat.S_ISSOCK(os.lstat(done / entries[0]).st_mode)
        w = workers.start(project, concurrency=1)
        wait_until(lambda: len(os.listdir(done)) < 100, 30,
                   lambda: f"stale sockets in done/ cleaned up ({len(os.listdir(done))} left)")
        assert project.delay("add", 2, 3).get(timeout=10) == 5
        assert w.proc.poll() is None

    def test_junk_directories_in_work_cost_delay_nothing(self, near_project):
        project = near_project
        create_db(project)
        work = private_dir(Path(project.db + "-lq") / "work")
        for i in range(2000):
            (work / f"junk{i:04d}").mkdir()
        add = project.app.tasks["tasks.add"]
        times = []
        for i in range(200):
            started = time.perf_counter()
            add.delay(i, i)
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        assert median < 0.002, f"median delay() {median * 1000:.2f} ms"
        assert len([p for p in work.iterdir() if p.is_dir()]) == 2000


def lines_of(path):
    path = Path(path)
    return path.read_text().splitlines() if path.exists() else []


def stored_error_message(db, task_id):
    """The message of the error stored in a finished task's row."""
    (blob,), = sql(db, "SELECT result FROM tasks WHERE id = ?", task_id)
    return str(msgpack.unpackb(blob, raw=False, strict_map_key=False).get("message"))


# The seed tutorial's files (tasks.py and celeryconfig.py), as a Celery user has them.
SEED_TASKS = task_source("seed/tasks.py")


SEED_CONFIG = task_source("seed/celeryconfig.py")


class TestPriorityOrder:

    def test_every_higher_priority_task_runs_before_any_lower_one(self, project, workers):
        record = project.app.tasks["tasks.record"]
        low = [record.apply_async([n], priority=0) for n in range(6)]
        high = [record.apply_async([100 + n], priority=9) for n in range(6)]
        workers.start(project, concurrency=1)       # all 12 are queued before it starts
        assert [r.get(timeout=20) for r in low + high] == \
            list(range(6)) + list(range(100, 106))
        (ledger,) = project.marks.glob("ledger.*")  # one child ran them, in this order
        order = [int(line.split()[1]) for line in ledger.read_text().splitlines()]
        assert sorted(order[:6]) == list(range(100, 106)), f"run order: {order}"
        assert sorted(order[6:]) == list(range(6)), f"run order: {order}"


class TestSeedFlow:

    def test_worker_reads_celeryconfig_and_serves_its_imports_at_once(self, tmp_path,
                                                                      workers):
        folder = Folder(tmp_path / "seed", {"tasks": SEED_TASKS, "celeryconfig": SEED_CONFIG})
        assert not os.path.exists(folder.db)
        w = workers.start(folder, cmd=worker_cmd("jobs.sqlite", "-c", 1))
        done = lq("call", "jobs.sqlite", "add", "4", "4", "--wait", "--timeout", 20,
                  cwd=folder.dir)
        assert (done.returncode, done.stdout) == (0, "8\n"), (done.stderr, w.log_text())

        # CELERY_TASK_RESULT_EXPIRES = 2 is honoured: the finished row is pruned.
        (task_id,), = sql(folder.db, "SELECT id FROM tasks WHERE name = 'tasks.add'")
        wait_until(lambda: not sql(folder.db, "SELECT 1 FROM tasks WHERE id = ?", task_id),
                   12, lambda: f"the finished add row to be pruned\n{w.log_text()}")
        assert LiteQueue(folder.db).AsyncResult(task_id).state == UNKNOWN

        # The periodic task of tasks.py fires without a restart.
        wait_until(lambda: lines_of(folder.marks / "note.tick"), 10,
                   lambda: f"the 1-second periodic task to fire\n{w.log_text()}")
        assert w.proc.poll() is None, w.log_text()

    def test_a_worker_that_serves_no_task_says_so_with_the_fix(self, tmp_path, workers):
        folder = Folder(tmp_path / "empty")
        w = workers.start(folder, cmd=worker_cmd("jobs.sqlite", "-c", 1))

        def warning():
            lines = w.log_text().splitlines()
            return [(i, line) for i, line in enumerate(lines) if "serves no task" in line]
        ((i, line), *_) = wait_until(warning, 5, lambda: f"a 'serves no task' warning\n"
                                                         f"{w.log_text()}")
        assert "WARNING" in line, line
        hint = "\n".join(w.log_text().splitlines()[i:i + 3])
        assert "-A" in hint, hint

    def test_a_module_registered_later_is_loaded_by_the_supervisor_too(self, project,
                                                                        workers):
        w = workers.start(project, concurrency=1)
        project.write_module("more", '''
            import os
            from litequeue import LiteQueue

            app = LiteQueue("jobs.sqlite")
            MARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "marks")


            @app.task
            def triple(x):
                return 3 * x


            @app.task
            def note(tag):
                with open(os.path.join(MARKS, "more." + tag), "a") as f:
                    f.write("ran\\n")


            app.add_periodic_task(1.0, note.s("tick"), name="more-tick")
        ''')
        # A producer registers module 'more' by queueing one of its tasks: the child runs it.
        assert python("import more; print(more.triple.delay(5).get(timeout=20))",
                      project.dir) == "15\n"
        # ... and the supervisor loads it too: its periodic task starts firing.
        wait_until(lambda: lines_of(project.marks / "more.tick"), 20,
                   lambda: f"more.py's periodic task to fire without a restart\n"
                           f"schedules: {tables_rows(project.db, 'schedules')}\n{w.log_text()}")
        assert w.proc.poll() is None, w.log_text()


class TestUnknownTaskMessage:

    def test_registered_name_whose_module_is_not_importable_here_says_so(self, project,
                                                                         workers, tmp_path):
        w = workers.start(project, concurrency=1)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "elsewhere_tasks.py").write_text(textwrap.dedent(f'''
            from litequeue import LiteQueue

            app = LiteQueue({project.db!r})


            @app.task
            def job():
                return "ran"
        '''))
        out = python("import elsewhere_tasks\n"
                     "r = elsewhere_tasks.job.delay()\n"
                     "r.get(timeout=20, propagate=False)\n"
                     "print(r.id, r.state)", elsewhere)
        task_id, state = out.split()
        assert state == FAILURE, w.log_text()
        message = stored_error_message(project.db, task_id)
        assert "elsewhere_tasks" in message and "cannot import" in message, message
        assert "never registered" not in message, message
        assert "has registered it" not in message, message
        assert w.proc.poll() is None, w.log_text()

    def test_a_task_its_imported_module_no_longer_defines_says_so(self, project, workers):
        w = workers.start(project, concurrency=1)
        assert project.delay("add", 1, 1).get(timeout=10) == 2     # tasks is imported
        sql(project.db, "INSERT INTO registry (name, module, updated_at) VALUES "
                        "('tasks.renamed', 'tasks', 0)")
        (task_id,) = insert_raw(project.db, [("tasks.renamed", pack({}))])
        wait_until(lambda: project.state(task_id) == FAILURE, 10, w.log_text)
        message = stored_error_message(project.db, task_id)
        assert "does not define that task" in message and "cannot import" not in message


class TestWrongDatabase:

    def test_worker_on_another_file_than_the_app_s_is_refused(self, tmp_path):
        folder = Folder(tmp_path / "proj", {"tasks": PLAIN_TASKS + textwrap.dedent('''
            app.add_periodic_task(3600.0, add.s(1, 1), name="hourly")
        ''')})
        other = folder.dir / "other.sqlite"
        done = lq("worker", "other.sqlite", "-A", "tasks", "-c", 1, cwd=folder.dir,
                  timeout=20)
        assert done.returncode != 0, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert "jobs.sqlite" in last and "other.sqlite" in last, done.stderr
        assert tables_rows(str(other), "schedules") == []


class TestRelativePaths:

    def test_a_relative_path_is_resolved_against_the_module_creating_the_app(
            self, project, workers, tmp_path):
        other = tmp_path / "other"
        other.mkdir()
        workers.start(project, concurrency=1)
        setup = f"import sys; sys.path.insert(0, {str(project.dir)!r}); import tasks\n"
        assert python(setup + "print(tasks.app.path)", other) == f"{project.dir / 'jobs.sqlite'}\n"
        assert python(setup + "print(tasks.add.delay(2, 3).get(timeout=10))", other) == "5\n"
        assert not [p.name for p in other.iterdir() if p.name.startswith("jobs.sqlite")]
        # Without a module file (python -c) a relative path is read from the cwd.
        assert python("from litequeue import LiteQueue; print(LiteQueue('x.sqlite').path)",
                      other) == f"{other / 'x.sqlite'}\n"

    def test_a_subclass_s_init_elsewhere_does_not_move_the_file(self, tmp_path):
        (tmp_path / "lib").mkdir()
        (tmp_path / "lib" / "basequeue.py").write_text(
            "from litequeue import LiteQueue\n"
            "class MyQueue(LiteQueue):\n"
            "    def __init__(self, path, **settings):\n"
            "        super().__init__(path, **settings)\n")
        (tmp_path / "app").mkdir()
        (tmp_path / "app" / "jobs.py").write_text("from basequeue import MyQueue\n"
                                                  "app = MyQueue('jobs.sqlite')\n")
        out = python("import sys; sys.path[:0] = ['../lib', '.']\n"
                     "import jobs; print(jobs.app.path)", tmp_path / "app")
        assert out == f"{tmp_path / 'app' / 'jobs.sqlite'}\n"


BEAT_TASKS = PLAIN_TASKS.replace('app = LiteQueue("jobs.sqlite")\n',
                                 'app = LiteQueue("jobs.sqlite")\n'
                                 'app.config_from_object("celeryconfig")\n')


class TestCelerySettings:

    @pytest.mark.parametrize("setting, schedule, fires", [
        ("beat_schedule", "1.0", True),
        ("CELERYBEAT_SCHEDULE", "datetime.timedelta(seconds=1)", True),
        ("beat_schedule", "crontab(minute='*/5')", False),
    ], ids=["beat_schedule-seconds", "CELERYBEAT_SCHEDULE-timedelta", "crontab"])
    def test_beat_schedule_from_config_fires(self, tmp_path, workers, setting, schedule,
                                             fires):
        config = textwrap.dedent(f'''
            import datetime
            from litequeue import crontab

            {setting} = {{
                "every-second": {{"task": "tasks.add", "schedule": {schedule}, "args": (1, 2)}},
            }}
        ''')
        folder = Folder(tmp_path / "proj", {"tasks": BEAT_TASKS, "celeryconfig": config})
        w = workers.start(folder, cmd=worker_cmd(folder.db, "-A", "tasks", "-c", 1))
        rows = sql(folder.db, "SELECT name, task FROM schedules")
        assert rows == [("every-second", "tasks.add")], w.log_text()
        if not fires:
            return

        def fired():
            rows = sql(folder.db, "SELECT id, name, result FROM tasks WHERE id LIKE ? AND "
                                  "state = ?", "every-second@%", SUCCESS)
            return rows
        (task_id, name, result), *_ = wait_until(fired, 10, lambda: f"a fire to succeed\n"
                                                                   f"{w.log_text()}")
        assert name == "tasks.add" and msgpack.unpackb(result) == 3

    def test_the_worker_s_config_module_applies_to_the_app_without_it_loading_it(
            self, tmp_path, workers):
        """The seed's layout: tasks.py never calls config_from_object; the worker reads
        celeryconfig.py, and its schedule, routes and zone are the app's in the worker."""
        config = textwrap.dedent('''
            CELERY_IMPORTS = ("tasks",)
            CELERY_TIMEZONE = "Asia/Shanghai"
            CELERY_ROUTES = {"tasks.*": {"queue": "math"}}
            CELERYBEAT_SCHEDULE = {"tick": {"task": "tasks.add", "schedule": 1.0, "args": (2, 2)}}
        ''')
        folder = Folder(tmp_path / "proj", {"tasks": PLAIN_TASKS, "celeryconfig": config})
        w = workers.start(folder, cmd=worker_cmd(folder.db, "-Q", "math", "-c", 1))
        assert sql(folder.db, "SELECT name, tz, queue FROM schedules") == \
            [("tick", "Asia/Shanghai", "math")], w.log_text()
        wait_until(lambda: sql(folder.db, "SELECT 1 FROM tasks WHERE id LIKE 'tick@%' AND "
                                          "state = ?", SUCCESS), 10,
                   lambda: f"a routed fire to run on queue math\n{w.log_text()}")

    def test_django_style_and_unsupported_celery_names_warn_instead_of_failing(self, tmp_path):
        app = LiteQueue(str(tmp_path / "x.sqlite"))
        with pytest.warns(litequeue.LitequeueWarning) as caught:
            app.config_from_object({"CELERY_TASK_ROUTES": {"tasks.add": "fast"},
                                    "CELERY_TASK_ACKS_LATE": True,
                                    "CELERYBEAT_SCHEDULER": "django_celery_beat.Scheduler",
                                    "CELERY_SOMETHING_NEW": 1})
        assert app.conf.task_routes == {"tasks.add": "fast"}
        text = " ".join(str(w.message) for w in caught)
        assert all(name in text for name in ("CELERY_TASK_ACKS_LATE", "CELERYBEAT_SCHEDULER",
                                             "CELERY_SOMETHING_NEW")), text

    def test_periodic_fires_follow_task_routes(self, tmp_path):
        app = LiteQueue(str(tmp_path / "x.sqlite"), task_routes={"tasks.*": {"queue": "math"}})
        app.add_periodic_task(60, "tasks.add", name="minutely")
        assert app._all_periodic()["minutely"]["queue"] == "math"

    @pytest.mark.parametrize("setting", ["task_routes", "CELERY_ROUTES"])
    def test_task_routes_by_name_and_glob(self, tmp_path, setting):
        db = str(tmp_path / "jobs.sqlite")
        app = LiteQueue(db)
        app.config_from_object({setting: {"tasks.add": {"queue": "math"},
                                          "tasks.mail_*": {"queue": "mail"}}})

        @app.task(name="tasks.add")
        def add(x, y):
            return x + y

        @app.task(name="tasks.mail_send")
        def mail_send():
            pass

        @app.task(name="tasks.other")
        def other():
            pass

        def queue_of(result):
            return sql(db, "SELECT queue FROM tasks WHERE id = ?", result.id)[0][0]
        assert queue_of(add.delay(1, 2)) == "math"
        assert queue_of(mail_send.delay()) == "mail"
        assert queue_of(other.delay()) == "default"
        assert queue_of(add.apply_async((1, 2), queue="explicit")) == "explicit"
        assert queue_of(mail_send.apply_async(queue="explicit")) == "explicit"

    def test_celery_config_module_names_the_config_module(self, tmp_path, workers):
        folder = Folder(tmp_path / "proj", {
            "tasks": PLAIN_TASKS,
            "myconfig": 'CELERY_IMPORTS = ("tasks",)\n',
            "celeryconfig": 'CELERY_IMPORTS = ("decoy",)\n',
            "decoy": 'import os\n'
                     'open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "marks", '
                     '"decoy-imported"), "w").close()\n'})
        w = workers.start(folder, cmd=worker_cmd("jobs.sqlite", "-c", 1,
                                                 env={"CELERY_CONFIG_MODULE": "myconfig"}))
        done = lq("call", "jobs.sqlite", "add", "4", "4", "--wait", "--timeout", 20,
                  cwd=folder.dir)
        assert (done.returncode, done.stdout) == (0, "8\n"), (done.stderr, w.log_text())
        assert not (folder.marks / "decoy-imported").exists(), "celeryconfig.py was read"

    def test_conf_attribute_access_and_a_bad_zone_refused_at_once(self, tmp_path):
        app = LiteQueue(str(tmp_path / "jobs.sqlite"), timezone="Asia/Shanghai")
        assert app.conf.timezone == "Asia/Shanghai"
        assert app.conf["timezone"] == "Asia/Shanghai"
        with pytest.raises(ConfigurationError, match="Nope/Zone"):
            app.conf.update(timezone="Nope/Zone")
        assert app.conf.timezone == "Asia/Shanghai"
        assert app.conf["timezone"] == "Asia/Shanghai"

    def test_max_retries_none_honours_every_retry_request(self, project, workers):
        project.write_module("forever", '''
            from litequeue import LiteQueue

            app = LiteQueue("jobs.sqlite")


            @app.task(bind=True, max_retries=None)
            def persistent(self, times):
                if self.request.retries < times:
                    raise self.retry(countdown=0.01)
                return self.request.retries
        ''')
        w = workers.start(project, app=("tasks", "forever"), concurrency=1)
        out = python("import forever\n"
                     "r = forever.persistent.delay(6)\n"
                     "r.get(timeout=30, propagate=False)\n"
                     "print(r.id, r.state)", project.dir)
        task_id, state = out.split()
        row = project.row(task_id)
        assert (state, row["state"], row["retries"]) == (SUCCESS, SUCCESS, 6), \
            (row, w.log_text())
        assert msgpack.unpackb(row["result"]) == 6

    def test_celery_names_with_no_meaning_warn_on_stderr_without_logging_set_up(
            self, tmp_path):
        (tmp_path / "celeryconfig.py").write_text(
            "task_acks_late = True\n"
            "worker_prefetch_multiplier = 1\n"
            "broker_transport_options = {'visibility_timeout': 3600}\n")
        code = ("from litequeue import LiteQueue\n"
                "app = LiteQueue('jobs.sqlite')\n"
                "app.config_from_object('celeryconfig')\n"
                "print('configured')\n")
        done = run([sys.executable, "-c", code], cwd=tmp_path)
        assert (done.returncode, done.stdout) == (0, "configured\n"), done.stderr
        for name in ("task_acks_late", "worker_prefetch_multiplier",
                     "broker_transport_options"):
            assert name in done.stderr, done.stderr

    @pytest.mark.parametrize("kind", ["module", "mapping"])
    def test_misspelled_setting_in_config_is_refused_with_a_suggestion(self, tmp_path, kind):
        app = LiteQueue(str(tmp_path / "jobs.sqlite"))
        if kind == "module":
            config = types.ModuleType("celeryconfig")
            config.result_expire = 10
        else:
            config = {"result_expire": 10}
        with pytest.raises(ConfigurationError, match="result_expires"):
            app.config_from_object(config)


class TestEagerRoundTrip:

    @pytest.fixture
    def app(self, tmp_path):
        return LiteQueue(str(tmp_path / "jobs.sqlite"), task_always_eager=True)

    def test_a_tuple_comes_back_a_list(self, app):
        @app.task
        def pair():
            return (1, 2)
        result = pair.delay()
        value = result.get()
        assert value == [1, 2] and type(value) is list
        assert result.state == SUCCESS

    def test_a_set_is_a_serialization_error(self, app):
        @app.task
        def numbers():
            return {1, 2}
        result = numbers.delay()
        assert isinstance(result, EagerResult)
        assert result.state == FAILURE
        assert isinstance(result.result, SerializationError), repr(result.result)
        with pytest.raises(SerializationError):
            result.get()

    def test_a_failure_keeps_the_history_a_worker_would(self, app):
        @app.task
        def boom():
            raise ValueError("no")
        errors = boom.delay().errors
        assert [(e["type"], e["message"], e["attempt"]) for e in errors] == \
            [("builtins.ValueError", "no", 1)]


class TestCLINewcomer:

    def test_read_commands_leave_an_older_schema_as_it_is(self, project):
        project.delay("add", 1, 1)
        sql(project.db, "ALTER TABLE schedules DROP COLUMN error")
        sql(project.db, f"PRAGMA user_version = {litequeue.SCHEMA_VERSION - 1}")
        before = sha256(project.db)
        for args in (("status",), ("schedules",)):
            done = lq(args[0], project.db, cwd=project.dir)
            assert done.returncode == 1 and "older litequeue" in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
        assert sha256(project.db) == before

    def test_call_with_a_negative_number(self, project, workers):
        workers.start(project, concurrency=1)
        done = lq("call", project.db, "add", "-1", "2", "--wait", "--timeout", 20,
                  cwd=project.dir)
        assert (done.returncode, done.stdout) == (0, "1\n"), done.stderr

    def test_huge_priority_is_a_usage_error_and_writes_nothing(self, project):
        project.delay("add", 1, 1)
        before = sql(project.db, "SELECT count(*) FROM tasks")
        done = lq("call", project.db, "add", 1, 2, "--priority", "99999999999999999999",
                  cwd=project.dir)
        assert done.returncode == 2, (done.stdout, done.stderr)   # bad arguments exit 2
        assert "Traceback" not in done.stderr, done.stderr
        assert "must be between" in done.stderr.strip().splitlines()[-1], done.stderr
        assert sql(project.db, "SELECT count(*) FROM tasks") == before

    @pytest.mark.parametrize("option", ["--id", "--queue"])
    def test_empty_id_or_queue_is_a_usage_error(self, project, option):
        project.delay("add", 1, 1)
        before = sql(project.db, "SELECT count(*) FROM tasks")
        done = lq("call", project.db, "add", 1, 2, option, "", cwd=project.dir)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert sql(project.db, "SELECT count(*) FROM tasks") == before

    @pytest.mark.parametrize("command", [["status"], ["result", "someid"], ["schedules"]],
                             ids=["status", "result", "schedules"])
    def test_read_commands_never_create_or_change_a_file(self, tmp_path, command):
        empty = tmp_path / "empty.sqlite"
        empty.touch()
        done = lq(command[0], empty, *command[1:], cwd=tmp_path)
        assert empty.stat().st_size == 0, "a 0-byte file was turned into a database"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]
        assert "Traceback" not in done.stderr, done.stderr
        assert len((done.stdout + done.stderr).strip().splitlines()) == 1, \
            (done.stdout, done.stderr)

        missing = tmp_path / "missing.sqlite"
        done = lq(command[0], missing, *command[1:], cwd=tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]
        assert "Traceback" not in done.stderr, done.stderr
        assert len((done.stdout + done.stderr).strip().splitlines()) == 1, \
            (done.stdout, done.stderr)

    def test_a_module_name_where_the_database_belongs_gets_a_hint(self, project):
        assert not (project.dir / "tasks").exists()
        done = lq("worker", "tasks", "-c", 1, cwd=project.dir, timeout=20)
        assert done.returncode != 0, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert "-A" in done.stderr.strip().splitlines()[-1], done.stderr
        assert not (project.dir / "tasks").exists()

    def test_status_columns_align_for_a_long_queue_name(self, project):
        add = project.app.tasks["tasks.add"]
        add.delay(1, 1)
        add.apply_async((1, 1), queue="q" * 30)
        add.apply_async((1, 1), queue="mail", countdown=3600)
        done = lq("status", project.db, cwd=project.dir)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        task_lines = lines[lines.index("tasks:") + 1:lines.index("workers:")]
        assert len(task_lines) == 3, done.stdout
        offsets = {re.match(r"\s*\S+\s+", line).end() for line in task_lines}
        assert len(offsets) == 1, done.stdout

    def test_a_failed_task_s_traceback_is_in_the_worker_log_at_error(self, project,
                                                                     workers):
        w = workers.start(project, concurrency=1)
        result = project.delay("fail", "boom")
        result.get(timeout=20, propagate=False)
        assert result.state == FAILURE

        def traceback_logged():
            text = w.log_text()
            return "Traceback (most recent call last)" in text and \
                "raise TaskFailed(message)" in text and text
        text = wait_until(traceback_logged, 5, lambda: f"the traceback in the worker log\n"
                                                       f"{w.log_text()}")
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines)
                     if "Traceback (most recent call last)" in line)
        header = next(line for line in reversed(lines[:start]) if line.startswith("["))
        assert "ERROR" in header, header


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


class TestCLI:

    def test_call_result_and_status(self, project, workers):
        w = workers.start(project, concurrency=1)
        db, cwd = project.db, project.dir
        done = lq("call", db, "tasks.add", 4, 4, "--wait", "--timeout", 20, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "8\n"), done.stderr
        done = lq("call", db, "add", 4, 4, "--wait", "--timeout", 20, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "8\n"), done.stderr
        done = lq("call", db, "add", "--args", "[1, 2]", "--wait", "--timeout", 20, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "3\n"), done.stderr
        done = lq("call", db, "add", "--kwargs", '{"x": "a", "y": "b"}', "--wait",
                  "--timeout", 20, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, '"ab"\n'), done.stderr

        done = lq("call", db, "add", 20, 22, "--id", "cli-id", "--queue", "default",
                  "--priority", 3, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "cli-id\n"), done.stderr
        done = lq("result", db, "cli-id", "--wait", "--timeout", 20, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr
        done = lq("result", db, "cli-id", "--json", cwd=cwd)
        out = json.loads(done.stdout)
        assert (out["id"], out["state"], out["result"]) == ("cli-id", SUCCESS, 42)

        done = lq("call", db, "fail", "boom", "--wait", "--timeout", 20, cwd=cwd)
        assert done.returncode == 1
        assert done.stdout.startswith("FAILURE: ") and "boom" in done.stdout
        assert "raise TaskFailed(message)" in done.stderr

        done = lq("status", db, cwd=cwd)
        assert done.returncode == 0, done.stderr
        assert "tasks:" in done.stdout and "workers:" in done.stdout
        lines = done.stdout.splitlines()
        assert any(line.split() == ["default", SUCCESS, "5"] for line in lines), done.stdout
        assert any(line.split() == ["default", FAILURE, "1"] for line in lines), done.stdout
        assert f"pid {w.pid}" in done.stdout and "alive" in done.stdout
        (child,) = w.children()
        assert f"child {child['id']} pid {child['pid']}: idle" in done.stdout

    def test_demo(self, tmp_path):
        """README's first command: a worker on demo tasks, and the user sees them done."""
        done = lq("demo", tmp_path / "demo.sqlite", "-n", 6, cwd=tmp_path, timeout=90)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("SUCCESS") == 5, done.stdout
        assert "FAILURE  ZeroDivisionError" in done.stdout, done.stdout
        status = lq("status", tmp_path / "demo.sqlite", cwd=tmp_path)
        assert "workers:\n  (none)" in status.stdout, status.stdout

    def test_status_of_an_empty_database(self, project):
        litequeue._Storage(project.db).close()
        done = lq("status", project.db, cwd=project.dir)
        assert done.returncode == 0
        assert done.stdout.splitlines() == ["tasks:", "  (none)", "workers:", "  (none)"]

    @pytest.mark.parametrize("args, message", [
        (["worker", "{db}", "--bogus"], "No such option"),
        (["worker", "{db}", "-c", "0"], "-c"),
        (["worker", "{db}", "-c", "two"], "-c"),
        (["worker", "{db}", "-l", "LOUD"], "-l"),
        (["call", "{db}", "add", "--args", "not json"], "not valid JSON"),
        (["call", "{db}", "add", "--args", '{"x": 1}'], "must be a JSON array"),
        (["call", "{db}", "add", "--kwargs", "[1]"], "must be a JSON object"),
        (["call", "{db}", "add", "1", "--args", "[1]"], "either positionally or with --args"),
        (["call", "{db}"], "Missing argument"),
        (["result"], "Missing argument"),
        (["frobnicate", "{db}"], "No such command"),
    ], ids=["unknown-option", "c-zero", "c-text", "bad-loglevel", "args-not-json",
            "args-not-array", "kwargs-not-object", "args-twice", "no-task", "no-db",
            "unknown-command"])
    def test_usage_errors_exit_2(self, project, args, message):
        project.delay("add", 1, 1)
        before = sha256(project.db)
        done = lq(*[a.replace("{db}", project.db) for a in args], cwd=project.dir, timeout=30)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "Usage:" in done.stderr and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert sha256(project.db) == before

    def test_runtime_errors_exit_1_with_one_line(self, project, tmp_path):
        project.delay("add", 1, 1)
        db, cwd = project.db, project.dir
        corrupt = tmp_path / "corrupt.sqlite"
        corrupt.write_bytes(b"not a database at all\n" * 10)
        missing = tmp_path / "missing.sqlite"
        assert_one_line_error(lq("call", db, "nope", cwd=cwd), contains="unknown task 'nope'")
        assert_one_line_error(lq("call", db, "tasks.ad", 1, 2, cwd=cwd),
                              contains="did you mean tasks.add")
        assert_one_line_error(lq("status", missing, cwd=cwd), contains="no database")
        assert_one_line_error(lq("call", missing, "add", cwd=cwd), contains="no database")
        assert not missing.exists()
        assert_one_line_error(lq("status", corrupt, cwd=cwd), contains="not a SQLite database")
        assert_one_line_error(lq("result", db, "no-such-id", cwd=cwd), contains="no task")
        queued = lq("call", db, "add", 1, 2, cwd=cwd)             # no worker runs here
        assert queued.returncode == 0, queued.stderr
        pending = lq("result", db, queued.stdout.strip(), cwd=cwd)
        assert (pending.returncode, pending.stdout) == (0, "PENDING\n"), pending.stderr
        foreign = tmp_path / "foreign.sqlite"
        conn = sqlite3.connect(foreign)
        conn.execute("CREATE TABLE t (x)")
        conn.close()
        assert_one_line_error(lq("status", foreign, cwd=cwd), contains="did not create")
        assert_one_line_error(lq("worker", tmp_path / "no" / "such" / "dir.sqlite", cwd=cwd,
                                 timeout=30), contains="cannot open")
        assert_one_line_error(lq("call", db, "add", 1, 1, "--wait", "--timeout", "0.2", cwd=cwd),
                              contains="not ready")
        assert_one_line_error(lq("worker", corrupt, "-c", 1, cwd=cwd, timeout=30),
                              contains="not a SQLite database")
        worker = lq("worker", db, "-A", "no_such_module", "-c", 1, cwd=cwd, timeout=30)
        assert worker.returncode == 1 and "Traceback" not in worker.stderr, worker.stderr
        assert worker.stderr.strip().splitlines()[-1].startswith("Error: cannot import")

    # -- scheduling (issue 3) ---------------------------------------------------------------

    def test_call_with_countdown_eta_expires_and_tz(self, project, workers):
        workers.start(project, concurrency=1)
        db, cwd = project.db, project.dir

        def timing(task_id):
            return sql(db, "SELECT state, eta, expires FROM tasks WHERE id = ?", task_id)[0]

        sent = time.time()
        done = lq("call", db, "add", 1, 2, "--countdown", 3, cwd=cwd)
        assert done.returncode == 0, done.stderr
        countdown_id = done.stdout.strip()
        state, eta, _ = timing(countdown_id)
        assert state == SCHEDULED and sent + 3 <= eta <= time.time() + 3
        shown = lq("result", db, countdown_id, cwd=cwd)
        assert (shown.returncode, shown.stdout) == (0, "SCHEDULED\n"), shown.stderr

        # --eta in ISO 8601 with an offset is that instant.
        eta = dt.datetime.now(dt.timezone(dt.timedelta(hours=5, minutes=30))) + \
            dt.timedelta(seconds=2)
        done = lq("call", db, "add", 2, 2, "--eta", eta.isoformat(), cwd=cwd)
        assert done.returncode == 0, done.stderr
        offset_id = done.stdout.strip()
        assert timing(offset_id)[:2] == (SCHEDULED, pytest.approx(eta.timestamp(), abs=1e-6))
        # Without an offset it is read in --tz (else UTC).
        done = lq("call", db, "add", 3, 3, "--eta", "2030-01-01T09:00:00",
                  "--tz", "Asia/Shanghai", cwd=cwd)
        assert timing(done.stdout.strip())[:2] == (SCHEDULED, utc_ts(2030, 1, 1, 1, 0))
        done = lq("call", db, "add", 3, 3, "--eta", "2030-01-01T09:00:00", cwd=cwd)
        assert timing(done.stdout.strip())[:2] == (SCHEDULED, utc_ts(2030, 1, 1, 9, 0))

        # --expires: seconds from now, or an ISO time; one in the past never runs.
        done = lq("call", db, "add", 4, 4, "--expires", 60, cwd=cwd)
        assert timing(done.stdout.strip())[2] == pytest.approx(time.time() + 60, abs=10)
        done = lq("call", db, "add", 5, 5, "--expires", "2020-01-01T00:00:00+00:00", cwd=cwd)
        expired_id = done.stdout.strip()
        assert timing(expired_id)[2] == utc_ts(2020, 1, 1, 0, 0)
        shown = lq("result", db, expired_id, cwd=cwd)
        assert (shown.returncode, shown.stdout) == (0, "EXPIRED\n"), shown.stderr

        for task_id, value in [(countdown_id, "3"), (offset_id, "4")]:
            done = lq("result", db, task_id, "--wait", "--timeout", 15, cwd=cwd)
            assert (done.returncode, done.stdout) == (0, value + "\n"), done.stderr
        (started_at, eta_at), = sql(db, "SELECT started_at, ? FROM tasks WHERE id = ?",
                                    eta.timestamp(), offset_id)
        assert started_at >= eta_at
        wait_until(lambda: project.state(expired_id) == EXPIRED, 10, "the worker to mark it")

    @pytest.mark.parametrize("args, message", [
        (["--eta", "tomorrow"], "is not an ISO 8601 date and time"),
        (["--eta", "2030-13-01T00:00:00"], "is not an ISO 8601 date and time"),
        (["--expires", "soon"], "is not an ISO 8601 date and time"),
        (["--eta", "2030-01-01T09:00:00", "--tz", "Mars/Olympus_Mons"],
         "unknown time zone 'Mars/Olympus_Mons'"),
        (["--countdown", "1", "--eta", "2030-01-01T09:00:00+00:00"], "--countdown or --eta"),
        (["--countdown", "-1"], "--countdown"),
        (["--countdown", "soon"], "--countdown"),
    ], ids=["eta-text", "eta-month-13", "expires-text", "unknown-zone", "countdown-and-eta",
            "negative-countdown", "countdown-text"])
    def test_call_bad_timing_exits_2_and_writes_nothing(self, project, args, message):
        project.delay("add", 1, 1)
        before = sha256(project.db)
        done = lq("call", project.db, "add", 1, 2, *args, cwd=project.dir, timeout=30)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "Usage:" in done.stderr and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert sha256(project.db) == before

    def test_call_with_expires_before_eta_exits_1_and_writes_nothing(self, project):
        project.delay("add", 1, 1)
        before = sha256(project.db)
        assert_one_line_error(lq("call", project.db, "add", 1, 2,
                                 "--eta", "2030-01-01T09:00:00+00:00",
                                 "--expires", "2030-01-01T08:00:00+00:00", cwd=project.dir),
                              contains="expires is earlier than eta")
        assert sha256(project.db) == before

    @staticmethod
    def _parse_schedules(text):
        """{name: {"task", "schedule", "zone", "last", "next": [...]}} from `schedules`."""
        out, current = {}, None
        for line in text.splitlines():
            if not line.startswith(" "):
                name, _, task = line.partition("  ->  ")
                current = out[name] = {"task": task, "next": []}
            elif line.startswith("  schedule  "):
                current["schedule"] = line[len("  schedule  "):]
            elif line.startswith("  zone      "):
                current["zone"] = line[len("  zone      "):]
            elif line.startswith("  last fire "):
                current["last"] = line[len("  last fire "):]
            else:
                current["next"].append(line.split()[-1])
        return out

    def test_schedules_lists_next_fires_in_their_own_zone(self, project, workers):
        project.write_module("beat", '''
            from litequeue import crontab
            from tasks import app, record

            app.add_periodic_task(crontab(minute=0, hour=9, day_of_week="mon-fri",
                                          tz="Asia/Shanghai"), record.s("m"), name="morning")
            app.add_periodic_task(crontab(minute=30, hour=2, tz="America/New_York"),
                                  record.s("n"), name="nightly", catch_up="all")
            app.add_periodic_task(1.0, record.s("t"), name="tick")
        ''')
        before = dt.datetime.now(UTC)
        w = workers.start(project, app=("tasks", "beat"), concurrency=1)
        after = dt.datetime.now(UTC)
        wait_until(lambda: any(s == SUCCESS for s, _ in fires_of(project.db, "tick").values()),
                   10, "a tick")
        w.signal(signal.SIGTERM)
        assert w.wait(20) == 0
        done = lq("schedules", project.db, "-n", 4, cwd=project.dir)
        assert done.returncode == 0, done.stderr
        listed = self._parse_schedules(done.stdout)
        assert list(listed) == ["morning", "nightly", "tick"], done.stdout
        assert {name: (s["task"], s["zone"]) for name, s in listed.items()} == {
            "morning": ("tasks.record", "Asia/Shanghai"),
            "nightly": ("tasks.record", "America/New_York"), "tick": ("tasks.record", "UTC")}
        assert listed["morning"]["schedule"].startswith("0 9 * * mon-fri  (cron, catch_up=once")
        assert listed["nightly"]["schedule"].startswith("30 2 * * *  (cron, catch_up=all")
        assert listed["tick"]["schedule"].startswith("1.0  (every, catch_up=once")

        # The next four fire times, in the schedule's own zone, as next_after gives them
        # from the time the worker synced them.
        for name, cron in [
                ("morning", crontab(minute=0, hour=9, day_of_week="mon-fri", tz="Asia/Shanghai")),
                ("nightly", crontab(minute=30, hour=2, tz="America/New_York"))]:
            candidates = []
            for t in (before, after):
                upcoming = [cron.next_after(t)]
                for _ in range(3):
                    upcoming.append(cron.next_after(upcoming[-1]))
                candidates.append([f.isoformat() for f in upcoming])
            assert listed[name]["next"] in candidates, (name, done.stdout)
        assert listed["morning"]["next"][0].endswith("T09:00:00+08:00")

        # The tick fired: its last fire and the times after it, in UTC.
        (last_fire, next_fire), = sql(project.db, "SELECT last_fire, next_fire FROM schedules "
                                      "WHERE name = 'tick'")
        assert listed["tick"]["last"] == dt.datetime.fromtimestamp(last_fire, UTC).isoformat()
        assert listed["tick"]["next"] == [
            dt.datetime.fromtimestamp(next_fire + k, UTC).isoformat() for k in range(4)]
        assert fire_time(max(fires_of(project.db, "tick"))) == last_fire

        fewer = self._parse_schedules(lq("schedules", project.db, "-n", 1, cwd=project.dir).stdout)
        assert all(len(s["next"]) == 1 for s in fewer.values())
        litequeue._Storage(str(project.dir / "empty.sqlite")).close()
        empty = lq("schedules", project.dir / "empty.sqlite", cwd=project.dir)
        assert empty.returncode == 0 and "no periodic tasks" in empty.stdout

    def test_schedules_shows_never_for_a_schedule_that_has_not_fired(self, project, workers):
        project.write_module("beat", '''
            from litequeue import crontab
            from tasks import app, record
            app.add_periodic_task(crontab(minute=0, hour=9, day_of_month=1, month_of_year=1,
                                          tz="Asia/Shanghai"), record.s("m"), name="new-year")
        ''')
        w = workers.start(project, app=("tasks", "beat"), concurrency=1)
        w.signal(signal.SIGTERM)
        assert w.wait(20) == 0
        done = lq("schedules", project.db, cwd=project.dir)
        assert done.returncode == 0, done.stderr
        listed = self._parse_schedules(done.stdout)
        assert fires_of(project.db, "new-year") == {}                 # it never fired
        assert listed["new-year"]["last"] == "never", done.stdout

    # -- failure handling (issue 4) ---------------------------------------------------------

    def test_result_shows_every_attempt_s_error(self, project, workers):
        workers.start(project, concurrency=1)
        db, cwd = project.db, project.dir
        recovered = project.delay("flaky", "cli", 2)
        failed = project.delay("flaky", "clifail", 99)
        assert recovered.get(timeout=20) == 2
        failed.get(timeout=20, propagate=False)
        done = lq("result", db, recovered.id, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "2\n"), done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 2, done.stderr
        for n, line in enumerate(lines):
            assert line.startswith(f"  attempt {n + 1} at 20"), line
            assert line.endswith(f": builtins.OSError: cli failed on retry {n}"), line
        done = lq("result", db, failed.id, cwd=cwd)
        assert done.returncode == 1
        assert done.stdout.startswith("FAILURE: ") and "clifail failed on retry 3" in done.stdout
        assert "raise IOError" in done.stderr                       # the traceback
        assert done.stderr.count("  attempt ") == 4
        out = json.loads(lq("result", db, recovered.id, "--json", cwd=cwd).stdout)
        assert (out["state"], out["result"], out["retries"]) == (SUCCESS, 2, 2)
        assert [(e["type"], e["message"], e["attempt"]) for e in out["errors"]] == \
            [("builtins.OSError", f"cli failed on retry {n}", n + 1) for n in range(2)]
        assert all(isinstance(e["time"], float) for e in out["errors"])
        out = json.loads(lq("result", db, failed.id, "--json", cwd=cwd).stdout)
        assert (out["state"], out["retries"], len(out["errors"])) == (FAILURE, 3, 4)

    def test_retry_queues_a_finished_task_again(self, project, workers):
        db, cwd = project.db, project.dir
        revoked = project.delay("add", 2, 3)                         # no worker running
        assert revoked.revoke() is True
        failed = project.delay("fail", "again")
        w = workers.start(project, concurrency=1)
        assert failed.get(timeout=20, propagate=False) is not None and failed.state == FAILURE
        done_ok = project.delay("add", 1, 1)
        assert done_ok.get(timeout=20) == 2
        for res in (revoked, failed):
            done = lq("retry", db, res.id, cwd=cwd)
            assert (done.returncode, done.stdout) == (0, f"queued {res.id} again\n"), done.stderr
        # Fresh handles: an AsyncResult keeps a finished row it has read, as Celery's does.
        revoked, failed = (project.app.AsyncResult(r.id) for r in (revoked, failed))
        assert revoked.get(timeout=20) == 5 and revoked.state == SUCCESS
        assert failed.get(timeout=20, propagate=False) is not None
        assert failed.state == FAILURE and len(failed.errors) == 2   # both attempts kept
        done = lq("retry", db, done_ok.id, cwd=cwd)
        assert done.returncode == 1 and "the task is SUCCESS" in done.stderr, done.stderr
        assert_one_line_error(lq("retry", db, "no-such-id", cwd=cwd), contains="no task")
        assert w.proc.poll() is None

    def test_purge_deletes_waiting_tasks_only(self, project, workers):
        db, cwd = project.db, project.dir
        w = workers.start(project, concurrency=1)
        finished = project.delay("add", 1, 1)
        assert finished.get(timeout=20) == 2
        running = project.delay("block", "purge")
        wait_until(lambda: project.started("purge"), 10, "the task to start")
        other = [project.app.tasks["tasks.add"].apply_async((n, n), queue="other")
                 for n in range(3)]
        later = [project.app.tasks["tasks.add"].apply_async((n, n), countdown=600)
                 for n in range(2)]
        waiting = [project.delay("add", n, n) for n in range(4)]       # behind the block
        done = lq("purge", db, cwd=cwd)                                  # no tty: it asks
        assert done.returncode == 1 and "Aborted" in done.stderr, done.stderr
        assert {r.state for r in waiting + later} == {PENDING, SCHEDULED}
        done = lq("purge", db, "--queue", "other", "--yes", cwd=cwd)
        assert (done.returncode, done.stdout) == \
            (0, "purged 3 waiting task(s) from queue 'other'\n"), done.stderr
        assert {r.state for r in other} == {UNKNOWN}
        done = lq("purge", db, "-y", cwd=cwd)
        assert (done.returncode, done.stdout) == \
            (0, "purged 6 waiting task(s) from every queue\n"), done.stderr
        assert {r.state for r in waiting + later} == {UNKNOWN}
        assert finished.state == SUCCESS and running.state == STARTED
        project.go("purge")
        assert running.get(timeout=20) == "purge"
        assert w.proc.poll() is None

    def test_revoke(self, project, workers):
        db, cwd = project.db, project.dir
        queued = project.delay("stamp", "cli")                      # no worker running
        done = lq("revoke", db, queued.id, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, f"revoked {queued.id}\n"), done.stderr
        assert queued.state == REVOKED
        done = lq("revoke", db, queued.id, cwd=cwd)
        assert (done.returncode, done.stdout) == (1, "not revoked: the task is REVOKED\n")
        assert_one_line_error(lq("revoke", db, "no-such-id", cwd=cwd), contains="no task")
        w = workers.start(project, concurrency=1)
        finished = project.delay("add", 1, 1)
        assert finished.get(timeout=20) == 2
        done = lq("revoke", db, finished.id, cwd=cwd)
        assert (done.returncode, done.stdout) == (1, "not revoked: the task is SUCCESS\n")
        running = project.delay("block", "cli")
        ((_, pid),) = wait_until(lambda: project.started("cli"), 10, "the task to start")
        done = lq("revoke", db, running.id, cwd=cwd)
        assert done.returncode == 1 and "STARTED (use --terminate)" in done.stdout, done.stdout
        done = lq("revoke", db, running.id, "--terminate", cwd=cwd)
        assert (done.returncode, done.stdout) == (0, f"revoked {running.id}\n"), done.stderr
        wait_until(lambda: not alive(pid), 5, "the child to be killed")
        wait_until(lambda: len(w.live_children()) == 1, 10, "a replacement child")
        done = lq("result", db, running.id, cwd=cwd)
        assert (done.returncode, done.stdout) == (0, "REVOKED\n"), done.stderr
        assert project.stamps("cli") == []


# A client in "another language": stdlib sqlite3 and msgpack only. It inserts tasks with
# one INSERT each (rings nothing) and polls their rows until they are finished.
PROTOCOL_CLIENT = '''
import json, sqlite3, sys, time, uuid
import msgpack

db, calls = sys.argv[1], json.loads(sys.argv[2])
conn = sqlite3.connect(db, timeout=30, isolation_level=None)
out = []
for name, args, kwargs in calls:
    task_id = str(uuid.uuid4())
    payload = msgpack.packb({"args": args, "kwargs": kwargs})
    started = time.monotonic()
    conn.execute("INSERT INTO tasks (id, name, payload) VALUES (?, ?, ?)",
                 (task_id, name, payload))
    deadline = started + 30
    while True:
        state, result, tb = conn.execute(
            "SELECT state, result, traceback FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if state in ("SUCCESS", "FAILURE") or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    out.append({"id": task_id, "state": state, "traceback": tb,
                "result": None if result is None else msgpack.unpackb(result),
                "elapsed": time.monotonic() - started})
print(json.dumps({"litequeue_imported": "litequeue" in sys.modules, "calls": out}))
'''


class TestProtocol:

    def test_enqueue_and_read_without_litequeue(self, project, workers):
        workers.start(project, concurrency=1)
        calls = [["tasks.add", [2, 3], {}], ["tasks.add", [], {"x": "a", "y": "b"}],
                 ["tasks.fail", ["boom"], {}]]
        out = json.loads(python(PROTOCOL_CLIENT, project.dir, project.db, json.dumps(calls),
                                isolated=True))
        assert out["litequeue_imported"] is False
        ok, kwargs, failed = out["calls"]
        assert (ok["state"], ok["result"]) == (SUCCESS, 5)
        assert (kwargs["state"], kwargs["result"]) == (SUCCESS, "ab")
        assert failed["state"] == FAILURE
        assert failed["result"]["type"] == "tasks.TaskFailed"
        assert failed["result"]["message"] == "boom" and failed["result"]["args"] == ["boom"]
        assert "raise TaskFailed(message)" in failed["traceback"]
        # litequeue reads what the foreign client wrote, and the client's defaults held.
        row = project.row(ok["id"])
        assert (row["queue"], row["priority"], row["attempt"]) == ("default", 0, 1)
        assert project.app.AsyncResult(ok["id"]).get(timeout=5) == 5

    def test_writers_that_do_not_ring_are_picked_up(self, project, workers):
        """The data_version fallback: an INSERT that rings nothing still runs, within the
        fallback's poll interval (0.2 s here), not only when something else wakes it."""
        workers.start(project, "--poll-interval", "0.2", concurrency=1)
        assert project.delay("add", 0, 0).get(timeout=10) == 0   # worker idle after this
        calls = [["tasks.add", [n, n], {}] for n in range(3)]
        out = json.loads(python(PROTOCOL_CLIENT, project.dir, project.db, json.dumps(calls),
                                isolated=True))
        for n, call in enumerate(out["calls"]):
            assert (call["state"], call["result"]) == (SUCCESS, 2 * n)
        elapsed = [round(call["elapsed"], 3) for call in out["calls"]]
        assert max(elapsed) < 1.0, f"picked up after {elapsed} s with a 0.2 s fallback poll"


def adder_app(path):
    """(db path, a producer app on it, its add task): the in-process canvas tests' setup."""
    db = str(path)
    app = LiteQueue(db)

    @app.task
    def add(x, y):
        return x + y

    return db, app, add


@pytest.fixture
def canvas(tmp_path):
    return CanvasProject(tmp_path / "canvas")


def start_canvas_worker(workers, canvas, concurrency=2):
    return workers.start(canvas, concurrency=concurrency, app=("canvas_tasks",))


class TestCanvas:

    def test_chain_passes_each_result_on_and_parent_leads_back(self, canvas, workers):
        start_canvas_worker(workers, canvas)
        out = canvas.client('''
            r = (add.s(1, 2) | sub.s(10) | mul.s(10)).apply_async()
            c = chain(add.s(1, 1), add.si(5, 5), sub.s(1))()
            p = r.parent.parent
            print(json.dumps({
                "values": [r.get(timeout=30), r.parent.get(), p.get(), c.get(timeout=30)],
                "ids": [r.parent_id == r.parent.id, r.root_id == p.id, p.parent is None,
                        p.root_id == p.id], "last_id": r.id, "first_id": p.id,
                "children": [x.id for x in p.children] == [r.parent.id],
                "args": [p.args, r.parent.args, r.args, r.name]}))
        ''')
        # Celery's rule: a parent's result goes first: sub(3, 10) = -7, then mul(-7, 10).
        assert out["values"] == [-70, -7, 3, 9]
        assert all(out["ids"]) and out["children"]
        assert out["args"] == [[1, 2], [3, 10], [-7, 10], "canvas_tasks.mul"]
        # Any process reads the relations back from the database.
        again = canvas.client(f'''
            r = app.AsyncResult({out["last_id"]!r})
            print(json.dumps([r.parent.parent.id, r.root_id, r.state]))
        ''')
        assert again == [out["first_id"], out["first_id"], SUCCESS]

    def test_partial_arguments_go_first_as_in_celery(self, canvas, workers):
        start_canvas_worker(workers, canvas)
        out = canvas.client('''
            s = sub.s(2)
            print(json.dumps([s.delay(10).get(timeout=30), s.clone((20,)).apply_async().get(
                timeout=30), sub.si(1, 2).delay(99).get(timeout=30), s.apply((5,)).get(),
                s(7), repr(s), signature("canvas_tasks.sub", (9, 4)).delay().get(timeout=30)]))
        ''')
        assert out == [8, 18, -1, 3, 5, "canvas_tasks.sub(2)", 5]

    def test_links_and_errbacks_are_queued_by_the_commit_that_ends_the_parent(
            self, canvas, workers):
        start_canvas_worker(workers, canvas)
        out = canvas.client('''
            cb = add.s(100).set(task_id=str(uuid.uuid4()))
            eb = errback3.s().set(task_id=str(uuid.uuid4()))
            ok = add.apply_async((1, 2), link=[cb, mul.s(2)], link_error=eb)
            ok_children = lambda: sorted(c.name for c in ok.children)
            link_value = app.AsyncResult(cb.id).get(timeout=30)
            bad = fail.apply_async(("broken",), link=add.s(1), link_error=[errback3.s(),
                                                                        errback1.s()])
            bad.get(timeout=30, propagate=False)
            kids = bad.children
            print(json.dumps({
                "link": link_value, "ok": ok.get(timeout=30),
                "ok_children": ok_children(), "dropped_errback": app.AsyncResult(eb.id).state,
                "bad_id": bad.id,
                "bad_children": sorted([c.name, c.get(timeout=30, propagate=False)
                                        if c.name != "canvas_tasks.add" else c.state]
                                       for c in kids)}))
        ''')
        assert out["link"] == 103 and out["ok"] == 3
        assert out["ok_children"] == ["canvas_tasks.add", "canvas_tasks.mul"]
        # An errback of a task that succeeded never runs: its row is gone.
        assert out["dropped_errback"] == UNKNOWN
        bad = out["bad_id"]
        # The link of a failed task ends as it did; both errback forms ran, once each.
        assert out["bad_children"] == [["canvas_tasks.add", FAILURE],
                                       ["canvas_tasks.errback1", f"errback1 {bad}"],
                                       ["canvas_tasks.errback3", f"errback3 {bad}"]]
        assert sorted(canvas.logged("errbacks")) == sorted([
            [bad, "canvas_tasks.fail", ["broken"], "ValueError", "broken", True], [bad]])

    def test_a_failure_ends_the_rest_of_the_chain_and_its_errback_runs_once(
            self, canvas, workers):
        start_canvas_worker(workers, canvas)
        out = canvas.client('''
            r = (add.s(1, 1) | fail.s() | add.s(1) | add.s(1)).on_error(errback3.s()).delay()
            try:
                r.get(timeout=30)
            except ValueError as exc:
                raised = [type(exc).__name__, str(exc)]
            failing = r.parent.parent
            states = [r.state, r.parent.state, failing.state, failing.parent.state]
            eb = r.children[0]
            print(json.dumps({"raised": raised, "states": states, "failing": failing.id,
                              "errback": eb.get(timeout=30), "errbacks": len(r.children)}))
        ''')
        assert out["raised"] == ["ValueError", "2"]
        assert out["states"] == [FAILURE, FAILURE, FAILURE, SUCCESS]
        # The errback is told about the task that failed, not the ones it took down.
        assert out["errback"] == f"errback3 {out['failing']}" and out["errbacks"] == 1
        assert canvas.logged("errbacks") == [
            [out["failing"], "canvas_tasks.fail", [2], "ValueError", "2", True]]

    def test_a_chord_body_gets_every_result_in_header_order_once(self, canvas, workers):
        start_canvas_worker(workers, canvas, concurrency=3)
        out = canvas.client('''
            # Later members finish first: the body still sees header order.
            r = chord([nap_echo.s(i, (9 - i) * 0.02) for i in range(10)])(collect.s())
            other = chord([add.s(i, i) for i in range(30)], collect.s())()
            empty = chord([], collect.s()).apply_async()
            header = r.parent
            print(json.dumps({"body": r.get(timeout=30), "other": other.get(timeout=30),
                              "empty": empty.get(timeout=30), "group": header.id,
                              "restored": app.GroupResult(header.id).get(timeout=30),
                              "parent": app.AsyncResult(r.id).parent.id == header.id}))
        ''')
        assert out["body"] == list(range(10)) and out["empty"] == []
        assert out["other"] == [2 * i for i in range(30)]
        assert out["restored"] == list(range(10)) and out["parent"]
        # Counted in the database: a counter and one slot per member, emptied once fired.
        assert sql(canvas.db, "SELECT size, done, fired FROM chords WHERE id = ?",
                   out["group"]) == [(10, 10, 1)]
        assert sql(canvas.db, "SELECT count(*) FROM chord_slots")[0][0] == 0

    def test_a_failing_member_fails_the_body_with_chord_error(self, canvas, workers):
        start_canvas_worker(workers, canvas)
        out = canvas.client('''
            r = chord([add.s(1, 1), fail.s("member"), nap_echo.s(3, 0.2)],
                      collect.s()).on_error(errback1.s()).apply_async()
            exc = r.get(timeout=30, propagate=False)
            members = r.parent
            members.join(timeout=30, propagate=False)
            print(json.dumps({"type": type(exc).__name__, "is_chord_error":
                              isinstance(exc, ChordError), "message": str(exc),
                              "bad": members[1].id, "states": [m.state for m in members],
                              "body": r.id, "errback": r.children[0].get(timeout=30)}))
        ''')
        assert out["type"] == "ChordError" and out["is_chord_error"]
        assert out["message"] == f"Dependency {out['bad']} raised ValueError('member')"
        # The other members still run; the body's errback runs once, for the body.
        assert out["states"] == [SUCCESS, FAILURE, SUCCESS]
        assert out["errback"] == f"errback1 {out['body']}"
        assert canvas.logged("errbacks") == [[out["body"]]]

    def test_group_id_is_saved_and_read_back_in_another_process(self, canvas, workers):
        start_canvas_worker(workers, canvas)
        gid = canvas.client('''
            g = group(add.s(i, 1) for i in range(5)).apply_async()
            g.get(timeout=30)
            print(json.dumps(g.save().id))
        ''')
        out = canvas.client(f'''
            from litequeue import GroupResult
            g = app.GroupResult({gid!r})
            print(json.dumps([g.get(timeout=30), g.completed_count(),
                              GroupResult.restore({gid!r}).id, GroupResult.restore("nope")]))
        ''')
        assert out == [[1, 2, 3, 4, 5], 5, gid, None]

    def test_relations_of_subtasks_queued_inside_a_task(self, canvas, workers):
        start_canvas_worker(workers, canvas)
        out = canvas.client('''
            r = spawner.delay(3)
            ids = r.get(timeout=30)
            kids = [app.AsyncResult(i) for i in ids]
            print(json.dumps([[k.parent_id == r.id and k.root_id == r.id for k in kids],
                              sorted(c.id for c in r.children) == sorted(ids),
                              [k.get(timeout=30) for k in kids]]))
        ''')
        assert out == [[True, True, True], True, [0, 2, 4]]

    def test_update_state_shows_progress_and_is_coalesced(self, canvas, workers):
        start_canvas_worker(workers, canvas, concurrency=1)
        # Count every write of the meta column with a trigger: real SQLite, no mock.
        assert canvas.client("print(json.dumps(add.delay(0, 0).get(timeout=30)))") == 0
        sql_write(canvas.db, "CREATE TABLE meta_writes (at REAL)",
                  "CREATE TRIGGER count_meta AFTER UPDATE OF meta ON tasks BEGIN "
                  "INSERT INTO meta_writes VALUES (julianday('now')); END")
        task_id = canvas.client('''
            print(json.dumps(progress.delay(20000, "go").id))
        ''')
        # The last of 20 000 reports reaches the database, though the loop is long over.
        out = canvas.client(f'''
            r = app.AsyncResult({task_id!r})
            deadline = time.monotonic() + 30
            while not (isinstance(r.info, dict) and r.info.get("current") == 20000):
                assert time.monotonic() < deadline, (r.state, r.info)
                time.sleep(0.01)
            print(json.dumps([r.state, r.info, r.ready()]))
        ''')
        assert out == ["PROGRESS", {"current": 20000, "total": 20000}, False]
        writes = sql(canvas.db, "SELECT count(*), (max(at) - min(at)) * 86400 FROM "
                                "meta_writes")[0]
        # At most one write per 0.2 s of reporting (plus the first and the last).
        assert writes[0] <= (writes[1] or 0) / 0.2 + 3, writes
        done = lq("result", canvas.db, task_id, cwd=canvas.dir)
        assert done.stdout.strip() == "PROGRESS" and done.returncode == 0
        (canvas.marks / "go").touch()
        assert canvas.client(f"print(json.dumps([app.AsyncResult({task_id!r}).get(timeout=30),"
                             f" app.AsyncResult({task_id!r}).info]))") == [20000, 20000]

    def test_result_wait_draws_a_progress_bar(self, canvas, workers):
        start_canvas_worker(workers, canvas, concurrency=1)
        task_id = canvas.client('print(json.dumps(progress.delay(4, "go").id))')
        waiter = subprocess.Popen([sys.executable, str(LITEQUEUE_PY), "result", canvas.db,
                                   task_id, "--wait", "--timeout", "60"], cwd=canvas.dir,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(waiter.stderr), daemon=True)
        reader.start()
        try:
            # stderr is not a terminal: one line per change of the bar.
            wait_until(lambda: any("4/4" in line for line in lines), 30,
                       lambda: f"a full progress bar, saw {lines}")
            (canvas.marks / "go").touch()
            out = waiter.stdout.read()
            waiter.wait(timeout=60)
            reader.join(timeout=10)
        finally:
            if waiter.poll() is None:
                waiter.kill()
                waiter.wait()
        err = "".join(lines)
        assert waiter.returncode == 0 and out.strip() == "4"
        assert "PROGRESS [" in err and "100% 4/4" in err, err

    def test_hooks_and_signals_run_and_a_raising_handler_breaks_nothing(self, canvas,
                                                                        workers):
        worker = start_canvas_worker(workers, canvas, concurrency=1)
        out = canvas.client('''
            ok, bad, again = hooked.delay("ok"), hooked.delay("fail"), hooked.delay("retry")
            then = add.s(1).set(task_id=str(uuid.uuid4()))
            print(json.dumps([ok.id, ok.get(timeout=30), bad.id,
                              bad.get(timeout=30, propagate=False).__class__.__name__,
                              again.id, again.get(timeout=30), quiet.delay(21).get(timeout=30),
                              quiet.apply_async((21,), link=then) and
                              app.AsyncResult(then.id).get(timeout=30)]))
        ''')
        ok, bad, again = out[0], out[2], out[4]
        assert out[1] == "ok" and out[3] == "KeyError" and out[5] == "retry"
        # ignore_result: nothing of the return value is kept, but a link still gets it.
        assert out[6] is None and out[7] == 43
        hooks = canvas.logged("hooks")
        assert ["on_success", ok, "ok", ["ok"]] in hooks
        assert ["on_failure", bad, "KeyError", True] in hooks
        assert ["on_retry", again, "OSError"] in hooks
        assert ["on_success", again, "retry", ["retry"]] in hooks
        assert {tuple(h[1:]) for h in hooks if h[0] == "after_return"} == {
            (ok, SUCCESS), (bad, FAILURE), (again, RETRY), (again, SUCCESS)}
        logged = canvas.logged("signals")
        assert ["task_prerun", ok, "canvas_tasks.hooked"] in logged
        assert ["task_postrun", ok, SUCCESS] in logged
        assert ["task_success", "canvas_tasks.hooked", "ok"] in logged
        assert ["task_failure", bad, "KeyError"] in logged
        assert ["task_retry", again, "OSError"] in logged
        assert ["worker_ready"] in logged
        assert "a signal handler that breaks" in worker.log_text()
        assert "its after_return hook raised" in worker.log_text()
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert canvas.logged("signals")[-1] == ["worker_shutdown"]

    def test_bad_canvas_input_is_refused_and_writes_nothing(self, canvas):
        out = canvas.client('''
            add.delay(0, 0)      # the file exists, with one row
            errors = []
            for build in (
                    lambda: add.apply_async((1, 1), link=signature("canvas_tasks.nope")),
                    lambda: chord([add.s(1, 1)], body=add),
                    lambda: (add.s(1, 1) | add.s(object()) | add.s(2)).delay(),
                    lambda: chord([add.s(i, i) for i in range(50)] + [add.s({1}, 1)])(
                        collect.s()),
                    lambda: group(add.s(1, 1), "add").delay(),
                    lambda: add.apply_async((1, 1), link=add),
                    lambda: chord([add.s(1, 1)], collect.s().set(queue=7)).delay()):
                try:
                    build()
                    errors.append(None)
                except Exception as exc:
                    errors.append(type(exc).__name__)
            print(json.dumps(errors))
        ''')
        # A queue of the wrong type is WrongType: a LitequeueError that is a TypeError.
        assert out == ["UnknownTask", "TypeError", "SerializationError", "SerializationError",
                       "TypeError", "TypeError", "WrongType"]
        # Only the first add was written.
        assert canvas.count() == 1
        assert canvas.count("name = 'canvas_tasks.nope'") == 0

    def test_revoking_a_waiting_step_ends_the_rest_of_its_chain(self, canvas, workers):
        start_canvas_worker(workers, canvas)
        out = canvas.client('''
            r = (nap_echo.s(1, 0.5) | add.s(1) | add.s(1)).delay()
            middle = r.parent
            revoked = middle.revoke()
            try:
                r.get(timeout=30)
            except Exception as exc:
                raised = type(exc).__name__
            print(json.dumps([revoked, raised, middle.state, r.state,
                              r.parent.parent.get(timeout=30)]))
        ''')
        assert out == [True, "TaskRevoked", REVOKED, REVOKED, 1]

    def test_a_countdown_inside_a_chain_counts_from_the_previous_step(self, canvas, workers):
        start_canvas_worker(workers, canvas)
        out = canvas.client('''
            r = (add.s(1, 1) | add.s(1).set(countdown=0.5)).delay()
            value = r.get(timeout=30)
            first = r.parent
            print(json.dumps([value, r.date_started.timestamp() -
                              first.date_done.timestamp()]))
        ''')
        assert out[0] == 3 and out[1] >= 0.5

    def test_options_of_a_signature_and_send_task_with_links(self, tmp_path):
        db, app, add = adder_app(tmp_path / "o.sqlite")
        r = add.s(1, 2).apply_async(task_id="fixed", queue="q", priority=3)
        assert (r.id, r.state, r.queue) == ("fixed", PENDING, "q")
        r = app.send_task(add.name, (1, 2), link=add.s(3), link_error=add.si(0, 0))
        kids = sql(db, "SELECT name, state, waits, parent_id FROM tasks WHERE parent_id = ? "
                       "ORDER BY seq", r.id)
        assert kids == [(add.name, "WAITING", "link", r.id), (add.name, "WAITING", "error_si",
                                                              r.id)]
        assert [k.state for k in r.children] == [PENDING, PENDING]   # as Celery shows it
        assert sql(db, "SELECT followers FROM tasks WHERE id = ?", r.id) == [(1,)]

    def test_pruning_results_also_prunes_saved_groups_and_chords(self, tmp_path):
        db, app, add = adder_app(tmp_path / "p.sqlite")
        from litequeue import chord
        g = group(add.s(1, 1), add.s(2, 2)).apply_async()
        c = chord([add.s(1, 1)], add.s(1)).apply_async()
        sql_write(db, "UPDATE tasks SET state = 'SUCCESS', finished_at = 1",
                  "UPDATE chords SET fired = 1", "UPDATE groups SET created_at = 1")
        assert app.GroupResult(g.id).id == g.id
        assert app._storage().prune(time.time()) == 4
        assert sql(db, "SELECT (SELECT count(*) FROM groups), (SELECT count(*) FROM chords)") \
            == [(0, 0)]
        assert GroupResult.restore(g.id, app=app) is None and c.state == UNKNOWN
        with pytest.raises(TaskNotFound):
            app.GroupResult(g.id)

    def test_requeueing_a_failed_step_resumes_its_chain(self, canvas, workers):
        start_canvas_worker(workers, canvas)
        out = canvas.client('''
            r = (add.s(1, 1) | fails_once.s("ok") | add.s(1)).delay()
            r.get(timeout=30, propagate=False)
            print(json.dumps([r.id, r.parent.id, r.state]))
        ''')
        tail, step, state = out
        assert state == FAILURE
        # The tail never ran: it cannot be requeued alone (it has no input).
        refused = lq("retry", canvas.db, tail, cwd=canvas.dir)
        assert refused.returncode == 1
        (canvas.marks / "ok").touch()
        assert lq("retry", canvas.db, step, cwd=canvas.dir).returncode == 0
        assert canvas.client(f"print(json.dumps(app.AsyncResult({tail!r}).get(timeout=30)))") == 3

    def test_an_errback_chain_of_a_success_leaves_nothing_waiting(self, canvas, workers):
        start_canvas_worker(workers, canvas)
        out = canvas.client('''
            r = add.apply_async((1, 2), link_error=chain(errback1.s(), collect.s()))
            print(json.dumps(r.get(timeout=30)))
        ''')
        assert out == 3
        wait_until(lambda: canvas.count("state = 'WAITING'") == 0, 10, "no WAITING rows")

    def test_options_set_on_a_chain_group_or_chord_reach_every_task(self, tmp_path):
        db, app, add = adder_app(tmp_path / "set.sqlite")
        from litequeue import chain, chord
        chain(add.s(1, 1), add.s(1)).set(queue="q1", priority=3).apply_async()
        group(add.s(1, 1), add.s(2, 2)).set(queue="q2").apply_async()
        chord([add.s(1, 1)], add.s(1), queue="q3").apply_async()
        assert sorted(sql(db, "SELECT queue, count(*) FROM tasks GROUP BY queue")) == [
            ("q1", 2), ("q2", 2), ("q3", 2)]
        with pytest.raises(ConfigurationError, match="countdown"):
            (add.s(1, 1) | add.s(1).set(eta=dt.datetime.now(dt.timezone.utc))).delay()
        with pytest.raises(TypeError, match="unsupported"):
            chain(add.s(1, 1), add.s(1)).set(routing_key="x").delay()

    def test_purging_a_queue_drops_what_waited_on_it_elsewhere(self, tmp_path):
        db, app, add = adder_app(tmp_path / "purge.sqlite")
        (add.s(1, 1).set(queue="a") | add.s(1).set(queue="b") | add.s(2).set(queue="c")).delay()
        assert app.admin.purge("a") == 1
        assert sql(db, "SELECT count(*) FROM tasks")[0][0] == 0

    def test_eager_mode_runs_the_whole_canvas_inline(self, tmp_path):
        app = LiteQueue(str(tmp_path / "eager.sqlite"), task_always_eager=True)

        @app.task
        def add(x, y):
            return x + y

        @app.task
        def total(values):
            return sum(values)

        @app.task
        def boom(x):
            raise ValueError(x)

        seen = []

        @app.task
        def eb(task_id):
            seen.append(task_id)

        from litequeue import chain, chord
        assert (add.s(1, 2) | add.s(3)).delay().get() == 6
        assert chord([add.s(i, i) for i in range(4)])(total.s()).get() == 12
        r = chain(add.s(1, 1), boom.s(), add.s(1)).on_error(eb.s()).delay()
        with pytest.raises(ValueError):
            r.get()
        assert len(seen) == 1
        bad = chord([add.s(1, 1), boom.s(2)], total.s()).delay()
        with pytest.raises(litequeue.ChordError):
            bad.get()
        told = []

        @app.task
        def eb3(request, exc, traceback):
            told.append((request.id, type(exc).__name__, "Traceback" in traceback))

        r = boom.apply_async((3,), link_error=chain(eb3.s(), add.si(1, 1)))
        assert told == [(r.id, "ValueError", True)]
        assert add.apply_async((1, 1), link=add.s(5)).successful()
        assert not (tmp_path / "eager.sqlite").exists()

    def test_shared_task_registers_with_every_app(self, tmp_path):
        @litequeue.shared_task
        def shared_double(x):
            return 2 * x

        try:
            a = LiteQueue(str(tmp_path / "a.sqlite"), task_always_eager=True)
            name = [n for n in a.tasks if n.endswith("shared_double")]
            assert name and shared_double.delay(21).get() == 42
            assert shared_double(2) == 4 and shared_double.name == name[0]
        finally:
            litequeue._shared_tasks.pop()

    def test_signals_are_importable_by_their_celery_names(self):
        from litequeue.signals import task_failure
        from litequeue import signals
        assert task_failure is signals.task_failure
        calls = []

        @task_failure.connect
        def handler(sender=None, **kwargs):
            calls.append(sender)

        try:
            task_failure.send(sender="x")
            assert calls == ["x"]
        finally:
            task_failure.disconnect(handler)
        task_failure.send(sender="y")
        assert calls == ["x"]


# The canvas chaos test's producer: chains of five steps and chords of twelve, printed
# as [kind, id of the result to check, the value it must have].
CANVAS_CHAOS_PRODUCER = '''
import json, sys
from canvas_tasks import collect, step
from litequeue import chain, chord
out = []
for n in range(int(sys.argv[1])):
    r = chain(step.s(n, "chain"), *[step.s("chain") for _ in range(4)]).delay()
    out.append(["chain", r.id, n + 5])
for n in range(int(sys.argv[2])):
    r = chord([step.s(n + i, "chord") for i in range(12)])(collect.s())
    out.append(["chord", r.id, [n + i + 1 for i in range(12)]])
print(json.dumps(out))
'''


class TestCanvasChaos:

    @pytest.mark.chaos
    @pytest.mark.slow
    @pytest.mark.timeout(240)
    def test_sigkill_during_chains_and_chords_loses_and_repeats_nothing(self, canvas,
                                                                         workers):
        """Two `-c 2` supervisors run 150 chains of five steps and 50 chords of twelve
        members while, every 0.1-0.3 s for at least 12 s, a random child (sometimes a
        supervisor's whole group) is SIGKILLed; dead supervisors are restarted. Every
        chain ends once with the right value, every chord body runs with every member's
        result in order, and no row of the canvas is queued twice."""
        seed = int(os.environ.get("LQ_CHAOS_SEED", time.time_ns() % 10**6))
        rng = random.Random(seed)
        chains, chords, chaos_for = 150, 50, 12.0

        def start_supervisor():
            return workers.start(canvas, concurrency=2, app=("canvas_tasks",),
                                 loglevel="WARNING", ready=False)

        supervisors = [start_supervisor(), start_supervisor()]
        for s in supervisors:
            s.wait_ready()
        producer = subprocess.Popen([sys.executable, "-c", CANVAS_CHAOS_PRODUCER, str(chains),
                                     str(chords)], cwd=canvas.dir, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
        kills = collections.Counter()
        began = time.monotonic()
        try:
            while time.monotonic() - began < chaos_for:
                time.sleep(rng.uniform(0.1, 0.3))
                for i, s in enumerate(supervisors):
                    if s.proc.poll() is not None:
                        supervisors[i] = start_supervisor()
                target = rng.choice(supervisors)
                if target.proc.poll() is not None:
                    continue
                if rng.random() < 0.1:
                    target.killpg(signal.SIGKILL)
                    target.proc.wait()
                    kills["group"] += 1
                    continue
                target.id = target.id or target.supervisor_row()
                pids = [c["pid"] for c in target.live_children()
                        if parent_of(c["pid"]) == target.proc.pid]
                if pids:
                    with _suppress_lookup():
                        os.kill(rng.choice(pids), signal.SIGKILL)
                    kills["child"] += 1
            out, err = producer.communicate(timeout=60)
        finally:
            if producer.poll() is None:
                with _suppress_lookup():
                    os.killpg(producer.pid, signal.SIGKILL)
                producer.wait()
        assert producer.returncode == 0, err
        expected = json.loads(out)
        for i, s in enumerate(supervisors):
            if s.proc.poll() is not None:
                supervisors[i] = start_supervisor()

        def unfinished():
            return sql(canvas.db, "SELECT count(*) FROM tasks WHERE state != 'SUCCESS'")[0][0]
        wait_until(lambda: unfinished() == 0, 120,
                   lambda: f"every row to succeed (seed {seed}; {unfinished()} not yet: "
                   f"{sql(canvas.db, 'SELECT state, count(*) FROM tasks GROUP BY state')})")
        values = canvas.client(f'''
            print(json.dumps([app.AsyncResult(i).get(timeout=30) for i in
                              {[e[1] for e in expected]!r}]))
        ''')
        assert values == [e[2] for e in expected], f"seed {seed}"
        # One row per task of the canvas: 5 per chain, 12 + 1 per chord, none twice.
        assert canvas.count() == 5 * chains + 13 * chords
        # Every start of a step was a claim of its one row (attempt counts the claims).
        starts = collections.Counter()
        for path in canvas.marks.glob("runs.*"):
            for line in path.read_text().splitlines():
                task_id, attempt = json.loads(line)
                starts[task_id] = max(starts[task_id], attempt)
        attempts = dict(sql(canvas.db, "SELECT id, attempt FROM tasks WHERE name = "
                                       "'canvas_tasks.step'"))
        assert starts == attempts, f"seed {seed}"
        assert sql(canvas.db, "SELECT count(*), sum(done = size AND fired = 1) "
                              "FROM chords")[0] == (chords, chords)
        assert sql(canvas.db, "SELECT count(*) FROM chord_slots")[0][0] == 0
        assert sum(kills.values()) >= 20, kills
        print(f"canvas chaos seed {seed}: {dict(kills)}")


class TestHealthAndCommands:

    def test_health_says_what_is_wrong_and_exits_by_verdict(self, project, workers):
        assert lq("health", project.db, cwd=project.dir).returncode == 3   # no file yet
        project.delay("add", 1, 1)
        done = lq("health", project.db, cwd=project.dir)
        assert done.returncode == 1
        assert "FAIL workers: no live worker supervisor" in done.stdout
        assert "FAIL queues served: waiting tasks in queue(s) no live worker serves: " \
               "default" in done.stdout
        workers.start(project)
        wait_until(lambda: lq("health", project.db, cwd=project.dir).returncode == 0, 30,
                   "health to pass once a worker drains the queue")
        out = lq("health", project.db, "--json", cwd=project.dir)
        checks = [json.loads(line) for line in out.stdout.splitlines()]
        assert {c["name"] for c in checks} >= {"schema", "workers", "queues served",
                                               "oldest waiting", "schedules", "time limits",
                                               "wal"} and all(c["ok"] for c in checks)
        assert lq("health", project.db, "--max-wait", "-1", cwd=project.dir).returncode == 2
        (project.dir / "junk.sqlite").write_bytes(b"not a database" * 10)
        bad = lq("health", project.dir / "junk.sqlite", cwd=project.dir)
        assert bad.returncode == 3 and "UNKNOWN" in bad.stderr and "Traceback" not in bad.stderr

    def test_tasks_and_inspect_answer_from_the_database(self, project, workers):
        ids = [project.delay("add", i, i).id for i in range(3)]
        later = project.app.tasks["tasks.add"].apply_async((9, 9), countdown=600).id
        listed = lq("tasks", project.db, "--state", "PENDING", cwd=project.dir)
        assert listed.returncode == 0 and [line.split()[0] for line in
                                           listed.stdout.splitlines()] == ids[::-1]
        # Celery's meaning: reserved rows were prefetched by a worker; queued ones are not.
        reserved = json.loads(lq("inspect", project.db, "reserved", cwd=project.dir).stdout)
        assert reserved == []
        scheduled = json.loads(lq("inspect", project.db, "scheduled", cwd=project.dir).stdout)
        assert [t["id"] for t in scheduled] == [later]
        assert "tasks.add" in json.loads(lq("inspect", project.db, "registered",
                                            cwd=project.dir).stdout)
        workers.start(project)
        for task_id in ids:
            project.app.AsyncResult(task_id).get(timeout=30)
        rows = [json.loads(line) for line in lq("tasks", project.db, "--json", "--state",
                                                "SUCCESS", cwd=project.dir).stdout.splitlines()]
        assert sorted(r["id"] for r in rows) == sorted(ids)
        nope = lq("tasks", project.db, "--state", "NOPE", cwd=project.dir)  # a custom state
        assert (nope.returncode, nope.stdout) == (0, ""), nope.stderr


class TestDashboard:

    def test_flower_api_metrics_and_healthcheck(self, project, workers, dashboards):
        project.delay("add", 0, 0)              # the file exists
        d = dashboards(project)
        assert d.request("/healthcheck")[0] == 503            # no worker yet
        workers.start(project, concurrency=2)
        ok = project.delay("add", 2, 3)
        bad = project.delay("fail", "broken")
        ok.get(timeout=30), bad.get(timeout=30, propagate=False)
        code, _, text = d.request("/healthcheck")
        assert (code, text) == (200, "OK\n")
        tasks = d.json("/api/tasks?limit=10")
        assert tasks[ok.id]["state"] == SUCCESS and tasks[ok.id]["result"] == 5
        assert tasks[bad.id]["state"] == FAILURE and "broken" in tasks[bad.id]["exception"]
        assert set(tasks[ok.id]) >= {"uuid", "name", "state", "args", "kwargs", "result",
                                     "received", "started", "succeeded", "runtime", "worker"}
        assert d.json("/api/tasks?state=FAILURE&limit=5").keys() == {bad.id}
        info = d.json(f"/api/task/info/{bad.id}")
        assert info["uuid"] == bad.id and "TaskFailed" in info["traceback"]
        assert d.json(f"/api/task/result/{ok.id}") == {"task-id": ok.id, "state": SUCCESS,
                                                         "result": 5}
        assert "tasks.add" in d.json("/api/task/types")["task-types"]
        assert d.json("/api/queues/length") == {"active_queues": [
            {"name": "default", "messages": 0}]}
        assert any(w["alive"] for w in d.json("/api/workers").values())
        assert d.json("/api/task/info/nope", status=404)["error"]
        # async-apply: the door for other languages, checked as delay() checks.
        queued = d.json("/api/task/async-apply/tasks.add", "POST", {"args": [20, 22]})
        assert project.app.AsyncResult(queued["task-id"]).get(timeout=30) == 42
        assert "tasks.nope" in d.json("/api/task/async-apply/tasks.nope", "POST",
                                      {"args": []}, status=404)["error"]
        assert d.json("/api/task/async-apply/tasks.add", "POST", {"args": "1, 2"},
                      status=400)["error"].startswith("TypeError")
        late = project.app.tasks["tasks.add"].apply_async((1, 1), countdown=600)
        assert "Revoked" in d.json(f"/api/task/revoke/{late.id}", "POST")["message"]
        assert late.state == REVOKED
        # The workers' per-minute counters feed /metrics.
        wait_until(lambda: 'litequeue_task_runs{task="tasks.add",state="SUCCESS"}' in
                   d.request("/metrics")[2], 30, "the counters to reach /metrics")
        metrics = d.request("/metrics")[2]
        assert 'litequeue_queue_length{queue="default"} 0' in metrics
        assert 'litequeue_task_runtime_seconds_bucket{task="tasks.add",le="+Inf"}' in metrics
        assert 'litequeue_tasks{queue="default",state="FAILURE"} 1' in metrics
        assert re.search(r"^litequeue_worker_processes 3$", metrics, re.M)

    def test_counters_outlive_pruned_results(self, project, workers, dashboards):
        workers.start(project)
        for i in range(5):
            project.delay("add", i, i).get(timeout=30)
        wait_until(lambda: sql(project.db, "SELECT sum(succeeded) FROM stats")[0][0] == 5, 30,
                   "the worker's counters")
        wait_until(lambda: sql(project.db, "SELECT sum(processed), sum(failed) FROM workers")
                   == [(5, 0)], 30, "each worker process's totals")
        sql_write(project.db, "DELETE FROM tasks")          # as result_expires would
        d = dashboards(project)
        hour = d.json("/data/overview")["hour"]
        assert len(hour) == 60 and sum(m[1] for m in hour) == 5

    def test_odd_requests_get_clear_answers(self, project, dashboards):
        odd = project.app.tasks["tasks.add"].apply_async((1, 1), task_id="id/with/slash",
                                                          countdown=600)
        d = dashboards(project)
        assert d.json("/data/task/id%2Fwith%2Fslash")["id"] == odd.id
        assert d.json("/data/tasks?before=99999999999999999999999", status=400)["error"]
        assert d.json(f"/api/task/result/{odd.id.replace('/', '%2F')}?timeout=nan",
                      status=400)["error"]
        import http.client
        conn = http.client.HTTPConnection(d.host, timeout=10)
        conn.putrequest("POST", "/api/task/revoke/id%2Fwith%2Fslash")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        conn.send(b"0\r\n\r\n")
        assert conn.getresponse().status == 411
        conn.close()
        assert odd.state == SCHEDULED
        assert "Revoked" in d.json("/api/task/revoke/id%2Fwith%2Fslash", "POST")["message"]

    def test_reads_never_wait_for_the_write_lock(self, project, dashboards):
        task_id = project.delay("add", 1, 1).id
        d = dashboards(project)
        holder = apsw.Connection(project.db)
        holder.execute("BEGIN IMMEDIATE")             # another process's long write
        try:
            for path in ("/data/overview", "/data/tasks", f"/data/task/{task_id}",
                         "/data/workers", "/data/queues", "/data/schedules", "/metrics",
                         "/healthcheck", "/api/tasks", "/api/queues/length", "/", "/tasks"):
                began = time.monotonic()
                code, _, _ = d.request(path)
                assert code in (200, 503) and time.monotonic() - began < 5, path
        finally:
            holder.execute("ROLLBACK")
            holder.close()

    def test_security_host_origin_csrf_auth_and_read_only(self, project, dashboards):
        late = project.app.tasks["tasks.add"].apply_async((1, 1), countdown=600)
        d = dashboards(project)
        assert d.url.startswith("http://127.0.0.1:")
        # DNS rebinding: a page served under another name cannot read the API.
        assert d.request("/data/overview", headers={"Host": f"evil.example:{d.host.split(':')[1]}"})[0] == 421
        # A cross-site POST changes nothing.
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Origin": f"http://{d.host}"}):           # same origin, no token
            assert d.request(f"/action/revoke/{late.id}", "POST", {}, headers)[0] == 403
        assert late.state == SCHEDULED
        page = d.request("/")
        csrf = json.loads(re.search(r'id="config">(.*?)</script>', page[2]).group(1))["csrf"]
        assert "nonce-" in page[1]["Content-Security-Policy"]
        assert "default-src 'none'" in page[1]["Content-Security-Policy"]
        assert d.json(f"/action/revoke/{late.id}", "POST", {}, {
            "Origin": f"http://{d.host}", "X-CSRF-Token": csrf}) == {"ok": True}
        assert late.state == REVOKED
        # Any address but loopback needs --auth, said in one line.
        refused = lq("dashboard", project.db, "--host", "0.0.0.0", cwd=project.dir)
        assert refused.returncode == 1 and "--auth" in refused.stderr
        assert "Traceback" not in refused.stderr
        locked = dashboards(project, "--auth", "ops", "--read-only",
                            env={**os.environ, "LITEQUEUE_DASHBOARD_PASSWORD": "s3cret"})
        assert locked.request("/data/overview", auth=False)[0] == 401
        basic = {"Authorization": "Basic " + __import__("base64").b64encode(
            b"ops:s3cret").decode()}
        assert locked.request("/data/overview", headers=basic)[0] == 200
        wrong = {"Authorization": "Basic " + __import__("base64").b64encode(
            b"ops:guess").decode()}
        assert locked.request("/data/overview", headers=wrong)[0] == 401
        assert locked.request("/data/overview", headers=wrong, auth=False)[0] == 401
        other = project.app.tasks["tasks.add"].apply_async((1, 1), countdown=600)
        assert locked.request(f"/api/task/revoke/{other.id}", "POST", {}, basic)[0] == 403
        assert other.state == SCHEDULED
        assert json.loads(re.search(r'id="config">(.*?)</script>', locked.request(
            "/", headers=basic)[2]).group(1))["readOnly"] is True


class TestAlertsAndSystemd:

    @pytest.mark.timeout(120)
    def test_failures_are_mailed_as_a_digest_to_a_real_smtp_server(self, project, workers,
                                                                    tmp_path):
        maildir = tmp_path / "maildir"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        smtpd = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l",
                                  f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Mailbox",
                                  str(maildir)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        try:
            def listening():
                with socket.socket() as probe:
                    return probe.connect_ex(("127.0.0.1", port)) == 0
            wait_until(listening, 20, "the SMTP server to listen")
            worker = workers.start(project, concurrency=2, settings={
                "task_error_emails": True, "admins": [["Ops", "ops@example.com"]],
                "email_host": "127.0.0.1", "email_port": port, "email_interval": 1.0,
                "server_email": "litequeue@example.com"})
            failed = [project.delay("fail", f"storm {i}") for i in range(40)]
            for r in failed:
                r.get(timeout=30, propagate=False)
            project.delay("add", 1, 1).get(timeout=30)

            def mails():
                import mailbox
                return list(mailbox.Maildir(str(maildir))) if maildir.exists() else []

            def counted():
                return sum(int(re.search(r"tasks\.fail: (\d+) failure", m.get_payload())
                               .group(1)) for m in mails())
            wait_until(lambda: counted() == 40, 60,
                       lambda: f"40 failures mailed, got {counted()} in {len(mails())} mail(s)")
            # A storm of 40 failures is a digest or two, not 40 mails.
            assert 1 <= len(mails()) <= 3
            first = mails()[0]
            assert first["To"] == "Ops <ops@example.com>"
            assert first["From"] == "litequeue@example.com"
            assert "tasks.fail" in first["Subject"]
            assert "TaskFailed: storm" in first.get_payload()
            assert "mailed" in worker.log_text() and "MainProcess" in worker.log_text()
        finally:
            os.killpg(smtpd.pid, signal.SIGTERM)
            smtpd.wait(timeout=10)

    def test_worker_speaks_systemd_notify(self, project, workers, tmp_path, monkeypatch):
        path = str(tmp_path / "notify.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(30)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            monkeypatch.setenv("WATCHDOG_USEC", "400000")      # a ping every 0.2 s
            worker = workers.start(project, concurrency=1, ready=False)
            got = []
            while not any(m.startswith("READY=1") for m in got):
                got.append(sock.recv(4096).decode())
            assert f"MAINPID={worker.pid}" in got[-1]
            pings = 0
            began = time.monotonic()
            while pings < 3:
                if sock.recv(4096).decode() == "WATCHDOG=1":
                    pings += 1
            assert time.monotonic() - began < 5
            worker.signal(signal.SIGTERM)
            message = ""
            while message != "STOPPING=1":
                message = sock.recv(4096).decode()
            assert worker.wait(30) == 0


class TestQueuePause:

    def test_a_paused_queue_waits_and_resumes_at_once(self, project, workers, dashboards):
        workers.start(project, "-Q", "default,other", concurrency=2)
        assert "queue default paused" in lq("pause", project.db, "default",
                                            cwd=project.dir).stdout
        held = project.delay("add", 1, 1)
        other = project.app.tasks["tasks.add"].apply_async((2, 2), queue="other")
        # The other queue keeps running while this one waits.
        assert other.get(timeout=30) == 4
        assert held.state == PENDING
        assert "PAUSED since" in lq("status", project.db, cwd=project.dir).stdout
        d = dashboards(project)
        assert "is paused" in d.json(f"/data/task/{held.id}")["why"]
        assert [q["paused"] for q in d.json("/data/queues") if q["name"] == "default"] == [True]
        assert all(c["ok"] for c in d.json("/data/overview")["health"]
                   if c["name"] in ("queues served", "oldest waiting"))
        assert held.state == PENDING
        resumed_at = time.monotonic()
        assert "queue default resumed" in lq("resume", project.db, "default",
                                             cwd=project.dir).stdout
        assert held.get(timeout=30) == 2
        assert time.monotonic() - resumed_at < 5
        assert "was not paused" in lq("resume", project.db, "default", cwd=project.dir).stdout
        assert lq("pause", project.db, "", cwd=project.dir).returncode == 2


class TestDashboardInChromium:

    @pytest.mark.timeout(180)
    def test_the_page_in_a_real_browser(self, project, workers, dashboards, tmp_path):
        from selenium.webdriver.common.by import By
        hostile = "<img src=x onerror=alert(1)>"
        project.delay("echo", hostile)           # queued before any worker: shows PENDING
        d = dashboards(project)
        browser = _chromium(tmp_path)

        def text():
            """What the page shows now, read in one step (the view redraws every second)."""
            return browser.execute_script(
                "const m = document.querySelector('main'); return m ? m.innerText : ''")

        def click(xpath):
            page_click(browser, By.XPATH, xpath)
        try:
            browser.get(d.login_url)             # the printed URL: sets the cookie
            assert "token" not in browser.current_url
            wait_until(lambda: "Health" in text() and "live" in browser.find_element(
                By.ID, "live").text, 20, "the overview to load")
            browser.save_screenshot(str(tmp_path / "overview-empty.png"))
            # The tasks page shows the hostile argument as text, and no script ran.
            click("//nav/a[text()='Tasks']")
            wait_until(lambda: hostile in text(), 20, "the hostile text, as text")
            assert browser.execute_script("return document.querySelectorAll('main img').length") == 0
            # A task finishing appears within 2 s, live.
            workers.start(project)
            finished = project.delay("add", 20, 22)
            finished.get(timeout=30)
            done_at = time.monotonic()
            wait_until(lambda: finished.id in text(), 2.0,
                       "the finished task on the page within 2 s")
            assert time.monotonic() - done_at < 2.0
            browser.save_screenshot(str(tmp_path / "tasks.png"))
            # Revoke a scheduled task with its button.
            late = project.app.tasks["tasks.add"].apply_async((1, 1), countdown=600)
            browser.get(d.url + "task/" + late.id)
            wait_until(lambda: "its ETA is" in text(), 20, "the why-not-running line")
            click("//button[text()='Revoke']")
            wait_until(lambda: late.state == REVOKED, 10, "the revoke click to work")
            wait_until(lambda: REVOKED in text(), 10, "the page to show REVOKED")
            browser.save_screenshot(str(tmp_path / "task.png"))
            # The overview's charts draw from the workers' counters.
            browser.get(d.url)
            wait_until(lambda: browser.execute_script(
                "return document.querySelectorAll('svg rect').length") >= 1, 20,
                "the charts' bars")
            browser.save_screenshot(str(tmp_path / "overview.png"))
            errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
            assert errors == []
        finally:
            browser.quit()


# The app lines of tasks/portable/tasks.py, and what the Celery run puts in their place:
# only these differ between the engines.
APP_LINES = {
    "litequeue": 'from litequeue import LiteQueue, chain, chord, group, signature\n'
                 'app = LiteQueue("jobs.sqlite")',
    "celery": 'from celery import Celery, chain, chord, group, signature\n'
              'app = Celery("tasks", broker="{redis_url}", backend="{redis_url}")\n'
              'app.conf.broker_connection_retry_on_startup = True',
}

# The calling process, the same for both engines (it imports tasks/portable/client.py).
PORTABLE_RUN = "import json, client, tasks\nprint(json.dumps(client.observe(tasks.app, tasks)))"


def _free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_pid(port):
    """The process id of the Redis server answering on 127.0.0.1:port, or None."""
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"INFO server\r\n")
            while not re.search(rb"process_id:\d+\r\n", data):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    found = re.search(rb"process_id:(\d+)\r\n", data)
    return found and int(found.group(1))


def _reap(proc, timeout=5):
    """Terminate a process (and its session's group), wait, then kill."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
def redis_url(tmp_path):
    """A real redis-server on a free loopback port, in its own directory, for this test
    only; always stopped at teardown."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (the portability test runs Celery with a "
                    "real Redis: apt-get install redis-server)")
    home = tmp_path / "redis"
    home.mkdir()
    log = home / "redis.log"
    proc = None
    try:
        for _ in range(3):      # another process may take the free port before Redis does
            port = _free_port()
            cmd = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--daemonize", "no", "--dir", str(home)]
            with open(log, "ab") as out:
                proc = subprocess.Popen(cmd, cwd=home, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            # Ours answering, not another server that took the port first.
            wait_until(lambda: proc.poll() is not None or _redis_pid(port) == proc.pid, 15,
                       lambda: f"redis-server to answer on port {port}\n{log.read_text()}")
            if proc.poll() is None:
                break
            proc.wait()
        else:
            pytest.fail(f"redis-server did not start:\n{log.read_text()}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if proc is not None:
            _reap(proc)


def start_celery_worker(workers, project, redis_url):
    """`python -m celery -A tasks worker -P prefork -c 2` in the project's directory
    (reaped by the workers fixture); returns once it answers a ping."""
    from celery import Celery

    worker = workers.start(project, cmd=[
        sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "prefork", "-c", "2",
        "--loglevel=WARNING", "--without-mingle", "--without-gossip"], ready=False)
    probe = Celery("probe", broker=redis_url, backend=redis_url, set_as_current=False)
    try:
        def answers():
            if worker.proc.poll() is not None:
                worker._fail(f"celery worker exited with {worker.proc.returncode}")
            return probe.control.ping(timeout=0.2)
        wait_until(answers, 30, lambda: f"celery worker to answer a ping\n{worker.log_text()}")
    finally:
        probe.close()
    return worker


class TestPortability:

    def test_importing_litequeue_leaves_the_dashboards_web_server_out(self, tmp_path):
        """A worker process, a producer script: neither pays for http.server (with
        http.client, email and ssl); the dashboard imports it when it starts."""
        probe = ("import sys, litequeue; print(sorted(m for m in ('http.server', "
                 "'http.client', 'ssl', 'email.message') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, check=True,
                             capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(LITEQUEUE_PY.parent)))
        assert out.stdout.strip() == "[]", out.stdout

    # redis_url comes before workers: fixtures stop in reverse order, so the Celery
    # worker stops while its broker still runs.
    def test_a_tasks_module_moves_to_celery_by_changing_the_app_line(
            self, tmp_path, redis_url, workers):
        """DESIGN 8: the same tasks module and the same calling program give the same
        answers on litequeue and on Celery 5 with Redis (a real prefork worker); only the
        app lines differ."""
        seen = {}
        for engine in ("litequeue", "celery"):
            proj = Project(tmp_path / engine)
            app_lines = APP_LINES[engine].replace("{redis_url}", redis_url)
            source = task_source("portable/tasks.py")
            assert source.count(APP_LINES["litequeue"]) == 1
            (proj.dir / "tasks.py").write_text(source.replace(APP_LINES["litequeue"], app_lines))
            (proj.dir / "client.py").write_text(task_source("portable/client.py"))
            if engine == "litequeue":
                workers.start(proj, concurrency=2)
            else:
                start_celery_worker(workers, proj, redis_url)
            seen[engine] = json.loads(python(PORTABLE_RUN, proj.dir, timeout=90))
        assert seen["litequeue"] == seen["celery"]
        assert seen["celery"] == {
            "delay": [8, True, True, False, "SUCCESS", 8], "countdown": 3, "by_id": 3,
            "signature": 5, "signature by name": 5, "partial": 5, "partial countdown": 5,
            "self.retry": 2,
            "autoretry": ["FAILURE", "OSError", "still broken", True],
            "propagate": ["ZeroDivisionError", "FAILURE"],
            "chain |": [60, 6, 3], "chain()": 16, "chain .si": 30,
            "group": [[0, 2, 4, 6, 8], True, True, 5, 5, True],
            "chord": 90,
            "chord failing member": [
                "FAILURE", "ChordError",
                "Dependency <member id> raised ZeroDivisionError('division by zero')"],
            "link": [4, 14],
            "link_error": ["FAILURE", "ZeroDivisionError", True],
            "update_state": ["PROGRESS", {"current": 1, "total": 2},
                             {"current": 1, "total": 2}, "done", "SUCCESS"]}


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

    def test_worker_async_concurrency_caps_the_coroutines_in_flight(self, aio, workers):
        start_aio_worker(workers, aio, "--async-concurrency", 5)
        ids = aio.client('print(json.dumps([ablock.delay("cap").id for _ in range(12)]))')
        wait_until(lambda: len(aio.starts("cap")) == 5, 30, "5 coroutines in flight")
        aio.go("cap")
        aio.client(f'[app.AsyncResult(i).get(timeout=30) for i in {ids!r}]; print(1)')
        assert len(aio.starts("cap")) == 12
        assert max_overlap(aio.logged("cap")) == 5

    def test_a_coroutine_task_has_what_a_sync_task_has(self, aio, workers):
        start_aio_worker(workers, aio, concurrency=2)
        out = aio.client('''
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
        # Eager mode awaits the coroutine in the calling process.
        eager = aio.client('''
            app.conf.task_always_eager = True
            print(json.dumps([aadd.delay(1, 1).get(), aadd.apply((2, 2)).get(),
                              chain(aadd.s(1, 1), aadd.s(1)).apply().get()]))
        ''')
        assert eager == [2, 4, 3]

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

    @pytest.mark.parametrize("args, says", [
        (("-P", "gevent"), "no gevent pool: define I/O-bound tasks with async def"),
        (("-P", "nope"), "one of prefork, threads, solo"),
        (("--async-concurrency", "0"), "a whole number >= 1 and <= 10000"),
    ])
    def test_bad_pool_options_are_one_line(self, aio, args, says):
        done = lq("worker", aio.db, "-A", "aio_tasks", *args, cwd=aio.dir)
        assert done.returncode == 2 and says in done.stderr
        assert "Traceback" not in done.stderr and not os.path.exists(aio.db)

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

    def test_unique_tasks_return_the_task_that_holds_the_key(self, aio, workers):
        out = aio.client('''
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
        # Four processes race to queue the same call: the unique index lets one row in.
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
            [(5,)]                # 1, 2, 5 (revoked), 5 again, and the racers' one
        start_aio_worker(workers, aio)
        again = aio.client(f'''
            first = app.AsyncResult({out[6]!r})
            first.get(timeout=30)
            fresh = once.delay(1)       # the key was freed when the first one ended
            print(json.dumps([fresh.id != first.id, fresh.existing, fresh.get(timeout=30)]))
        ''')
        assert again == [True, False, 1]


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
