"""celery.contrib.testing.manager: Celery's test Manager. Its remote control is the app's:
inspect() is app.control.inspect(), which litequeue answers from the workers' rows. The
waiting helpers the canvas suite calls read result states, as Celery's do; everything
else (query_task, the result backend's cache, wait_until_idle) stays a placeholder."""
import time

from ..._missing import MissingObject


class Manager(MissingObject):
    def __init__(self, app, **kwargs):
        super().__init__("Celery test Manager (query_task, backend cache, idle wait)")
        object.__setattr__(self, "app", app)

    def inspect(self, timeout=3.0):
        return self.app.control.inspect(timeout=timeout)

    def assert_result_tasks_in_progress_or_completed(self, async_results, interval=0.5,
                                                     max_retries=10, **_):
        """Wait until every result reads STARTED or SUCCESS (Celery's: ten tries with a
        growing pause); AssertionError if they never do."""
        deadline = time.monotonic() + interval * max_retries * 4
        while time.monotonic() < deadline:
            if all(r.state in ("STARTED", "SUCCESS") for r in async_results):
                return True
            time.sleep(interval / 5)
        raise AssertionError("the tasks were never started or completed: "
                             f"{[r.state for r in async_results]}")
