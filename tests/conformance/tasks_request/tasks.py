"""tasks.rst, "Bound tasks" and "Task Request": what self.request says."""
from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task(bind=True)
def dump_context(self, x, y, z=None):
    r = self.request
    return {
        "id": r.id, "task": r.task, "args": list(r.args), "kwargs": r.kwargs,
        "retries": r.retries, "is_eager": r.is_eager, "eta": r.eta, "expires": r.expires,
        "called_directly": r.called_directly, "root_id": r.root_id,
        "parent_id": r.parent_id, "group": r.group, "group_index": r.group_index,
        "chord": r.chord, "timelimit": list(r.timelimit or ()),
        "hostname is text": isinstance(r.hostname, str),
        "delivery_info keys": sorted(r.delivery_info or {}),
        "correlation_id is the id": r.correlation_id == r.id,
        "name": self.name,
    }


@app.task(bind=True)
def direct(self, x, y):
    return [self.request.called_directly, self.request.is_eager, list(self.request.args or ())]


@app.task(bind=True)
def spawn(self):
    child = dump_context.delay(1, 2)
    return child.id


@app.task(bind=True, time_limit=30, soft_time_limit=20)
def limits(self):
    return list(self.request.timelimit or ())
