"""app.control as workers.rst shows it, with the worker's host name left out."""
import os

from observe import wait_for
from tasks import add, app, sleeper


def one_worker(replies):
    """The replies of the workers, whatever their names."""
    if isinstance(replies, list):
        return [list(r.values())[0] for r in replies]
    return list((replies or {}).values())


def observe(seen):
    seen("ping", lambda: one_worker(app.control.ping(timeout=1)))
    seen("registered", lambda: [sorted(n for n in names if n.startswith("tasks."))
                                for names in one_worker(
                                    app.control.inspect(timeout=1).registered())])
    marker = os.path.abspath("running")
    r = sleeper.delay(marker)
    wait_for(lambda: os.path.exists(marker))
    seen("active", lambda: [[(t["id"] == r.id, t["name"]) for t in tasks] for tasks in
                            one_worker(app.control.inspect(timeout=1).active())])
    seen("control.revoke terminate", lambda: app.control.revoke(r.id, terminate=True,
                                                                signal="SIGKILL"))
    seen("terminated: state", lambda: wait_for(lambda: r.state == "REVOKED", 5) and r.state)
    seen("result.revoke terminate", lambda: r.revoke(terminate=True))
    seen("terminated: get", r.get, timeout=5)
    waiting = [add.apply_async((i, i), countdown=30) for i in range(2)]
    seen("revoke a list", lambda: app.control.revoke([w.id for w in waiting]))
    seen("list revoked", lambda: [wait_for(lambda: w.state == "REVOKED", 3) and w.state
                                  for w in waiting])
    seen("rate_limit", lambda: one_worker(app.control.rate_limit("tasks.add", "100/m",
                                                                  reply=True)))
    seen("still works", lambda: add.delay(1, 1).get(timeout=10))
    seen("stats keys", lambda: [sorted(k for k in s if k in ("pool", "total", "pid"))
                                for s in one_worker(app.control.inspect(timeout=1).stats())])
