"""Both entries fire, with their arguments, and the app lists them."""
import os

from observe import wait_for


def fired(what, times=2):
    path = os.path.abspath(f"said-{what}")
    return bool(wait_for(lambda: os.path.exists(path)
                         and len(open(path).read().splitlines()) >= times, timeout=15))


def observe(seen):
    seen("hello fired twice", fired, "hello")
    seen("world fired twice", fired, "world")
    from myapp import app
    seen("entry names", lambda: sorted(app.conf.beat_schedule))
