"""examples/resultgraph/tasks.py's shapes: tasks that start groups and chords from inside
and return their results, and a caller that joins the whole graph."""
from litequeue import LiteQueue, chord, group  # celery: from celery import Celery, chord, group
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task()
def make_request(id, url):
    return url


@app.task()
def B_callback(urls, id):
    return urls


@app.task()
def B(id):
    return chord(make_request.s(id, f"{id} {i!r}") for i in range(3))(B_callback.s(id)).id


@app.task()
def A():
    result = group(B.s(c) for c in "ABC").apply_async()
    result.save()
    return result.id


@app.task()
def A_returns_result():
    return group(B.s(c) for c in "AB").apply_async()
