"""next-steps.rst, "Canvas: Designing Work-flows": the proj tasks in one module."""
from litequeue import LiteQueue, chain, chord, group  # celery: from celery import Celery, chain, chord, group
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)
