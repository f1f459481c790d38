"""The app the examples' shared tasks run under, configured from celeryconfig."""
from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("crawler")
app.config_from_object("celeryconfig")
