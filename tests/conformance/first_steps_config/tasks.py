"""First steps: configure through app.conf.update and then a configuration module."""
from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)

app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    timezone="Europe/Oslo",
    enable_utc=True,
)
app.config_from_object("celeryconfig")


@app.task
def add(x, y):
    return x + y


@app.task(bind=True)
def where(self):
    return self.request.delivery_info["routing_key"]

