"""Tasks under global concurrency limits, for test_global_limits.py (copied into a project
as bounded.py). The timed tasks append a line to the file `log` when they start and when
they end: "start PID TIME" and "end PID TIME" (per_customer puts its key after the word),
each one O_APPEND write (atomic, and it survives a SIGKILL of the writer), TIME being
time.time() of that process."""
import json
import os
import time

from litequeue import LiteQueue

HERE = os.path.dirname(os.path.abspath(__file__))
app = LiteQueue(os.path.join(HERE, "jobs.sqlite"),
                **json.loads(os.environ.get("LQ_TEST_SETTINGS", "{}")))
# At most 2 STARTED rows of the queue "reports", whichever task they run, on every worker.
app.conf.queue_concurrency = {"reports": 2}
MARKS = os.path.join(HERE, "marks")


def log_line(log, *fields):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(map(str, fields)) + "\n").encode())
    finally:
        os.close(fd)


def timed(log, ms, *key):
    log_line(log, "start", *key, os.getpid(), repr(time.time()))
    time.sleep(ms / 1000)
    log_line(log, "end", *key, os.getpid(), repr(time.time()))
    return ms


# The chaos test SIGKILLs the processes running it: every kill charges a retry.
@app.task(concurrency=2, max_retries=100)
def two_at_once(ms, log):
    return timed(log, ms)


@app.task(concurrency_per_key=1, max_retries=100)
def per_customer(ms, log, key):
    """Queued with apply_async(..., concurrency_key=key): key is also an argument, for its
    log lines."""
    return timed(log, ms, key)


@app.task
def free(x):
    return x


@app.task(queue="reports")
def report(ms, log):
    return timed(log, ms)


@app.task(concurrency=2, max_retries=100)
def held(name):
    """Logs its start to marks/NAME, then waits until the test creates marks/NAME.go (or
    fails once the workers fixture's teardown creates marks/ABORT)."""
    log_line(os.path.join(MARKS, name), "start", os.getpid(), repr(time.time()))
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(MARKS, name + ".go")):
        if os.path.exists(os.path.join(MARKS, "ABORT")) or time.monotonic() > deadline:
            raise RuntimeError(f"{name} was never released")
        time.sleep(0.01)
    log_line(os.path.join(MARKS, name), "end", os.getpid(), repr(time.time()))
    return name


@app.task
def plain(ms, log):
    """No limit: its log lines carry the word "plain" where per_customer puts its key."""
    return timed(log, ms, "plain")
