"""tasks.rst, "Retrying" and "Automatic retry for known exceptions"."""
from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


class TemporaryError(Exception):
    pass


@app.task(bind=True, default_retry_delay=0.1)
def send_twitter_status(self, fail_times):
    try:
        if self.request.retries < fail_times:
            raise TemporaryError(f"try {self.request.retries}")
    except TemporaryError as exc:
        raise self.retry(exc=exc)
    return self.request.retries


@app.task(bind=True, max_retries=2)
def give_up(self):
    raise self.retry(exc=TemporaryError("still failing"), countdown=0.1)


@app.task(bind=True, max_retries=1)
def give_up_plain(self):
    raise self.retry(countdown=0.1)


@app.task(autoretry_for=(TemporaryError,), retry_kwargs={"max_retries": 2, "countdown": 0.1})
def auto(path):
    with open(path, "a") as f:
        f.write("x")
    raise TemporaryError("auto")


@app.task(autoretry_for=(TemporaryError,), retry_backoff=0.1, retry_jitter=False,
          max_retries=3)
def backoff(path):
    with open(path, "a") as f:
        f.write("x")
    raise TemporaryError("backoff")


@app.task(bind=True, max_retries=3)
def waits(self, marker):
    import os
    if not os.path.exists(marker):
        raise self.retry(countdown=0.2)
    return ["done", self.request.retries]


@app.task(bind=True)
def retry_info(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0.1, max_retries=5)
    return self.request.retries
