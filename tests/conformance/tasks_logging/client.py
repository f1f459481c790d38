"""The lines a task logger passed on, and what the logger is, in the worker and here."""
import os

from tasks import about_logger, add, logger, prints


def observe(seen):
    seen("result", lambda: add.delay(2, 3).get(timeout=10))
    seen("lines", lambda: open(os.path.abspath("log.txt")).read().splitlines())
    seen("logger in the worker", lambda: about_logger.delay().get(timeout=10))
    seen("logger here", lambda: [logger.name, logger.parent.name])
    seen("print in a task", lambda: prints.delay().get(timeout=10))
