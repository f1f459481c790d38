import asyncio, os, time
from litequeue import LiteQueue

app = LiteQueue(os.path.join(os.path.dirname(os.path.abspath(__file__)), "jobs.sqlite"))

@app.task
async def nap(seconds):
    await asyncio.sleep(seconds)

@app.task
def tnap(seconds):
    time.sleep(seconds)

@app.task
def noop(i):
    return i

@app.task
def slow(path):
    open(path + ".started", "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(path + ".go") and time.monotonic() < deadline:
        time.sleep(0.01)
    return "slow done"

@app.task
def fail(i):
    raise ValueError(i)

@app.task
async def anap(seconds):
    await asyncio.sleep(seconds)
