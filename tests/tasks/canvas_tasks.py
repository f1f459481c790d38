import json
import os
import time

from litequeue import LiteQueue, Task, signals

app = LiteQueue("jobs.sqlite")
MARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "marks")


def log(name, *fields):
    fd = os.open(os.path.join(MARKS, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(fields) + "\n").encode())
    finally:
        os.close(fd)


def wait_for(marker, seconds=60):
    deadline = time.monotonic() + seconds
    while not os.path.exists(os.path.join(MARKS, marker)):
        if time.monotonic() > deadline:
            raise TimeoutError(marker)
        time.sleep(0.005)


@app.task
def add(x, y):
    return x + y


@app.task
def sub(x, y):
    return x - y


@app.task
def mul(x, y):
    return x * y


@app.task
def collect(values):
    return values


@app.task
def identity(value):
    return value


@app.task
def nap_echo(value, seconds):
    time.sleep(seconds)
    return value


@app.task
def fail(message):
    raise ValueError(message)


@app.task(bind=True)
def step(self, value, tag):
    """A chaos step: logs each start with its attempt, naps 0-15 ms, adds one."""
    log(f"runs.{tag}", self.request.id, self.request.attempt)
    time.sleep((value * 7919 % 16) / 1000)
    return value + 1


@app.task
def fails_once(value, marker):
    """Fails until the marker exists, then passes its value on."""
    if not os.path.exists(os.path.join(MARKS, marker)):
        raise ValueError("not yet")
    return value


@app.task
def errback3(request, exc, traceback):
    log("errbacks", request.id, request.task, request.args, type(exc).__name__, str(exc),
        "Traceback" in (traceback or ""))
    return "errback3 " + request.id


@app.task
def errback1(task_id):
    log("errbacks", task_id)
    return "errback1 " + task_id


@app.task
def broken_errback(request, exc, traceback):
    raise RuntimeError("the errback itself breaks")


@app.task(bind=True)
def progress(self, total, marker):
    for i in range(total):
        self.update_state(state="PROGRESS", meta={"current": i + 1, "total": total})
    wait_for(marker)
    return total


class Hooked(Task):
    def on_success(self, retval, task_id, args, kwargs):
        log("hooks", "on_success", task_id, retval, args)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        log("hooks", "on_failure", task_id, type(exc).__name__, "Traceback" in einfo.traceback)

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        log("hooks", "on_retry", task_id, type(exc).__name__)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        log("hooks", "after_return", task_id, status)
        raise RuntimeError("a hook that breaks changes nothing")


@app.task(base=Hooked, bind=True, max_retries=1, default_retry_delay=0.05)
def hooked(self, mode):
    if mode == "fail":
        raise KeyError("no such key")
    if mode == "retry" and self.request.retries == 0:
        raise self.retry(exc=OSError("try again"))
    return mode


@app.task(ignore_result=True)
def quiet(x):
    return x * 2


@app.task(bind=True)
def spawner(self, n):
    """Queues n subtasks from inside a task: they record it as their parent."""
    return [add.delay(i, i).id for i in range(n)]


@signals.task_prerun.connect
def _prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **more):
    log("signals", "task_prerun", task_id, sender.name)


@signals.task_postrun.connect
def _postrun(sender=None, task_id=None, retval=None, state=None, **more):
    log("signals", "task_postrun", task_id, state)


@signals.task_success.connect
def _success(sender=None, result=None, **more):
    log("signals", "task_success", sender.name, result)


@signals.task_success.connect
def _breaks(sender=None, **more):
    raise RuntimeError("a signal handler that breaks changes nothing")


@signals.task_failure.connect
def _failure(sender=None, task_id=None, exception=None, einfo=None, **more):
    log("signals", "task_failure", task_id, type(exception).__name__)


@signals.task_retry.connect
def _retry(sender=None, request=None, reason=None, **more):
    log("signals", "task_retry", request.id, type(reason).__name__)


@signals.worker_ready.connect
def _ready(sender=None, **more):
    log("signals", "worker_ready")


@signals.worker_shutdown.connect
def _shutdown(sender=None, **more):
    log("signals", "worker_shutdown")


@app.task(bind=True)
def replacer(self, how):
    """Task.replace() with each kind of canvas, as Celery's canvas guide shows."""
    from litequeue import group
    from litequeue import chain
    replacements = {"sig": add.s(2, 3), "chain": add.s(1, 1) | mul.s(10),
                    "group": group(add.s(1, 1), add.s(2, 2)), "fail": fail.s("replaced"),
                    "empty": chain()}
    return self.replace(replacements[how])


@app.task(bind=True)
def ids(self, *args):
    """Its request's root and parent ids, and its arguments."""
    return [self.request.root_id, self.request.parent_id, list(args)]


@signals.task_received.connect
def _received(sender=None, request=None, **more):
    log("received", request.id, request.stamps)


@app.task(bind=True, max_retries=1)
def grows_chord(self, nums, how):
    """Celery's add_to_chord: each number becomes one more task of this task's chord
    ("tasks"), or one chord added to it ("chord"); "retry" adds one, then runs again."""
    from litequeue import group
    if how == "chord":
        self.add_to_chord(group(add.s(n, 4) for n in nums) | collect.s())
    else:
        for n in nums:
            self.add_to_chord(add.s(n, 4))
    if how == "retry" and not self.request.retries:
        raise self.retry(countdown=0)
    return 0
