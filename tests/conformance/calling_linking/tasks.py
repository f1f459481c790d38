"""calling.rst, "Linking (callbacks/errbacks)" and "On message"; canvas.rst's callbacks."""
import json
import time

from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def add(x, y):
    return x + y


@app.task
def record(value, path):
    """A callback that leaves what it was given in a file, for the caller to read."""
    with open(path, "w") as f:
        json.dump(value, f)
    return value


@app.task
def divide(x, y):
    return x / y


@app.task
def error_handler(request, exc, traceback):
    with open(f"errback-{request.id}.json", "w") as f:
        json.dump({"id": request.id, "task": request.task, "args": list(request.args),
                   "exc": repr(exc), "traceback is text": isinstance(traceback, str)}, f)


@app.task
def log_error(task_id):
    with open(f"old-errback-{task_id}.json", "w") as f:
        json.dump({"task_id": task_id}, f)


@app.task(bind=True)
def hello(self, a, b):
    self.update_state(state="PROGRESS", meta={"progress": 50})
    time.sleep(0.3)
    self.update_state(state="PROGRESS", meta={"progress": 90})
    time.sleep(0.3)
    return "hello world: %i" % (a + b)
