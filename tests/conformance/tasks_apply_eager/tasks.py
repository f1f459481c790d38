"""tasks.rst: calling in this process (__call__, apply), argument checking (typing), and
task_always_eager for tests."""
from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def add(x, y):
    return x + y


@app.task(typing=False)
def loose(x, y):
    return x + y


@app.task
def div(x, y):
    return x / y


@app.task(bind=True)
def who(self):
    return [self.request.is_eager, self.request.called_directly]
