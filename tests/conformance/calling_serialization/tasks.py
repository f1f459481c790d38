"""calling.rst, "Serializers": what arguments and results come back as (Celery's default
is json)."""
from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def echo(value):
    return value


@app.task
def describe(value):
    return [type(value).__name__, repr(value)]
