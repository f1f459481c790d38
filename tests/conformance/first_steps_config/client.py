"""What the configured app answers, and where the routed task runs."""
import warnings

warnings.simplefilter("ignore")

import tasks  # noqa: E402


def observe(seen):
    conf = tasks.app.conf
    seen("timezone", lambda: conf.timezone)
    seen("task_serializer", lambda: conf.task_serializer)
    seen("accept_content", lambda: list(conf.accept_content))
    seen("enable_utc", lambda: conf.enable_utc)
    seen("task_routes", lambda: dict(conf.task_routes))
    seen("conf['timezone']", lambda: conf["timezone"])
    seen("routed add", lambda: tasks.add.delay(2, 3).get(timeout=10))
    seen("default queue routing key", lambda: tasks.where.delay().get(timeout=10))
    seen("queue= routing key",
         lambda: tasks.where.apply_async(queue="low-priority").get(timeout=10))
