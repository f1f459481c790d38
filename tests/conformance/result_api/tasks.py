"""The AsyncResult a caller holds (first steps, next steps, tasks.rst's results): its
fields, forget, revoke of a waiting task, and results in another process."""
from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def add(x, y):
    return x + y


@app.task
def oops(code):
    raise RuntimeError(f"code {code}")
