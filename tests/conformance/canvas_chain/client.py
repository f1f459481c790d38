"""chain(add.s(2, 2), add.s(4), add.s(8)) and its relatives."""
from tasks import add, chain, div, mul


def observe(seen):
    res = chain(add.s(2, 2), add.s(4), add.s(8))()
    seen("chain()", res.get, timeout=10)
    seen("parent", lambda: res.parent.get(timeout=10))
    seen("parent.parent", lambda: res.parent.parent.get(timeout=10))
    seen("parent.parent.parent", lambda: res.parent.parent.parent)
    seen("| operator", lambda: (add.s(2, 2) | add.s(4) | add.s(8))().get(timeout=10))
    seen("immutable steps", lambda: (add.si(2, 2) | add.si(4, 4) | add.si(8, 8))().get(
        timeout=10))
    seen("repr", lambda: repr(add.s(2, 2) | add.s(4) | add.s(8)))
    seen("chain.tasks", lambda: [repr(t) for t in chain(add.s(1, 1), mul.s(3)).tasks])
    seen("apply_async", lambda: chain(add.s(4, 4), mul.s(8), mul.s(10)).apply_async().get(
        timeout=10))
    seen("delay", lambda: chain(add.s(4, 4), mul.s(8)).delay().get(timeout=10))
    seen("partial chain", lambda: chain(add.s(4), mul.s(8))(4).get(timeout=10))
    seen("chain | chain", lambda: (chain(add.s(1, 1), mul.s(2)) | chain(add.s(3), mul.s(4)))()
         .get(timeout=10))
    seen("chain with countdown",
         lambda: chain(add.s(1, 1), add.s(1)).apply_async(countdown=0.2).get(timeout=10))
    bad = chain(add.s(1, 1), div.s(0), add.s(5))()
    seen("failing middle step", bad.get, timeout=10)
    seen("failing chain state", lambda: bad.state)
    seen("failing step state", lambda: bad.parent.state)
    seen("first step state", lambda: bad.parent.parent.state)
