"""tasks.rst, "States" and "Custom states"; the states module."""
import time

from litequeue import LiteQueue  # celery: from celery import Celery
from litequeue import states  # celery: from celery import states
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task(bind=True)
def upload_files(self, filenames, marker):
    import os
    for i, _ in enumerate(filenames):
        self.update_state(state="PROGRESS", meta={"current": i, "total": len(filenames)})
    deadline = time.monotonic() + 10
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(filenames)


@app.task(bind=True)
def report_for(self, task_id):
    self.update_state(task_id=task_id, state="EXTERNAL", meta={"by": "another task"})
    return "reported"


@app.task
def never_done(marker):
    import os
    deadline = time.monotonic() + 10
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "finally"


@app.task
def ok():
    return states.SUCCESS
