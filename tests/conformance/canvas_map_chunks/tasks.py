"""canvas.rst, "Map & Starmap" and "Chunks"."""
from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def add(x, y):
    return x + y


@app.task
def tsum(numbers):
    return sum(numbers)
