"""The session worker's app, as Celery's session worker runs the session app: a module the
litequeue worker imports with -A (before the suite's task modules), making the LiteQueue
of the session's database configured as the session app is (celery.contrib.pytest's
_make_app: config_from_object of the suite's celery_config, then the queue). The suite's
task modules hold only @shared_task tasks, which litequeue registers on every app of the
process; without an app on that database the worker would serve none of them."""
import json
import os

from litequeue import LiteQueue

app = LiteQueue(os.environ["LQ_SUITE_APP_DB"])
app.config_from_object(json.loads(os.environ.get("LQ_SUITE_APP_CONFIG", "{}")))
app.conf.task_default_queue = os.environ.get("LQ_SUITE_QUEUE", "celery")
