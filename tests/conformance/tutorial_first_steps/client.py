"""The first-steps session: call the task, keep the result, ask it questions."""
from tasks import add, app, fails


def observe(seen):
    result = add.delay(4, 4)
    seen("get", result.get, timeout=10)
    seen("ready after get", result.ready)
    seen("result attribute", lambda: result.result)
    seen("successful", result.successful)
    seen("failed", result.failed)
    seen("state", lambda: result.state)
    seen("status", lambda: result.status)
    seen("id is text", lambda: isinstance(result.id, str) and len(result.id) == 36)
    seen("str", lambda: str(result).replace(result.id, "<id>"))
    seen("repr", lambda: repr(result).replace(result.id, "<id>"))
    seen("by id", lambda: app.AsyncResult(result.id).get(timeout=10))
    seen("called inline", add, 2, 3)
    seen("task name", lambda: add.name)

    bad = fails.delay("nope")
    seen("get raises", bad.get, timeout=10)
    seen("get propagate=False", bad.get, timeout=10, propagate=False)
    seen("failed state", lambda: bad.state)
    seen("failed()", bad.failed)
    seen("traceback names the error",
         lambda: "ValueError: nope" in bad.traceback.strip().splitlines()[-1])
