"""The example's session: `from myapp import add; add.delay(16, 16).get()`."""
import warnings

warnings.simplefilter("ignore")

from myapp import add, app  # noqa: E402


def observe(seen):
    result = add.delay(16, 16)
    seen("ready at once", result.ready)
    seen("get", result.get, timeout=10)
    seen("task name", lambda: add.name)
    seen("registered under its name", lambda: "myapp.add" in app.tasks)
    seen("acks_late of the task", lambda: add.acks_late)
    seen("conf.task_acks_late", lambda: app.conf.task_acks_late)
    several = [add.delay(i, i) for i in range(4)]
    seen("four at once", lambda: [r.get(timeout=10) for r in several])
