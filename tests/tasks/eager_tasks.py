import json
import os

from litequeue import LiteQueue, Task, signals

app = LiteQueue("jobs.sqlite")
MARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "marks")


def describe(value):
    """What a handler can rely on in an argument, as JSON."""
    if isinstance(value, Task):
        return ["task", value.name]
    if isinstance(value, BaseException):
        return ["exception", type(value).__name__, str(value)]
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, [describe(v) for v in value]]
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in sorted(value.items())}
    if isinstance(value, str) and value.startswith("Traceback"):
        return ["traceback text"]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "traceback") and hasattr(value, "exception"):
        return ["einfo", describe(value.exception), value.type.__name__,
                value.traceback.startswith("Traceback")]
    if hasattr(value, "retries") and hasattr(value, "args"):
        return ["request", value.id, value.task, value.retries, describe(value.args),
                describe(value.kwargs), value.parent_id, value.root_id]
    return ["other", type(value).__name__]


def log(name, *fields):
    mode = "eager" if app.conf["task_always_eager"] else "worker"
    fd = os.open(os.path.join(MARKS, mode), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps([name, *map(describe, fields)]) + "\n").encode())
    finally:
        os.close(fd)


class Recorded(Task):
    def on_success(self, *args):
        log("on_success", self, args)

    def on_failure(self, *args):
        log("on_failure", self, args)

    def on_retry(self, *args):
        log("on_retry", self, args)

    def after_return(self, *args):
        log("after_return", self, args)


def handler(name):
    def handle(sender=None, signal=None, **kwargs):
        log(name, sender, kwargs)
    return handle


for _name in ("before_task_publish", "after_task_publish", "task_prerun", "task_postrun",
              "task_success", "task_failure", "task_retry"):
    getattr(signals, _name).connect(handler(_name))


@app.task(base=Recorded, bind=True, max_retries=1, default_retry_delay=0)
def job(self, mode, n=0):
    if mode == "fail":
        raise KeyError("no such key")
    if mode == "retry" and self.request.retries == 0:
        raise self.retry(exc=OSError("try again"), countdown=0)
    if mode == "give up":
        raise self.retry(exc=OSError("again"), countdown=0)
    return [mode, n]
