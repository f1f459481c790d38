"""`celery`, as litequeue's names: a shim that lets Celery's integration canvas suite run
against litequeue (tests/celery_suite/run.py puts it first on sys.path).

It only renames. Every name here is litequeue's own object; where litequeue has no such
name there is a placeholder that raises NotImplementedError("litequeue has no ...") when
used (_missing.py). The test harness (celery.contrib.pytest) answers the few calls
Celery's conftest makes on every test; that module lists them.
"""
import litequeue
from litequeue import Signature, Task, chain, chord, group, signature

from . import states
from ._missing import MissingObject

__all__ = ("Signature", "Task", "chain", "chord", "group", "shared_task", "signature",
           "states")


def shared_task(*args, **options):
    """litequeue.shared_task. A task declared with an option litequeue's tasks do not
    take (litequeue's own list, Task._OPTIONS: e.g. pydantic=True) becomes a placeholder
    that refuses when used: litequeue registers every shared task on each app it makes
    and refuses the whole app for one unknown option, which would stop every test."""
    known = getattr(litequeue.Task, "_OPTIONS", None)
    unknown = sorted(set(options) - set(known)) if known is not None else []
    if not unknown:
        return litequeue.shared_task(*args, **options)
    what = "task option " + ", ".join(f"{k}={options[k]!r}" for k in unknown)

    def placeholder(fn):
        return MissingObject(f"{what} (task {fn.__module__}.{fn.__name__})")
    return placeholder(args[0]) if args else placeholder
