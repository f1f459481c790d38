"""canvas.rst's larger shapes: groups in chains, chains in groups, chords after steps."""
from litequeue import LiteQueue, chain, chord, group  # celery: from celery import Celery, chain, chord, group
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def tsum(numbers):
    return sum(numbers)


@app.task
def create_user(name):
    return {"name": name}


@app.task
def import_contacts(user):
    return f"contacts of {user['name']}"


@app.task
def send_welcome_email(user):
    return f"mail to {user['name']}"
