"""apply() and EagerResult, arguments checked when queued, and eager mode."""
from tasks import add, app, div, loose, who


def observe(seen):
    seen("__call__", add, 2, 2)
    seen("run", add.run, 2, 2)
    r = add.apply((2, 2))
    seen("apply type", lambda: type(r).__name__)
    seen("apply get", r.get)
    seen("apply state", lambda: [r.state, r.ready(), r.successful()])
    seen("apply request", lambda: who.apply().get())
    seen("called directly", who)
    bad = div.apply((1, 0))
    seen("apply failure state", lambda: [bad.state, bad.failed()])
    seen("apply failure get", bad.get)
    seen("apply failure result", lambda: type(bad.result).__name__)
    seen("typing: too few", add.delay, 1)
    seen("typing: too many", add.delay, 1, 2, 3)
    seen("typing=False", lambda: type(loose.delay(1)).__name__)
    app.conf.task_always_eager = True
    try:
        seen("eager delay type", lambda: type(add.delay(3, 3)).__name__)
        seen("eager delay get", lambda: add.delay(3, 3).get())
        seen("eager request", lambda: who.delay().get())
        seen("eager failure", lambda: div.delay(1, 0).get())
        seen("set task_eager_propagates",
             lambda: app.conf.update(task_eager_propagates=True))
        seen("eager_propagates", div.delay, 1, 0)
    finally:
        app.conf.task_always_eager = False
