"""canvas.rst, "Chains": results passed along, parents, immutable steps, errors."""
from litequeue import LiteQueue, chain  # celery: from celery import Celery, chain
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def div(x, y):
    return x / y
