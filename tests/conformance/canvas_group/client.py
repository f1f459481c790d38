"""group(...).apply_async() and what its GroupResult answers."""
from tasks import GroupResult, add, div, group


def observe(seen):
    g = group(add.s(2, 2), add.s(4, 4))
    seen("len", lambda: len(g))
    seen("repr", lambda: repr(g))
    res = g.apply_async()
    seen("get", res.get, timeout=10)
    seen("ready", res.ready)
    seen("successful", res.successful)
    seen("failed", res.failed)
    seen("waiting", res.waiting)
    seen("completed_count", res.completed_count)
    seen("join", res.join, timeout=10)
    seen("children are results", lambda: [type(r).__name__ for r in res.results])
    seen("len of result", lambda: len(res))
    seen("group()", lambda: group(add.s(i, i) for i in range(10))().get(timeout=10))
    seen("partial group", lambda: group(add.s(i) for i in range(4))(10).get(timeout=10))
    seen("group of a list", lambda: group([add.s(1, 1), add.s(2, 2)]).delay().get(timeout=10))
    mixed = group(add.s(1, 1), div.s(1, 0), add.s(2, 2)).apply_async()
    seen("one fails: get", mixed.get, timeout=10)
    seen("one fails: propagate=False",
         lambda: [repr(v) for v in mixed.get(timeout=10, propagate=False)])
    seen("one fails: successful", mixed.successful)
    seen("one fails: failed", mixed.failed)
    seen("one fails: completed_count", mixed.completed_count)
    res.save()
    seen("restore", lambda: GroupResult.restore(res.id).get(timeout=10))
    seen("empty group", lambda: group([]).apply_async().get(timeout=10))
