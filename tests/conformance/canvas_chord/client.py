"""sum(i + i for i in range(100)) as a chord, and a chord whose member fails."""
import os
import uuid

from observe import wait_for
from tasks import add, chord, div, group, listing, on_chord_error, tsum


def observe(seen):
    seen("chord(header)(body)", lambda: chord(add.s(i, i) for i in range(100))(tsum.s()).get(
        timeout=10))
    seen("chord(header, body)()", lambda: chord([add.s(1, 1), add.s(2, 2)], tsum.s())().get(
        timeout=10))
    seen("chord apply_async", lambda: chord([add.s(1, 1)], tsum.s()).apply_async().get(
        timeout=10))
    seen("body with its own arguments",
         lambda: chord([add.s(3, 3), add.s(1, 1)])(listing.s("sums")).get(timeout=10))
    seen("immutable body", lambda: chord([add.s(1, 1)])(add.si(5, 5)).get(timeout=10))
    r = chord([add.s(2, 2), add.s(3, 3)])(tsum.s())
    seen("result", r.get, timeout=10)
    seen("parent is the header", lambda: [type(r.parent).__name__, r.parent.get(timeout=10)])
    seen("repr of a chord", lambda: repr(chord([add.s(1, 1)], tsum.s())))
    seen("group | body", lambda: (group(add.s(i, i) for i in range(3)) | tsum.s()).delay()
         .get(timeout=10))
    seen("empty header", lambda: chord([], tsum.s())().get(timeout=10))

    bad = str(uuid.uuid4())
    r = chord([add.s(4, 4), div.s(1, 0).set(task_id=bad), add.s(8, 8)])(tsum.s())
    seen("failing member: get", lambda: str(r.get(timeout=10, propagate=False)).replace(
        bad, "<member>"))
    seen("failing member: get raises", r.get, timeout=10)
    seen("failing member: state", lambda: r.state)
    seen("failing member: type", lambda: type(r.result).__name__)
    seen("the other members ran", lambda: [m.get(timeout=10, propagate=False).__class__.__name__
                                           for m in r.parent.results])
    r = chord([div.s(1, 0)], tsum.s().on_error(on_chord_error.s()))()
    r.get(timeout=10, propagate=False)
    path = os.path.abspath(f"chord-error-{r.id}.txt")
    seen("body errback", lambda: wait_for(lambda: os.path.exists(path)) and open(path).read())
