from litequeue import LiteQueue

app = LiteQueue("jobs.sqlite")


@app.task(rate_limit="20/s")
def limited(n):
    return n


@app.task
def plain(n):
    return n
