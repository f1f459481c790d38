"""celery.utils.log: litequeue's task logger."""
from litequeue import get_task_logger  # noqa: F401
