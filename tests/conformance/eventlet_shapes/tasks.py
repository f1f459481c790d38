"""examples/eventlet/tasks.py and examples/gevent/tasks.py: urlopen, reading local files
instead of URLs."""
from litequeue import shared_task  # celery: from celery import shared_task


def fetch(url):
    with open(url.removeprefix("file://")) as f:
        return f.read()


@shared_task()
def urlopen(url):
    try:
        text = fetch(url)
    except OSError as exc:
        return f"error: {type(exc).__name__}"
    return len(text)


@shared_task(ignore_result=True)
def urlopen_ignored(url):
    try:
        fetch(url)
    except OSError:
        return url, 0
    return url, 1
