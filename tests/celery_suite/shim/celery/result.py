"""celery.result: litequeue's results."""
from litequeue import AsyncResult, GroupResult  # noqa: F401

from ._missing import litequeue_or, missing_class

ResultSet = litequeue_or("ResultSet", missing_class("ResultSet", "ResultSet"))
