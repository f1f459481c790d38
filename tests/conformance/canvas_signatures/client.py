"""What a signature answers, and what calling it does."""
import json

from tasks import add, signature, tagged


def observe(seen):
    seen("signature by name",
         lambda: repr(signature("tasks.add", args=(2, 2), countdown=10)))
    s = add.signature((2, 2), countdown=10)
    seen("add.signature", lambda: repr(s))
    seen("add.s", lambda: repr(add.s(2, 2)))
    seen("s.args", lambda: s.args)
    seen("s.kwargs", lambda: s.kwargs)
    seen("s.options", lambda: s.options)
    seen("s.task", lambda: s.task)
    seen("keyword arguments", lambda: repr(tagged.s(2, 2, debug=True)))
    seen("called here", lambda: add.s(2, 2)())
    seen("invert ~", lambda: ~add.s(2, 2))
    seen("s.delay", lambda: add.s(2, 2).delay().get(timeout=10))
    seen("apply_async with countdown",
         lambda: add.s(2, 2).apply_async(countdown=0.2).get(timeout=10))
    partial = add.s(2)
    seen("partial delay(4)", lambda: partial.delay(4).get(timeout=10))
    seen("partial apply_async((4,))", lambda: partial.apply_async((4,)).get(timeout=10))
    seen("kwargs merged",
         lambda: tagged.s(2, 2).delay(debug=True).get(timeout=10))
    seen("clone", lambda: repr(partial.clone(args=(4,), kwargs={"debug": True})))
    seen("set", lambda: add.s(2, 2).set(countdown=1).options)
    seen("si", lambda: repr(add.si(2, 2)))
    seen("immutable flag", lambda: [add.si(2, 2).immutable, add.s(2, 2).immutable])
    seen("signature(immutable=True)",
         lambda: add.signature((2, 2), immutable=True).immutable)
    seen("si ignores the partial", lambda: add.si(2, 2).delay(9).get(timeout=10))
    seen("is a dict", lambda: isinstance(add.s(2, 2), dict))
    seen("json round trip", lambda: signature(json.loads(json.dumps(add.s(2, 2)))).delay().get(
        timeout=10))
    fr = add.s(3, 3)
    frozen = fr.freeze()
    seen("freeze gives the id",
         lambda: [type(frozen).__name__, fr.delay().id == frozen.id])
    seen("frozen result", lambda: frozen.get(timeout=10))
