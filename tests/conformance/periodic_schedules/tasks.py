"""periodic-tasks.rst, "Crontab schedules": what a schedule object answers (no worker)."""
from datetime import timedelta

from litequeue import LiteQueue  # celery: from celery import Celery
from litequeue import crontab  # celery: from celery.schedules import crontab
app = LiteQueue("jobs.sqlite", timezone="UTC")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL, timezone="UTC")


@app.task
def test(arg):
    return arg


app.conf.beat_schedule = {
    "every-monday-morning": {
        "task": "tasks.test",
        "schedule": crontab(hour=7, minute=30, day_of_week=1),
        "args": ("Happy Mondays!",),
    },
    "every-ten-minutes": {"task": "tasks.test", "schedule": timedelta(minutes=10),
                          "args": ("ten",)},
}
