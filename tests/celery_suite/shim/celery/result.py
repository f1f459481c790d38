"""celery.result: litequeue's results."""
from litequeue import AsyncResult, EagerResult, GroupResult  # noqa: F401

from ._missing import missing_class

ResultSet = missing_class("ResultSet", "ResultSet")
