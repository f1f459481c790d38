"""periodic-tasks.rst, "Entries": a beat_schedule in the configuration, with args and a
timedelta, and the app's timezone."""
import os
import time
from datetime import timedelta

from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)

app.conf.beat_schedule = {
    "add-every-second": {
        "task": "tasks.add",
        "schedule": 1.0,
        "args": (16, 16),
    },
    "tick-every-second": {
        "task": "tasks.tick",
        "schedule": timedelta(seconds=1),
        "kwargs": {"label": "td"},
    },
}
app.conf.timezone = "UTC"


def mark(name, text):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), name), "a") as f:
        f.write(text + "\n")


@app.task
def add(x, y):
    mark("add", f"{x + y} {time.time()}")
    return x + y


@app.task
def tick(label):
    mark("tick", label)
