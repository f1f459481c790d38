"""canvas.rst, "Signatures": by name, by task, partials, immutability, options."""
from litequeue import LiteQueue, signature  # celery: from celery import Celery, signature
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def add(x, y):
    return x + y


@app.task
def tagged(x, y, debug=False):
    return [x + y, debug]
