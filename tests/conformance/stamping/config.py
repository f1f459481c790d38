from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("myapp", broker=REDIS_URL, backend=REDIS_URL)
