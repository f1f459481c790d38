from litequeue import LiteQueue

app = LiteQueue("jobs.sqlite")


class Sneaky(int):
    """A result whose own methods raise while it is encoded."""

    def __int__(self):
        raise RuntimeError("int() refuses")


@app.task
def sneaky():
    return Sneaky(1)
