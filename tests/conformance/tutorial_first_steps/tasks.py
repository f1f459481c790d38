"""examples/tutorial/tasks.py and "First steps with Celery": one app, one task."""
from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task()
def add(x, y):
    return x + y


@app.task
def fails(text):
    raise ValueError(text)


if __name__ == "__main__":
    app.start()
