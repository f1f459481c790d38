"""What the caller sees when each limit strikes."""
from tasks import cleans_up, ignores_soft, killed, quick


def observe(seen):
    seen("soft limit caught", lambda: cleans_up.delay().get(timeout=10))
    r = ignores_soft.delay()
    seen("soft limit not caught", r.get, timeout=10)
    seen("soft limit not caught: state", lambda: r.state)
    r = killed.delay()
    seen("hard limit", r.get, timeout=15)
    seen("hard limit: state", lambda: r.state)
    seen("hard limit: exception type", lambda: type(r.result).__name__)
    seen("within its limits", lambda: quick.delay().get(timeout=10))
    seen("limits in apply_async", lambda: quick.apply_async(time_limit=3, soft_time_limit=2)
         .get(timeout=10))
