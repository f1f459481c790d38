"""calling.rst: the calling API, ETA and countdown, expiration, a task id of one's own."""
from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def add(x, y):
    return x + y


@app.task
def greet(name, greeting="hello", punctuation="!"):
    return f"{greeting} {name}{punctuation}"
