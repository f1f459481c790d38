"""Tasks for litequeue's test suite (copied into a temp dir by the tests)."""
import ctypes
import json
import os
import signal
import time

from litequeue import LiteQueue, LitequeueError, SoftTimeLimitExceeded, TimeLimitExceeded

# Tests pass extra settings to the workers through the environment.
app = LiteQueue("jobs.sqlite", **json.loads(os.environ.get("LQ_TEST_SETTINGS", "{}")))

MARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "marks")


class TaskFailed(Exception):
    """What fail() raises: tests check that this type reaches the caller."""


def _mark(name):
    with open(os.path.join(MARKS, name), "w"):
        pass


@app.task
def add(x, y):
    return x + y


@app.task
def fail(message):
    raise TaskFailed(message)


@app.task(bind=True)
def record(self, n):
    """One ledger line per execution. O_APPEND writes of one short line are atomic, so
    the per-process ledgers are exact even with many processes."""
    fd = os.open(os.path.join(MARKS, f"ledger.{os.getpid()}"),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{self.request.id} {n}\n".encode())
    finally:
        os.close(fd)
    return n


@app.task(bind=True)
def block(self, name, timeout=120):
    """Mark that it started (marks/NAME.started.ATTEMPT.PID), then run until the test
    creates marks/NAME.go (or marks/ABORT, which teardown creates)."""
    _mark(f"{name}.started.{self.request.attempt}.{os.getpid()}")
    go, abort = os.path.join(MARKS, name + ".go"), os.path.join(MARKS, "ABORT")
    deadline = time.monotonic() + timeout
    while not os.path.exists(go):
        if os.path.exists(abort) or time.monotonic() > deadline:
            raise RuntimeError(f"block({name!r}) was never released")
        time.sleep(0.01)
    return name


@app.task
def bad_result():
    return {1, 2}                       # msgpack cannot encode a set


class Picky(Exception):
    """An exception that cannot be rebuilt from its args alone."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


@app.task
def picky():
    raise Picky(1, 2)


@app.task(bind=True)
def interrupt(self):
    """Raise a BaseException that is not an Exception, marking each run."""
    _mark(f"interrupt.{self.request.id}.{self.request.attempt}")
    raise KeyboardInterrupt("from the task")


@app.task(bind=True)
def stamp(self, tag):
    """Append the unix time it started to marks/stamp.TAG (one line per run) and return
    it: what ETA and expiry tests check."""
    started = time.time()
    with open(os.path.join(MARKS, f"stamp.{tag}"), "a") as f:
        f.write(f"{started!r} {self.request.id}\n")
    return started


def _die(task, how):
    _mark(f"die.{task.request.id}.{task.request.attempt}")
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "segfault":
        ctypes.string_at(0)             # reads address 0: SIGSEGV
    os._exit(1)


@app.task(bind=True)
def die(self, how):
    """Kill the process running it: every run leaves marks/die.ID.ATTEMPT first."""
    _die(self, how)


@app.task(bind=True, max_retries=1)
def die_once(self, how):
    """die() with a budget of one retry."""
    _die(self, how)


# -- failure handling (issue 4) -------------------------------------------------------

def _line(name, text):
    """Append one line to marks/NAME with a single O_APPEND write (atomic, survives
    SIGKILL of any writer)."""
    fd = os.open(os.path.join(MARKS, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def _runs(task, name):
    """Log one run: marks/runs.NAME gets 'retries attempt pid time'."""
    r = task.request
    _line(f"runs.{name}", f"{r.retries} {r.attempt} {os.getpid()} {time.time()!r}")


@app.task(bind=True, autoretry_for=(IOError,), max_retries=3, retry_backoff=0.2,
          retry_backoff_max=600, retry_jitter=False)
def flaky(self, name, fail_times):
    """Raise IOError on the first fail_times runs, then return self.request.retries."""
    _runs(self, name)
    if self.request.retries < fail_times:
        raise IOError(f"{name} failed on retry {self.request.retries}")
    return self.request.retries


@app.task(bind=True, autoretry_for=(IOError,), max_retries=3, retry_backoff=True,
          retry_backoff_max=0.5, retry_jitter=True)
def jittery(self, name):
    """Always raises IOError: backoff 1, 2, 4 s capped at 0.5 s, with full jitter."""
    _runs(self, name)
    raise IOError(f"{name} jitter {self.request.retries}")


@app.task(autoretry_for=(IOError,), max_retries=1, retry_backoff=0.1, retry_jitter=False)
def flaky_max1(name):
    """max_retries=1 set on the task only (a producer that did not import it cannot
    know it)."""
    _line(f"runs.{name}", "run")
    raise IOError(name)


@app.task(bind=True, max_retries=3)
def retrier(self, name, fail_times, countdown, with_exc=True):
    """self.retry(exc=..., countdown=...) on the first fail_times runs. The retry request
    passes through ``except LitequeueError``: Retry is not one."""
    _runs(self, name)
    if self.request.retries < fail_times:
        try:
            if with_exc:
                raise self.retry(exc=TaskFailed(f"{name} try {self.request.retries}"),
                                 countdown=countdown)
            raise self.retry(countdown=countdown)
        except LitequeueError:
            return "swallowed"
    return self.request.retries


@app.task(bind=True)
def bad_retry(self, name):
    """Asks for a retry with a countdown that is not a number."""
    _runs(self, name)
    raise self.retry(exc=TaskFailed(name), countdown="soon")


def _nap(task, name, seconds):
    """Mark the start (like block), sleep, then mark marks/NAME.finished.PID."""
    _mark(f"{name}.started.{task.request.attempt}.{os.getpid()}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(MARKS, "ABORT")):
            raise RuntimeError(f"nap({name!r}) aborted")
        time.sleep(0.005)
    _mark(f"{name}.finished.{os.getpid()}")
    return name


def _nap_and_clean_up(task, name):
    try:
        return _nap(task, name, 60)
    except SoftTimeLimitExceeded:
        _mark(f"{name}.cleaned.{os.getpid()}")
        return f"{name} cleaned up"


@app.task(bind=True)
def nap(self, name, seconds):
    return _nap(self, name, seconds)


@app.task(bind=True, time_limit=0.5)
def hard_limited(self, name):
    return _nap(self, name, 60)


@app.task(bind=True, time_limit=0.4, autoretry_for=(TimeLimitExceeded,), max_retries=2,
          retry_backoff=0.1, retry_jitter=False)
def limited_retry(self, name, slow_times):
    """Runs past its time limit on the first slow_times runs."""
    _runs(self, name)
    return _nap(self, name, 60 if self.request.retries < slow_times else 0)


@app.task(bind=True, soft_time_limit=0.3)
def soft_limited(self, name):
    return _nap_and_clean_up(self, name)


@app.task(bind=True)
def cleans_up(self, name):
    """No limit of its own: the worker's --soft-time-limit applies."""
    return _nap_and_clean_up(self, name)


_HOARD = []


@app.task
def hog(mib):
    """Keep mib MiB resident in this process (written, so the pages are real)."""
    _HOARD.append(b"\x01" * (mib * 1024 * 1024))
    return os.getpid()


@app.task
def echo(*args, **kwargs):
    return [list(args), kwargs]


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


@app.task
def unprintable():
    raise Unprintable("hidden")


@app.task
def unencodable_error():
    raise TaskFailed({1, 2})            # args that msgpack cannot encode


@app.task(bind=True, max_retries=100)
def chaos(self, n, ms):
    """Log the start to marks/exec.PID, sleep ms milliseconds, log the end."""
    _line(f"exec.{os.getpid()}", f"start {self.request.id} {n}")
    time.sleep(ms / 1000)
    _line(f"exec.{os.getpid()}", f"done {self.request.id} {n}")
    return n


_FIELDS = ("id", "task", "called_directly", "is_eager", "headers", "argsrepr", "kwargsrepr",
           "shadow", "ignore_result", "delivery_info", "correlation_id", "reply_to", "origin",
           "timelimit", "eta", "expires", "callbacks", "errbacks", "chain", "chord",
           "group_index", "retries", "parent_id", "root_id", "group")


@app.task(bind=True)
def request_fields(self, inner=False):
    """Celery's request fields as this call sees them; inner: also those of a plain call of
    itself made from inside, and then its own again (restored after the inner call)."""
    fields = {name: getattr(self.request, name) for name in _FIELDS}
    if inner:
        fields["inner"] = request_fields()
        fields["after"] = self.request.id
    return fields


class Wrapped(app.Task):
    """A base class with its own __call__, as Celery's guide writes them: a worker calls
    it once per run, and the run still sees the worker's request."""

    def __call__(self, *args, **kwargs):
        _line("wrapped", str(self.request.id))
        return super().__call__(*args, **kwargs)


@app.task(bind=True, base=Wrapped)
def wrapped(self):
    return [self.request.id, self.request.called_directly]


@app.task
def waits_on_another():
    """get() of another task from inside a task: refused, unless told it may block."""
    from litequeue import allow_join_result
    other = add.delay(20, 22)
    try:
        other.get(timeout=10)
        refused = None
    except RuntimeError as exc:
        refused = str(exc)
    allowed = other.get(timeout=30, disable_sync_subtasks=False)
    with allow_join_result():
        inside = other.get(timeout=30)
    return [refused, allowed, inside]


@app.task(bind=True)
def set_aside(self, how):
    """Celery's Ignore and Reject, raised after a custom state (the tasks guide's shape)."""
    from litequeue import Ignore, Reject
    if how == "ignore":
        self.update_state(state="FAILURE", meta={"custom": "kept"})
        raise Ignore()
    if how == "requeue" and self.request.attempt == 1:
        raise Reject("not yet", requeue=True)
    if how == "reject":
        raise Reject("bad input", requeue=False)
    return [how, self.request.attempt, self.request.retries]


class Errors:
    """An exception class nested in a class, as some libraries define theirs."""

    class Nested(Exception):
        pass


@app.task
def raise_nested(message):
    raise Errors.Nested(message)
