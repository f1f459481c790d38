"""calling.rst's options: serializers, compression, retry policy, routing, priority,
results options, headers and the shadow name."""
from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def add(x, y):
    return x + y


@app.task(bind=True)
def what_i_got(self, x):
    return {"x": x, "queue": self.request.delivery_info["routing_key"],
            "name": self.name, "task": self.request.task}


@app.task(bind=True)
def names_seen(self):
    return [self.name, self.request.task]


@app.task(bind=True)
def custom_header(self):
    headers = self.request.headers or {}
    return [headers.get("periodic_task_name"),
            getattr(self.request, "periodic_task_name", None)]
