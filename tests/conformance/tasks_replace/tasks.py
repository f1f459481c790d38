"""tasks.rst and canvas.rst: Task.replace, a task handing its place to a signature."""
from litequeue import LiteQueue, group  # celery: from celery import Celery, group
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def add(x, y):
    return x + y


@app.task
def tsum(numbers):
    return sum(numbers)


@app.task(bind=True)
def replaced(self, x):
    raise self.replace(add.s(x, 100))


@app.task(bind=True)
def fan_out(self, n):
    raise self.replace(group(add.s(i, i) for i in range(n)))


@app.task(bind=True)
def update_other(self, x):
    return self.replace(add.si(x, x))
