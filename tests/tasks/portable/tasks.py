"""One tasks module for both engines: the Celery test replaces the two app lines below
(APP_LINES in the tests), and nothing else."""
from litequeue import LiteQueue, chain, chord, group, signature
app = LiteQueue("jobs.sqlite")

import os
import time


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def tsum(numbers):
    return sum(numbers)


@app.task
def divide(x, y):
    return x / y


@app.task(bind=True, max_retries=2)
def flaky(self, fail_times):
    if self.request.retries < fail_times:
        raise self.retry(exc=OSError(f"attempt {self.request.retries}"), countdown=0.1)
    return self.request.retries


@app.task(autoretry_for=(OSError,), max_retries=2, retry_backoff=0.1, retry_jitter=False)
def always_fails():
    raise OSError("still broken")


@app.task
def errback(task_id):
    """An old-style (one argument) errback: it gets the failed task's id."""
    return "errback saw " + task_id


@app.task(bind=True)
def progress(self, marker):
    """Report PROGRESS, then wait (at most 30 s) for the caller to create marker."""
    self.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
    deadline = time.monotonic() + 30
    while not os.path.exists(marker):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{marker} never appeared")
        time.sleep(0.01)
    return "done"
