from litequeue import LiteQueue

app = LiteQueue("jobs.sqlite")


class Sneaky(dict):
    def items(self):
        raise RuntimeError("items() refuses")


@app.task
def sneaky():
    return Sneaky(a=1)
