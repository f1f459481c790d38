"""The guide's crontab examples: the sets they expand to, their repr, what is due."""
from datetime import datetime, timezone

from tasks import app, crontab

EXAMPLES = {
    "crontab()": {},
    "minute=0, hour=0": {"minute": 0, "hour": 0},
    "minute=0, hour='*/3'": {"minute": 0, "hour": "*/3"},
    "minute=0, hour='0,3,6,9,12,15,18,21'": {"minute": 0, "hour": "0,3,6,9,12,15,18,21"},
    "minute='*/15'": {"minute": "*/15"},
    "day_of_week='sunday'": {"day_of_week": "sunday"},
    "minute='*', hour='*', day_of_week='sun'": {"minute": "*", "hour": "*",
                                                "day_of_week": "sun"},
    "minute='*/10', hour='3,17,22', day_of_week='thu,fri'": {
        "minute": "*/10", "hour": "3,17,22", "day_of_week": "thu,fri"},
    "minute=0, hour='*/2,*/3'": {"minute": 0, "hour": "*/2,*/3"},
    "minute=0, hour='*/5'": {"minute": 0, "hour": "*/5"},
    "minute=0, hour='*/3,8-17'": {"minute": 0, "hour": "*/3,8-17"},
    "0 0 2 * *": {"minute": 0, "hour": 0, "day_of_month": "2"},
    "day_of_month='2-30/2'": {"minute": 0, "hour": 0, "day_of_month": "2-30/2"},
    "day_of_month='1-7,15-21'": {"minute": 0, "hour": 0, "day_of_month": "1-7,15-21"},
    "day_of_month='11', month_of_year='5'": {"minute": 0, "hour": 0, "day_of_month": "11",
                                              "month_of_year": "5"},
    "month_of_year='*/3'": {"minute": 0, "hour": 0, "day_of_month": "11",
                            "month_of_year": "*/3"},
}


def observe(seen):
    for label, fields in EXAMPLES.items():
        def expand(fields=fields):
            c = crontab(**fields)
            return [sorted(c.minute)[:6], sorted(c.hour), sorted(c.day_of_week),
                    sorted(c.day_of_month)[:8], sorted(c.month_of_year)]
        seen(label, expand)
    monday = crontab(hour=7, minute=30, day_of_week=1)
    seen("repr", lambda: repr(monday))
    seen("equal crontabs", lambda: monday == crontab(hour=7, minute=30, day_of_week=1))
    long_ago = datetime(2020, 1, 1, tzinfo=timezone.utc)
    seen("is_due after years", lambda: monday.is_due(long_ago)[0])
    seen("remaining_estimate type", lambda: type(monday.remaining_estimate(long_ago)).__name__)
    seen("bad field", crontab, minute="61")
    seen("bad day name", crontab, day_of_week="funday")
    seen("beat_schedule entries", lambda: sorted(app.conf.beat_schedule))
    seen("beat_schedule schedule kept",
         lambda: repr(app.conf.beat_schedule["every-monday-morning"]["schedule"]))
