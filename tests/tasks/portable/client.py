import os
import time
import uuid


def observe(app, tasks):
    seen = {}
    r = tasks.add.delay(4, 4)
    seen["delay"] = [r.get(timeout=30), r.ready(), r.successful(), r.failed(), r.state,
                     r.result]
    r = tasks.add.apply_async((1, 2), countdown=0.2)
    seen["countdown"] = r.get(timeout=30)
    seen["by_id"] = app.AsyncResult(r.id).get(timeout=30)
    seen["signature"] = tasks.add.s(2, 3).delay().get(timeout=30)
    seen["signature by name"] = tasks.signature("tasks.add", args=(2, 3)).delay().get(
        timeout=30)
    seen["partial"] = tasks.add.s(2).delay(3).get(timeout=30)
    seen["partial countdown"] = tasks.add.s(2).apply_async((3,), countdown=0.1).get(
        timeout=30)

    seen["self.retry"] = tasks.flaky.delay(2).get(timeout=30)
    r = tasks.always_fails.delay()
    exc = r.get(timeout=30, propagate=False)
    seen["autoretry"] = [r.state, type(exc).__name__, str(exc), r.failed()]
    r = tasks.divide.delay(1, 0)
    try:
        r.get(timeout=30)
    except ZeroDivisionError as exc:
        seen["propagate"] = [type(exc).__name__, r.state]

    r = (tasks.add.s(1, 2) | tasks.add.s(3) | tasks.mul.s(10)).apply_async()
    seen["chain |"] = [r.get(timeout=30), r.parent.get(timeout=30),
                       r.parent.parent.get(timeout=30)]
    seen["chain()"] = tasks.chain(tasks.add.s(4, 4), tasks.mul.s(2))().get(timeout=30)
    seen["chain .si"] = (tasks.add.s(1, 1) | tasks.add.si(5, 5) | tasks.mul.s(3)).delay().get(
        timeout=30)

    g = tasks.group(tasks.add.s(i, i) for i in range(5)).apply_async()
    seen["group"] = [g.get(timeout=30), g.ready(), g.successful(), g.completed_count(),
                     len(g), isinstance(g.id, str)]
    r = tasks.chord([tasks.add.s(i, i) for i in range(10)])(tasks.tsum.s())
    seen["chord"] = r.get(timeout=30)
    bad = str(uuid.uuid4())
    r = tasks.chord([tasks.add.s(1, 1), tasks.divide.s(1, 0).set(task_id=bad)])(
        tasks.tsum.s())
    exc = r.get(timeout=30, propagate=False)
    seen["chord failing member"] = [r.state, type(exc).__name__,
                                    str(exc).replace(bad, "<member id>")]

    callback = str(uuid.uuid4())
    r = tasks.add.apply_async((2, 2), link=tasks.add.s(10).set(task_id=callback))
    seen["link"] = [r.get(timeout=30), app.AsyncResult(callback).get(timeout=30)]
    errback = str(uuid.uuid4())
    r = tasks.divide.apply_async((1, 0), link_error=tasks.errback.s().set(task_id=errback))
    exc = r.get(timeout=30, propagate=False)
    said = app.AsyncResult(errback).get(timeout=30)
    seen["link_error"] = [r.state, type(exc).__name__, said == "errback saw " + r.id]

    marker = os.path.abspath(f"progress-{uuid.uuid4()}.go")
    r = tasks.progress.delay(marker)
    deadline = time.monotonic() + 30
    while r.state != "PROGRESS":
        if time.monotonic() > deadline:
            raise AssertionError(f"progress() never reported PROGRESS: {r.state}")
        time.sleep(0.01)
    seen["update_state"] = [r.state, r.info, r.result]
    open(marker, "w").close()
    seen["update_state"] += [r.get(timeout=30), r.state]
    return seen
