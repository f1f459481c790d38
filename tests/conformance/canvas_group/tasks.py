"""canvas.rst, "Groups": results as a set."""
from litequeue import GroupResult, LiteQueue, group  # celery: from celery import Celery, group \n from celery.result import GroupResult
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def add(x, y):
    return x + y


@app.task
def div(x, y):
    return x / y
