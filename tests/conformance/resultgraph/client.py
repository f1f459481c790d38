"""Follow the ids each level returns down to the leaves; and a task returning a result
object."""
from tasks import A, A_returns_result, app


def observe(seen):
    group_id = A.delay().get(timeout=10)
    seen("A returns a group id", lambda: isinstance(group_id, str))
    seen("the group's members, saved by the task",
         lambda: app.GroupResult.restore(group_id).get(timeout=10) and "chord ids")

    def leaves():
        chord_ids = app.GroupResult.restore(group_id).get(timeout=10)
        return [app.AsyncResult(i).get(timeout=10) for i in chord_ids]
    seen("joined", leaves)
    def children_once_done():
        run = A.delay()
        run.get(timeout=10)             # both engines know its children once it has run
        return sorted(type(c).__name__ for c in (app.AsyncResult(run.id).children or []))
    seen("children of A's run", children_once_done)
    seen("a task returning a GroupResult",
         lambda: type(A_returns_result.delay().get(timeout=10)).__name__)
