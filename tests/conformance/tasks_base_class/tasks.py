"""tasks.rst, "Custom task classes", "Instantiation" and "Handlers"."""
import json
import os

from litequeue import LiteQueue, Task  # celery: from celery import Celery, Task
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


def note(event, **fields):
    with open(os.path.abspath(f"events-{os.getpid()}.jsonl"), "a") as f:
        f.write(json.dumps({"event": event, **fields}) + "\n")


class DatabaseTask(Task):
    _db = None

    @property
    def db(self):
        if self._db is None:
            self._db = {"connections": 0}
        self._db["connections"] += 1
        return self._db


class LoggedTask(Task):
    def before_start(self, task_id, args, kwargs):
        note("before_start", task=self.name, args=list(args))

    def on_success(self, retval, task_id, args, kwargs):
        note("on_success", task=self.name, retval=retval)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        note("on_failure", task=self.name, exc=repr(exc), einfo=type(einfo).__name__)

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        note("on_retry", task=self.name, exc=repr(exc))

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        note("after_return", task=self.name, status=status)


class RetryingTask(Task):
    autoretry_for = (KeyError,)
    max_retries = 1
    default_retry_delay = 0.1


@app.task(base=DatabaseTask, bind=True)
def process_rows(self, n):
    db = self.db
    return [n, db["connections"] > 0, os.getpid()]


@app.task(base=LoggedTask)
def good(x):
    return x * 2


@app.task(base=LoggedTask)
def bad():
    raise ValueError("bad")


@app.task(base=LoggedTask, bind=True, max_retries=1)
def retried(self):
    if self.request.retries == 0:
        raise self.retry(exc=KeyError("once"), countdown=0.1)
    return "second time"


@app.task(base=RetryingTask, bind=True)
def class_defaults(self):
    if self.request.retries == 0:
        raise KeyError("from the class")
    return [self.max_retries, self.request.retries]


class Hello(app.Task):
    def __call__(self, *args, **kwargs):
        return "hello " + super().__call__(*args, **kwargs)


@app.task(base=Hello)
def named(who):
    return who
