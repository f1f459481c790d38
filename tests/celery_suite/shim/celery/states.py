"""celery.states: litequeue's state names."""
from litequeue import (EXPIRED, FAILURE, PENDING, READY_STATES, RETRY, REVOKED,  # noqa: F401
                       STARTED, SUCCESS)
