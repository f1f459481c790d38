"""celery.exceptions: litequeue's exceptions. ImproperlyConfigured is litequeue's
ConfigurationError (the same role: a call or setting that cannot work as given)."""
from litequeue import (ChordError, MaxRetriesExceededError, Retry,  # noqa: F401
                       SoftTimeLimitExceeded, TaskRevoked, TimeLimitExceeded, TimeoutError,
                       WorkerLostError)
from litequeue import ConfigurationError as ImproperlyConfigured  # noqa: F401

from ._missing import missing_class

Reject = missing_class("Reject", "Reject (rejecting a message)", Exception)
