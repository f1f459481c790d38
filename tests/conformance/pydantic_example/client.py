"""Calling with a dict (what crosses the wire) and with a model."""
from tasks import ArgModel, optional, x


def observe(seen):
    seen("dict argument", lambda: x.delay({"value": 1}).get(timeout=10))
    seen("model argument", lambda: x.delay(ArgModel(value=2)).get(timeout=10))
    seen("invalid argument", lambda: x.delay({"value": "not a number"}).get(timeout=10))
    seen("optional model", lambda: optional.delay(n=3).get(timeout=10))
    seen("called here", lambda: repr(x(ArgModel(value=4))))
