import os
from litequeue import LiteQueue

app = LiteQueue(os.path.join(os.path.dirname(os.path.abspath(__file__)), "jobs.sqlite"))

@app.task(rate_limit="5/s")
def a(x):
    return x

@app.task(rate_limit="5/s")
def b(x):
    return x
