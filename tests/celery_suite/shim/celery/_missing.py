"""Placeholders for Celery names litequeue does not have.

Each one lets Celery's test modules import, and raises NotImplementedError("litequeue has
no ...") the moment a test uses it, so that test fails with that reason and no other.
Nothing here does any work of litequeue's or Celery's.
"""


def _refuse(what):
    raise NotImplementedError(f"litequeue has no {what}")


def missing_function(what):
    """A function that refuses when called."""
    def placeholder(*args, **kwargs):
        _refuse(what)
    placeholder.__qualname__ = placeholder.__name__ = what.split()[0]
    return placeholder


def missing_class(name, what, base=object):
    """A class that can be named, subclassed and used in isinstance(), and refuses to be
    made: isinstance(anything, it) is False."""
    def __init__(self, *args, **kwargs):
        _refuse(what)
    return type(name, (base,), {"__init__": __init__, "__doc__": f"Placeholder: {what}."})


class MissingObject:
    """An object every attribute or call of which refuses (a signal, a manager...)."""

    def __init__(self, what):
        object.__setattr__(self, "_what", what)

    def __getattr__(self, name):
        _refuse(f"{self._what} ({name})")

    def __call__(self, *args, **kwargs):
        _refuse(self._what)

    def __repr__(self):
        return f"<placeholder: litequeue has no {self._what}>"


def litequeue_or(name, placeholder):
    """litequeue's object of that name if it has one (litequeue keeps every public name at
    its top level), else the placeholder: the shim follows litequeue as it grows."""
    import litequeue
    found = getattr(litequeue, name, None)
    return placeholder if found is None else found
