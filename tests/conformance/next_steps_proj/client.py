"""next-steps.rst, "Calling tasks": delay, apply_async, the result and its states."""
from proj.celery import app
from proj.tasks import add, boom, mul, xsum


def observe(seen):
    seen("called in this process", add, 2, 2)
    res = add.delay(2, 2)
    seen("delay get", res.get, timeout=10)
    seen("apply_async get", lambda: add.apply_async((2, 2)).get(timeout=10))
    seen("countdown get", lambda: add.apply_async((2, 2), countdown=0.3).get(timeout=10))
    seen("id is text", lambda: isinstance(res.id, str))
    seen("names", lambda: [add.name, mul.name, xsum.name])
    seen("result_expires", lambda: app.conf.result_expires)
    seen("mul", lambda: mul.delay(3, 4).get(timeout=10))
    seen("xsum", lambda: xsum.delay([1, 2, 3]).get(timeout=10))
    bad = boom.delay()
    seen("failure get", bad.get, timeout=10)
    seen("failure propagate=False", bad.get, propagate=False, timeout=10)
    seen("failed()", bad.failed)
    seen("successful()", bad.successful)
    seen("failure state", lambda: bad.state)
    # "A task that is waiting to be executed or unknown": any id nobody sent.
    seen("unknown id state",
         lambda: app.AsyncResult("a8c3e1f2-0000-4000-8000-000000000000").state)
    seen("unknown id ready", app.AsyncResult("a8c3e1f2-0000-4000-8000-000000000001").ready)
