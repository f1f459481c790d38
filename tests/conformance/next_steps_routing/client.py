"""Routes, the queue option and a task's own queue, seen from the task's request."""
from proj.tasks import add, mul, plain


def observe(seen):
    seen("routed by task_routes", lambda: add.delay(2, 2).get(timeout=10))
    seen("queue= beats the route",
         lambda: add.apply_async((2, 2), queue="lopri", countdown=0.2).get(timeout=10))
    seen("the task's own queue", lambda: mul.delay(2, 3).get(timeout=10))
    seen("queue= beats the task's queue",
         lambda: mul.apply_async((2, 3), queue="hipri").get(timeout=10))
    seen("signature with queue", lambda: add.s(1, 1).set(queue="lopri").delay().get(timeout=10))
    seen("no route", lambda: plain.delay().get(timeout=10))
