"""What each handler was given."""
import json
import os

from observe import wait_for
from tasks import add, fails, published, retries_once


def notes(name, task_id=None, count=1):
    path = os.path.abspath(f"signal-{name}.jsonl")

    def read():
        if not os.path.exists(path):
            return []
        rows = [json.loads(line) for line in open(path).read().splitlines()]
        return [r for r in rows if task_id is None or r.get("task_id") == task_id]
    wait_for(lambda: len(read()) >= count)
    return read()


def named(rows, task_id):
    return [{k: ("<id>" if v == task_id else v) for k, v in row.items()} for row in rows]


def observe(seen):
    r = add.delay(2, 2)
    seen("result", r.get, timeout=10)
    seen("publish signals", lambda: [[p[0], p[1], p[2] == r.id, *p[3:]] for p in published])
    seen("prerun", lambda: named(notes("prerun", r.id), r.id))
    seen("postrun", lambda: named(notes("postrun", r.id), r.id))
    seen("success", lambda: notes("success", count=1))
    published.clear()
    bad = fails.delay()
    seen("failure result", bad.get, timeout=10)
    seen("only add's after_task_publish", lambda: [p[0] for p in published])
    seen("failure", lambda: named(notes("failure", bad.id), bad.id))
    seen("postrun of a failure", lambda: named(notes("postrun", bad.id), bad.id))
    again = retries_once.delay()
    seen("retried result", again.get, timeout=10)
    seen("retry", lambda: named(notes("retry", again.id), again.id))
    seen("worker_ready once", lambda: len(notes("worker_ready")))
    seen("worker_process_init per process",
         lambda: len({n["pid"] for n in notes("worker_process_init", count=2)}))
