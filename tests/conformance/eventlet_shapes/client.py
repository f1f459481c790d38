"""Bulk urlopen calls, a result-less task, and a crawl that fans out from inside tasks."""
import os

from observe import wait_for

from app import app  # noqa: F401
from tasks import urlopen, urlopen_ignored
from webcrawler import crawl

PAGES = {"index.html": "link:a.html link:b.html", "a.html": "link:b.html link:c.html",
         "b.html": "link:index.html", "c.html": "the end"}


def observe(seen):
    site = os.path.abspath("site")
    os.makedirs(site, exist_ok=True)
    for name, text in PAGES.items():
        with open(os.path.join(site, name), "w") as f:
            f.write(text)
    urls = [f"file://{site}/{name}" for name in PAGES] + [f"file://{site}/missing.html"]
    results = [urlopen.delay(u) for u in urls]
    seen("bulk urlopen", lambda: [r.get(timeout=10) for r in results])
    r = urlopen_ignored.delay(urls[0])
    seen("ignored result", r.get, timeout=2)
    crawl.delay(os.path.join(site, "index.html"))
    crawled = os.path.join(site, "crawled.txt")
    seen("crawled pages", lambda: wait_for(
        lambda: os.path.exists(crawled) and len(open(crawled).read().split()) >= 4)
        and sorted(open(crawled).read().split()))
