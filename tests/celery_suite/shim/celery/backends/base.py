"""celery.backends.base: litequeue has no result backend objects (results are rows of its
one database)."""
from .. import states  # noqa: F401
from .._missing import litequeue_or, missing_class

BaseKeyValueStoreBackend = litequeue_or("BaseKeyValueStoreBackend", missing_class(
    "BaseKeyValueStoreBackend", "result backend classes (BaseKeyValueStoreBackend)"))
