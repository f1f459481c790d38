"""application.rst: the app's main name, configuration from a module, a class, a dict and
an environment variable, and the on_after_configure signal."""
from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)

app.config_from_object("celeryconfig")


class Config:
    result_expires = 600
    task_default_priority = 3


@app.task
def add(x, y):
    return x + y


@app.task
def conf_in_worker():
    return [app.conf.timezone, app.conf.result_expires]
