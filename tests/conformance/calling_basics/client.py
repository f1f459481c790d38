"""T.delay(arg, kwarg=value), T.apply_async((arg,), {"kwarg": value}), countdown, eta,
expires and task_id, with the states a caller can read."""
import time
from datetime import datetime, timedelta, timezone

from observe import wait_for
from tasks import add, app, greet


def observe(seen):
    seen("delay args and kwargs", lambda: greet.delay("ann", greeting="hi").get(timeout=10))
    seen("apply_async args and kwargs",
         lambda: greet.apply_async(("bob",), {"punctuation": "?"}).get(timeout=10))
    seen("signature apply_async",
         lambda: greet.s("cy", greeting="hey", punctuation=".").apply_async().get(timeout=10))

    began = time.monotonic()
    late = add.apply_async((2, 2), countdown=1.5)
    seen("countdown state before", lambda: late.state)
    seen("countdown get", late.get, timeout=10)
    seen("countdown waited", lambda: time.monotonic() - began >= 1.4)

    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    began = time.monotonic()
    r = add.apply_async((3, 3), eta=soon)
    seen("eta state before", lambda: r.state)
    seen("eta get", r.get, timeout=10)
    seen("eta waited", lambda: time.monotonic() - began >= 0.5)

    seen("expires in a minute", lambda: add.apply_async((10, 10), expires=60).get(timeout=10))
    seen("expires as a datetime",
         lambda: add.apply_async((10, 10), expires=datetime.now(timezone.utc)
                                 + timedelta(days=1)).get(timeout=10))
    gone = add.apply_async((1, 1), expires=datetime.now(timezone.utc) - timedelta(seconds=5))
    seen("expired: its state once ended",
         lambda: wait_for(lambda: gone.state not in ("PENDING", "STARTED") and gone.state))
    seen("expired: get", gone.get, timeout=10)
    seen("expired: ready", gone.ready)

    own = add.apply_async((5, 5), task_id="my_own_task_id")
    seen("own task id", lambda: own.id)
    seen("own task id get", lambda: app.AsyncResult("my_own_task_id").get(timeout=10))
    seen("calling the task runs it here", add, 7, 7)
    seen("too few arguments", add.delay, 1)
    seen("an unknown keyword", greet.delay, "x", colour="red")
