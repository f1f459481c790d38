"""Signatures, partials, groups, chains and chords as the next-steps guide calls them."""
from tasks import add, chain, chord, group, mul, xsum


def observe(seen):
    seen("repr add.s(2, 2)", lambda: repr(add.s(2, 2)))
    seen("repr signature with countdown", lambda: repr(add.signature((2, 2), countdown=10)))
    s1 = add.s(2, 2)
    seen("s1.delay", lambda: s1.delay().get(timeout=10))
    s2 = add.s(2)
    seen("partial s2.delay(8)", lambda: s2.delay(8).get(timeout=10))
    seen("repr partial", lambda: repr(s2))
    s3 = add.s(2, 2, debug=True)
    seen("repr with kwargs", lambda: repr(s3))
    seen("s3.kwargs", lambda: s3.kwargs)
    seen("apply_async with new kwargs", lambda: add.s(2).apply_async((3,), {}).get(timeout=10))

    seen("group()", lambda: group(add.s(i, i) for i in range(10))().get(timeout=10))
    g = group(add.s(i) for i in range(10))
    seen("partial group", lambda: g(10).get(timeout=10))
    seen("repr group", lambda: repr(group(add.s(2, 2), add.s(4, 4))))

    seen("chain()", lambda: chain(add.s(4, 4) | mul.s(8))().get(timeout=10))
    pc = chain(add.s(4) | mul.s(8))
    seen("partial chain", lambda: pc(4).get(timeout=10))
    seen("| chain", lambda: (add.s(4, 4) | mul.s(8))().get(timeout=10))
    seen("repr chain", lambda: repr(add.s(4, 4) | mul.s(8)))

    seen("chord", lambda: chord((add.s(i, i) for i in range(10)), xsum.s())().get(timeout=10))
    seen("group | task is a chord",
         lambda: (group(add.s(i, i) for i in range(10)) | xsum.s())().get(timeout=10))
    seen("group | task type", lambda: type(group(add.s(1, 1)) | xsum.s()).__name__)
    seen("upgraded group result",
         lambda: (group(add.s(i, i) for i in range(4)) | xsum.s()).delay().parent.get(timeout=10))
