"""examples/periodic-tasks/myapp.py: add_periodic_task in the on_after_configure handler
(every second here, so the check is quick)."""
import os
import time

from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("myapp", broker=REDIS_URL, backend=REDIS_URL)
app.conf.timezone = "UTC"


@app.task
def say(what):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), f"said-{what}"),
              "a") as f:
        f.write(f"{time.time()}\n")


@app.on_after_configure.connect
def setup_periodic_tasks(sender, **kwargs):
    sender.add_periodic_task(1.0, say.s("hello"), name="say hello every second")
    sender.add_periodic_task(1.0, say.s("world"), expires=10)


if __name__ == "__main__":
    app.start()
