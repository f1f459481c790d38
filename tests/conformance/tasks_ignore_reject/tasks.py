"""tasks.rst, "Ignore" and "Reject": a task that ends without a result of its own."""
from litequeue import LiteQueue  # celery: from celery import Celery
from litequeue import Ignore, Reject  # celery: from celery.exceptions import Ignore, Reject
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task(bind=True)
def custom_failure(self):
    self.update_state(state="FAILURE", meta={"exc_type": "ValueError",
                                             "exc_message": ["custom failure"],
                                             "exc_module": "builtins"})
    raise Ignore()


@app.task(bind=True)
def custom_state(self):
    self.update_state(state="ABANDONED", meta={"why": "nothing to do"})
    raise Ignore()


@app.task(bind=True, acks_late=True)
def reject_it(self):
    raise Reject("no reason", requeue=False)
