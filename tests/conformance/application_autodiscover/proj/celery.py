"""application.rst / the Django layout: an app that discovers the tasks modules of the
packages it is given, whose tasks are @shared_task."""
from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("proj", broker=REDIS_URL, backend=REDIS_URL)

app.autodiscover_tasks(["billing", "shipping"])
