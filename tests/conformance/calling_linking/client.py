"""link, link as a list, link_error (the three-argument errback and the one-argument one),
and get(on_message=...)."""
import json
import os
import uuid

from observe import wait_for
from tasks import add, app, divide, error_handler, hello, log_error, record


def read(path):
    path = os.path.abspath(path)
    if wait_for(lambda: os.path.exists(path) and os.path.getsize(path)):
        with open(path) as f:
            return json.load(f)
    return "never written"


def observe(seen):
    cb = str(uuid.uuid4())
    r = add.apply_async((2, 2), link=add.s(16).set(task_id=cb))
    seen("parent", r.get, timeout=10)
    seen("linked add.s(16)", lambda: app.AsyncResult(cb).get(timeout=10))
    seen("children after get", lambda: [c.id == cb for c in (r.children or [])])

    first, second = (os.path.abspath(f"link-{i}.json") for i in (1, 2))
    r = add.apply_async((3, 4), link=[record.s(first), record.s(second)])
    seen("link list parent", r.get, timeout=10)
    seen("link list callbacks", lambda: [read(first), read(second)])

    r = divide.apply_async((1, 0), link_error=error_handler.s())
    seen("errback parent", r.get, timeout=10, propagate=False)
    seen("errback(request, exc, traceback)",
         lambda: {k: (v == r.id if k == "id" else v)
                  for k, v in read(f"errback-{r.id}.json").items()})
    r = divide.apply_async((1, 0), link_error=log_error.s())
    seen("one-argument errback parent", r.get, timeout=10, propagate=False)
    seen("one-argument errback", lambda: read(f"old-errback-{r.id}.json") == {"task_id": r.id})

    path = os.path.abspath("sig-link.json")
    sig = add.s(1, 2)
    sig.link(record.s(path))
    r = sig.delay()
    seen("signature.link", lambda: [r.get(timeout=10), read(path)])
    r = divide.s(2, 0).on_error(error_handler.s()).delay()
    seen("signature.on_error",
         lambda: [r.get(propagate=False, timeout=10).__class__.__name__,
                  read(f"errback-{r.id}.json")["exc"]])

    messages = []
    r = hello.apply_async(args=(1, 1))
    seen("get(on_message=)", r.get, on_message=messages.append, propagate=False, timeout=10)
    # Celery's Redis result consumer now and then passes on_message a message of an
    # earlier task it still listens to (a FAILURE of divide above): only this task's count.
    messages = [m for m in messages if m.get("task_id") == r.id]
    seen("on_message states", lambda: sorted({m["status"] for m in messages}))
    seen("on_message last",
         lambda: {k: v for k, v in messages[-1].items() if k not in ("task_id", "date_done")}
         if messages else None)
