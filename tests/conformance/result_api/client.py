"""Every field a user reads off a result."""
import datetime

from observe import wait_for

from tasks import add, app, oops


def observe(seen):
    r = add.delay(1, 2)
    seen("get", r.get, timeout=10)
    seen("id and task_id", lambda: r.id == r.task_id)
    seen("info", lambda: r.info)
    seen("traceback of a success", lambda: r.traceback)
    seen("date_done type", lambda: type(r.date_done).__name__)
    seen("date_done is aware", lambda: r.date_done.tzinfo is not None)
    seen("date_done is recent", lambda: abs(
        datetime.datetime.now(datetime.timezone.utc) - r.date_done).total_seconds() < 60)
    seen("equality", lambda: r == app.AsyncResult(r.id))
    seen("hash", lambda: hash(r) == hash(app.AsyncResult(r.id)))
    seen("as_tuple", lambda: r.as_tuple() == ((r.id, None), None))
    seen("name without result_extended", lambda: app.AsyncResult(r.id).name)
    seen("args without result_extended", lambda: app.AsyncResult(r.id).args)
    seen("wait", r.wait, timeout=10)
    seen("task.AsyncResult", lambda: add.AsyncResult(r.id).get(timeout=10))
    r.forget()
    seen("after forget: state", lambda: r.state)
    seen("after forget: result", lambda: r.result)

    bad = oops.delay(7)
    seen("failure get", bad.get, timeout=10)
    seen("failure info", lambda: repr(bad.info))
    seen("failure result", lambda: repr(bad.result))
    seen("failure traceback last line", lambda: bad.traceback.strip().splitlines()[-1])
    seen("failure status", lambda: bad.status)
    seen("maybe_throw", lambda: bad.maybe_throw())

    waiting = add.apply_async((1, 1), countdown=30)
    seen("revoke a waiting task", waiting.revoke)
    seen("revoked: state", lambda: wait_for(lambda: waiting.state == "REVOKED" and waiting.state)
         or waiting.state)
    seen("revoked: get", waiting.get, timeout=5)
    seen("revoked: ready", waiting.ready)
    seen("revoked: successful", waiting.successful)
    seen("get with timeout on a waiting task",
         lambda: add.apply_async((1, 1), countdown=30).get(timeout=0.5))
    seen("get(interval=)", lambda: add.delay(2, 2).get(timeout=10, interval=0.1))
    seen("get(no_ack=False)", lambda: add.delay(2, 2).get(timeout=10, no_ack=False))
