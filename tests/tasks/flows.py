"""Workflows for the workflow tests (copied into a project as flows.py). Every task and
step function appends a line to marks/NAME, so the tests count how often each ran."""
import json
import os
import time

from litequeue import LiteQueue

app = LiteQueue("jobs.sqlite", **json.loads(os.environ.get("LQ_TEST_SETTINGS", "{}")))

MARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "marks")


def mark(name, text=""):
    with open(os.path.join(MARKS, name), "a") as f:
        f.write(f"{os.getpid()} {text}\n")


def released(name):
    """True once the test has created marks/NAME.go."""
    return os.path.exists(os.path.join(MARKS, name + ".go"))


@app.task
def extract(day):
    mark("extract", day)
    return [1, 2, 3]


@app.task
def load(total):
    mark("load", total)
    return total * 10


@app.task
def square(x):
    return x * x


@app.task
def fails(message):
    raise ValueError(message)


@app.task
def hold(name):
    """Runs until the test creates marks/NAME.go."""
    mark("hold." + name)
    deadline = time.monotonic() + 60
    while not released(name) and time.monotonic() < deadline:
        time.sleep(0.01)
    return name


@app.step
def summarize(rows):
    mark("summarize", rows)
    return sum(rows)


@app.step
def stamp():
    """Returns the time it ran: a replay must give back the recorded time."""
    mark("stamp")
    return time.time()


@app.step(autoretry_for=(OSError,), max_retries=2, default_retry_delay=0.01)
def flaky(name):
    """Fails the first two times it is called for name, then succeeds."""
    mark("flaky." + name)
    with open(os.path.join(MARKS, "flaky." + name)) as f:
        if len(f.readlines()) < 3:
            raise OSError("not yet")
    return "steady"


@app.workflow
def nightly(day):
    """The README's example: a task step, a durable sleep, a step function, an event."""
    rows = extract.delay(day).get()
    app.sleep(0.3)
    total = summarize(rows)
    app.set_event("progress", "loaded")
    return load.delay(total).get()


@app.workflow
def fan_out(n):
    results = [square.delay(i) for i in range(n)]
    return [r.get() for r in results]


@app.workflow
def catches():
    try:
        fails.delay("no").get()
    except ValueError as exc:
        return f"caught {exc}"


@app.workflow
def replays(name):
    """A step function's time, then a wait on a held task: the replay after the wait must
    return the recorded time, not run the step again."""
    first = stamp()
    hold.delay(name).get()
    return first


@app.workflow
def receiver(topic, timeout):
    got = app.recv(topic, timeout=timeout)
    app.set_event("got", got)
    second = app.recv(topic, timeout=timeout)
    return [got, second]


@app.workflow
def sender(target, topic, message):
    app.send(target, message, topic=topic)
    return "sent"


@app.workflow
def sleeper(seconds):
    app.sleep(seconds)
    return time.time()


@app.workflow
def retrying(name):
    return flaky(name)


@app.workflow
def parent_flow(n):
    return fan_out.delay(n).get()


@app.workflow
def changing():
    """Calls a different step once marks/changed exists: its code 'changed'."""
    if os.path.exists(os.path.join(MARKS, "changed")):
        summarize([1])
    else:
        square.delay(2).get()
    hold.delay("changing").get()
    return "done"


@app.task
def double(x):
    return 2 * x


@app.step
def tripled(i):
    """Its runs are counted per i, each with its pid (the chaos test matches them with
    the processes it killed)."""
    mark(f"tripled.{i}")
    return 3 * i


@app.workflow
def chaos_flow(i):
    """A task step, a step function, a durable sleep and a message: 6 * i."""
    a = double.delay(i).get()
    b = tripled(i)
    app.sleep(0.05)
    c = app.recv("go", timeout=60)
    return a + b + c


@app.workflow
def fuzz_flow(n, gate):
    """For the hostile-row fuzzer: a step, an event, a task step it waits on (hold), then
    a message; its rows of steps, events and messages are the fuzzer's victims."""
    x = summarize([n])
    app.set_event("e", x)
    hold.delay(gate).get()
    return [x, app.recv("t", timeout=60)]


@app.task
def beside(x):
    mark(f"beside.{x}")
    return x


@app.step
def noted(value):
    """Records a value of the workflow's first run: a replay returns that one."""
    return value


@app.step
def pause(seconds):
    time.sleep(seconds)


@app.workflow
def slow_between(x):
    """A step function, a task step, then slow code that is no step (it waits up to 10 s
    for the task step to run), then the step's result: the seconds the first run's slow
    code lasted."""
    pause(0.05)                 # a first step: the run is past its first 10 ms
    r = beside.delay(x)
    began = time.time()
    while not os.path.exists(os.path.join(MARKS, f"beside.{x}")) and time.time() < began + 10:
        time.sleep(0.005)
    return [noted(time.time() - began), r.get()]


@app.task(bind=True)
def ignores(self, x):
    """Ends IGNORED; with x, after reporting it as its state."""
    from litequeue import Ignore
    if x is not None:
        self.update_state(state="SUCCESS", meta=x)
    raise Ignore()


@app.workflow
def ignoring(x):
    """Task steps that raise Ignore: the workflow goes on past them."""
    return [ignores.delay(None).get(), ignores.delay(x).get()]


@app.task(queue="far")
def far(x):
    return time.time()


@app.workflow
def across(x):
    """A task step in a queue that another worker serves: [when it was queued, when it
    ran]."""
    return [noted(time.time()), far.delay(x).get()]
