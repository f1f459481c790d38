"""workers.rst: remote control from a program: ping, inspect, revoke, rate_limit."""
import os
import time

from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def add(x, y):
    return x + y


@app.task
def sleeper(marker):
    open(marker, "w").close()
    time.sleep(20)
    return "woke"
