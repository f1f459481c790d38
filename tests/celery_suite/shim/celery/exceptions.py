"""celery.exceptions: litequeue's exceptions. ImproperlyConfigured is litequeue's
ConfigurationError (the same role: a call or setting that cannot work as given) unless
litequeue has that name itself."""
from litequeue import ChordError, SoftTimeLimitExceeded, TimeoutError  # noqa: F401
from litequeue import ConfigurationError

from ._missing import litequeue_or, missing_class

ImproperlyConfigured = litequeue_or("ImproperlyConfigured", ConfigurationError)
Reject = litequeue_or("Reject", missing_class("Reject", "Reject (rejecting a message)",
                                              Exception))
