"""examples/next-steps/proj/celery.py: the app of a package, its tasks module included."""
from litequeue import LiteQueue  # celery: from celery import Celery

app = LiteQueue("jobs.sqlite", imports=["proj.tasks"])  # celery: app = Celery("proj", broker=REDIS_URL, backend=REDIS_URL, include=["proj.tasks"])

# Optional configuration, see the application user guide.
app.conf.update(
    result_expires=3600,
)

if __name__ == "__main__":
    app.start()
