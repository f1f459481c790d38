"""canvas.rst, "Chords": a header group and a body that gets every result."""
from litequeue import LiteQueue, chord, group  # celery: from celery import Celery, chord, group
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def add(x, y):
    return x + y


@app.task
def tsum(numbers):
    return sum(numbers)


@app.task
def listing(results, label):
    return [label, results]


@app.task
def div(x, y):
    return x / y


@app.task
def on_chord_error(request, exc, traceback):
    with open(f"chord-error-{request.id}.txt", "w") as f:
        f.write(f"{type(exc).__name__}")
