"""What the handlers saw, in what order; state kept on the task instance per process."""
import glob
import json
import os

from observe import wait_for
from tasks import bad, class_defaults, good, named, process_rows, retried


def events(name):
    found = []
    for path in glob.glob(os.path.abspath("events-*.jsonl")):
        with open(path) as f:
            found += [json.loads(line) for line in f if json.loads(line)["task"] == name]
    return found


def observe(seen):
    runs = [process_rows.delay(i).get(timeout=10) for i in range(6)]
    seen("instance state", lambda: [r[:2] for r in runs])
    seen("called here", lambda: process_rows(9)[:2])
    seen("good", lambda: good.delay(21).get(timeout=10))
    seen("good's handlers", lambda: wait_for(lambda: len(events("tasks.good")) == 3, 5)
         and events("tasks.good") or events("tasks.good"))
    seen("bad", lambda: bad.delay().get(timeout=10))
    seen("bad's handlers", lambda: wait_for(lambda: len(events("tasks.bad")) == 3, 5)
         and events("tasks.bad") or events("tasks.bad"))
    seen("retried", lambda: retried.delay().get(timeout=10))
    seen("retried's handlers", lambda: wait_for(lambda: len(events("tasks.retried")) == 6, 5)
         and None or sorted(e["event"] for e in events("tasks.retried")))
    seen("defaults from the base class", lambda: class_defaults.delay().get(timeout=10))
    seen("app.Task with __call__", lambda: named.delay("you").get(timeout=10))
    seen("app.Task called here", named, "me")
