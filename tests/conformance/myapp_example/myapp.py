"""examples/app/myapp.py: an app given a setting as a keyword (task_acks_late), a task that
takes a while, and the module run as a program."""
from time import sleep

from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite", task_acks_late=True)  # celery: app = Celery("myapp", broker=REDIS_URL, backend=REDIS_URL, task_acks_late=True)


@app.task
def add(x, y):
    sleep(0.3)
    return x + y


if __name__ == "__main__":
    app.start()
