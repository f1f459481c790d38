"""examples/eventlet/webcrawler.py's shape: a task that fans out a group of itself for the
links it finds, ignoring results; "seen" is passed along as an argument."""
import os
import re

from litequeue import group, shared_task  # celery: from celery import group, shared_task

link = re.compile(r"link:(\S+)")


@shared_task(ignore_result=True)
def crawl(url, seen=None):
    seen = list(seen or [url])
    with open(url) as f:
        text = f.read()
    with open(os.path.join(os.path.dirname(url), "crawled.txt"), "a") as f:
        f.write(os.path.basename(url) + "\n")
    wanted = []
    for match in link.finditer(text):
        found = os.path.join(os.path.dirname(url), match.group(1))
        if found not in seen:
            wanted.append(found)
            seen.append(found)
    group(crawl.s(u, seen) for u in wanted).delay()
