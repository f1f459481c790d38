"""add.name, app.tasks, send_task by name, the task's repr."""
import re

from tasks import add, app, explicit, mul, my_name


def observe(seen):
    seen("explicit name", lambda: add.name)
    seen("automatic name", lambda: mul.name)
    seen("dotted explicit name", lambda: explicit.name)
    seen("app.tasks lookup", lambda: app.tasks["sum-of-two-numbers"].name)
    seen("registered user tasks", lambda: sorted(n for n in app.tasks if not n.startswith("celery.")))
    seen("send_task", lambda: app.send_task("sum-of-two-numbers", args=(2, 2)).get(timeout=10))
    seen("send_task kwargs", lambda: app.send_task("tasks.mul", kwargs={"x": 3, "y": 3}).get(
        timeout=10))
    seen("self.name", lambda: my_name.delay().get(timeout=10))
    seen("repr of a task", lambda: re.sub(r"0x[0-9a-f]+", "0x", repr(add)))
    seen("send_task of an unknown name",
         lambda: app.send_task("no.such.task", args=()).get(timeout=3))
