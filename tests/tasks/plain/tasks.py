from litequeue import LiteQueue

app = LiteQueue("jobs.sqlite")


@app.task
def add(x, y):
    return x + y
