"""tasks.rst, "Names": explicit names, automatic names, calling by name."""
from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task(name="sum-of-two-numbers")
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task(name="tasks.explicit")
def explicit():
    return "explicit"


@app.task(bind=True)
def my_name(self):
    return [self.name, self.request.task]
