from litequeue import LiteQueue

app = LiteQueue("jobs.sqlite")


@app.task
def triple(x):
    return 3 * x
