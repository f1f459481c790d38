"""tasks.rst, "Logging": a module-level task logger used inside tasks."""
import logging
import os

from litequeue import LiteQueue  # celery: from celery import Celery
from litequeue import get_task_logger  # celery: from celery.utils.log import get_task_logger
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)

logger = get_task_logger(__name__)


class ToFile(logging.Handler):
    def emit(self, record):
        with open(os.path.abspath("log.txt"), "a") as f:
            f.write(f"{record.levelname} {record.name} {record.getMessage()}\n")


@app.task
def add(x, y):
    handler = ToFile()
    logger.addHandler(handler)
    try:
        logger.info("Adding %s + %s", x, y)
        logger.warning("careful")
    finally:
        logger.removeHandler(handler)
    return x + y


@app.task
def about_logger():
    return {"name": logger.name, "is a Logger": isinstance(logger, logging.Logger),
            "parent": logger.parent.name, "propagate": logger.propagate,
            "effective level": logging.getLevelName(logger.getEffectiveLevel())}


@app.task
def prints():
    print("printed by a task")
    return "printed"
