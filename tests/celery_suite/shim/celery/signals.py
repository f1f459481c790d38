"""celery.signals: litequeue's signals (litequeue.signals), by the same names."""
from litequeue import signals as _signals

from ._missing import MissingObject


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    found = getattr(_signals, name, None)
    return found if found is not None else MissingObject(f"signal {name}")
