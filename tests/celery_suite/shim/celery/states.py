"""celery.states: litequeue's state names."""
from litequeue import FAILURE, PENDING, READY_STATES, RETRY, REVOKED, STARTED, SUCCESS  # noqa: F401
