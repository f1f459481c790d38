"""Coroutine, thread-pool, rate-limited and unique tasks for litequeue's tests."""
import asyncio
import json
import os
import threading
import time

from litequeue import LiteQueue, SoftTimeLimitExceeded

app = LiteQueue("jobs.sqlite", **json.loads(os.environ.get("LQ_TEST_SETTINGS", "{}")))
MARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "marks")


def log(name, *fields):
    """One JSON line in marks/NAME: the fields, then the pid and the time (one O_APPEND
    write: atomic, and it survives a SIGKILL of the writer)."""
    fd = os.open(os.path.join(MARKS, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps([*fields, os.getpid(), time.time()]) + "\n").encode())
    finally:
        os.close(fd)


def released(name):
    if os.path.exists(os.path.join(MARKS, "ABORT")):
        raise RuntimeError(f"{name} was never released")
    return os.path.exists(os.path.join(MARKS, name + ".go"))


async def until(name):
    while not released(name):
        await asyncio.sleep(0.01)


@app.task(bind=True, max_retries=100)
async def ablock(self, name):
    """Log its start, report progress, and wait (without blocking the loop) for
    marks/NAME.go."""
    log(name, "start", self.request.id, self.request.attempt)
    self.update_state(state="PROGRESS", meta={"waiting for": name})
    await until(name)
    log(name, "done", self.request.id, self.request.attempt)
    return name


@app.task
async def aadd(x, y):
    await asyncio.sleep(0)
    return x + y


@app.task
async def asum(values):
    await asyncio.sleep(0)
    return sum(values)


@app.task
async def afail(message):
    await asyncio.sleep(0)
    raise ValueError(message)


@app.task(bind=True, max_retries=3)
async def aretry(self, times):
    await asyncio.sleep(0)
    if self.request.retries < times:
        raise self.retry(countdown=0.05)
    return self.request.retries


@app.task(soft_time_limit=0.2)
async def asoft(name):
    try:
        await until(name)
    except SoftTimeLimitExceeded:
        log(name, "cleanup")
        return "cleaned up"
    return "released"


@app.task(time_limit=0.2)
async def ahard(name):
    await until(name)


@app.task(time_limit=0.2)
async def ablocks_loop(name):
    log(name, "start")
    time.sleep(60)              # sync code in a coroutine: its loop cannot cancel it


@app.task
async def ablocks_loop_until(name):
    """Sync code in a coroutine, with no time limit: it blocks its loop until released."""
    log(name, "start")
    while not released(name):
        time.sleep(0.01)


@app.task(bind=True, max_retries=100)
def tblock(self, name):
    """Sync: log its start, then wait for marks/NAME.go (blocking its thread)."""
    log(name, "start", self.request.id, threading.get_ident())
    while not released(name):
        time.sleep(0.01)
    log(name, "done", self.request.id, threading.get_ident())
    return name


@app.task(time_limit=0.3)
def thard(name):
    log(name, "start")
    time.sleep(60)


@app.task(bind=True)
def pause_then(self, name, seconds):
    log(name, "start", self.request.id)
    time.sleep(seconds)
    log(name, "done", self.request.id)
    return seconds


@app.task(bind=True)
async def apause_then(self, name, seconds):
    log(name, "start", self.request.id)
    await asyncio.sleep(seconds)
    log(name, "done", self.request.id)
    return seconds


@app.task(rate_limit="20/s", bind=True, max_retries=100)
def limited(self, tag, n):
    log(tag, "start", self.request.id, n)
    return n


@app.task(rate_limit="20/s", bind=True, max_retries=100)
async def alimited(self, tag, n):
    log(tag, "start", self.request.id, n)
    await asyncio.sleep(0.005)
    return n


@app.task(bind=True, max_retries=100)
async def achaos(self, n, ms):
    log("achaos", "start", self.request.id, n)
    await asyncio.sleep(ms / 1000)
    log("achaos", "done", self.request.id, n)
    return n


@app.task(unique=True)
def once(x):
    return x


@app.task
def plain(x):
    return x
