"""signals.rst: the publish signals in the caller, the task signals and the worker signals
in the worker, each handler leaving what it was given in a file."""
import json
import os

from litequeue import LiteQueue  # celery: from celery import Celery
from litequeue.signals import (after_task_publish, before_task_publish, task_failure,  # celery: from celery.signals import (after_task_publish, before_task_publish, task_failure,
                               task_postrun, task_prerun, task_retry, task_success,
                               worker_process_init, worker_ready)
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)

HERE = os.path.dirname(os.path.abspath(__file__))
published = []


def note(signal_name, **fields):
    with open(os.path.join(HERE, f"signal-{signal_name}.jsonl"), "a") as f:
        f.write(json.dumps(fields, default=repr) + "\n")


@before_task_publish.connect
def before_publish(sender=None, headers=None, body=None, **kwargs):
    published.append(["before", sender, headers["id"], headers["task"],
                      sorted(k for k in kwargs if k != "signal")])


@after_task_publish.connect(sender="tasks.add")
def after_publish(sender=None, headers=None, body=None, **kwargs):
    published.append(["after", sender, headers["id"], type(body).__name__])


@task_prerun.connect
def prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **extra):
    note("prerun", name=sender.name, same_task=sender is task, task_id=task_id,
         args=list(args), kwargs=kwargs)


@task_postrun.connect
def postrun(sender=None, task_id=None, task=None, args=None, kwargs=None, retval=None,
            state=None, **extra):
    note("postrun", name=sender.name, task_id=task_id, retval=repr(retval), state=state)


@task_success.connect
def success(sender=None, result=None, **kwargs):
    note("success", name=sender.name, result=result)


@task_failure.connect
def failure(sender=None, task_id=None, exception=None, args=None, kwargs=None,
            traceback=None, einfo=None, **extra):
    note("failure", name=sender.name, task_id=task_id, exception=repr(exception),
         args=list(args), has_traceback=traceback is not None)


@task_retry.connect
def retry(sender=None, request=None, reason=None, einfo=None, **kwargs):
    note("retry", name=sender.name, task_id=request.id, reason=str(reason))


@worker_process_init.connect
def process_init(**kwargs):
    note("worker_process_init", pid=os.getpid())


@worker_ready.connect
def ready(sender=None, **kwargs):
    note("worker_ready", pid=os.getpid())


@app.task
def add(x, y):
    return x + y


@app.task
def fails():
    raise KeyError("boom")


@app.task(bind=True, max_retries=1)
def retries_once(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0.1, exc=OSError("again"))
    return "second"
