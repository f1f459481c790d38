"""next-steps.rst, "Routing": task_routes in the app's configuration."""
from litequeue import LiteQueue  # celery: from celery import Celery

app = LiteQueue("jobs.sqlite", imports=["proj.tasks"])  # celery: app = Celery("proj", broker=REDIS_URL, backend=REDIS_URL, include=["proj.tasks"])

app.conf.update(
    task_routes={
        "proj.tasks.add": {"queue": "hipri"},
    },
)
