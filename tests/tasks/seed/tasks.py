import os
from litequeue import LiteQueue

app = LiteQueue("jobs.sqlite")
app.config_from_object("celeryconfig")

MARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "marks")


@app.task
def add(x, y):
    return x + y


@app.task
def note(tag):
    with open(os.path.join(MARKS, "note." + tag), "a") as f:
        f.write("ran\n")


app.add_periodic_task(1.0, note.s("tick"), name="tick")
