"""The entries fire with their arguments."""
import os

from observe import wait_for
from tasks import app


def lines(name, at_least=2):
    path = os.path.abspath(name)
    wait_for(lambda: os.path.exists(path) and len(open(path).read().splitlines()) >= at_least,
             timeout=15)
    return [line.split()[0] for line in open(path).read().splitlines()] if os.path.exists(
        path) else []


def observe(seen):
    seen("add fired with its args", lambda: lines("add")[:2])
    seen("tick fired with its kwargs", lambda: lines("tick")[:2])
    seen("schedule names", lambda: sorted(app.conf.beat_schedule))
    seen("timezone", lambda: str(app.conf.timezone))
