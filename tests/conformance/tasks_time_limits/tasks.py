"""tasks.rst's time_limit and soft_time_limit, and catching SoftTimeLimitExceeded."""
import time

from litequeue import LiteQueue  # celery: from celery import Celery
from litequeue import SoftTimeLimitExceeded  # celery: from celery.exceptions import SoftTimeLimitExceeded
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task(soft_time_limit=0.5)
def cleans_up():
    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "never interrupted"


@app.task(soft_time_limit=0.5)
def ignores_soft():
    time.sleep(5)
    return "slept"


@app.task(time_limit=1)
def killed():
    time.sleep(10)
    return "survived"


@app.task(time_limit=5, soft_time_limit=1)
def quick():
    return "quick"
