"""The app surface of a Celery program, ported by changing its app line: the app's
arguments (include, task_cls, broker and backend), autodiscover_tasks, the
on_after_configure signal that the periodic-task guide uses, and class-based tasks
registered with app.register_task. The worker runs in this process (here)."""

import sys
import textwrap

import pytest

import litequeue
from litequeue import ConfigurationError, LiteQueue, Task

from .helpers import Folder

PACKAGE = {
    "__init__.py": "",
    "celery.py": '''
        from litequeue import LiteQueue, Task

        class Base(Task):
            """The app's task class (Celery's task_cls): every task gets its hooks."""
            def on_success(self, retval, task_id, args, kwargs):
                SEEN.append(("on_success", self.name, retval))

        SEEN = []
        app = LiteQueue("../jobs.sqlite", include=["portpkg.extra"], task_cls=Base,
                        broker="redis://localhost:6379/0", backend="redis://")
        app.autodiscover_tasks(["portpkg", "not_a_package"])

        @app.on_after_configure.connect
        def setup_periodic_tasks(sender, **kwargs):
            # The guide's shape: the handler names a task defined below it.
            sender.add_periodic_task(30.0, ping.s("hello"), name="ping every 30")
            SEEN.append(("configured", sender is app))

        @app.task
        def ping(word):
            return word

        class Multiply(app.Task):
            name = "portpkg.multiply"

            def run(self, x, y=10):
                return x * y

        multiply = app.register_task(Multiply())
    ''',
    "tasks.py": '''
        from .celery import app

        @app.task
        def discovered(x):
            return ["discovered", x]
    ''',
    "extra.py": '''
        from .celery import app

        @app.task
        def included(x):
            return ["included", x]
    ''',
}


@pytest.fixture
def ported(tmp_path):
    folder = Folder(tmp_path / "port")
    (folder.dir / "portpkg").mkdir()
    for name, source in PACKAGE.items():
        (folder.dir / "portpkg" / name).write_text(textwrap.dedent(source))
    yield folder
    for name in [m for m in sys.modules if m == "portpkg" or m.startswith("portpkg.")]:
        del sys.modules[name]


def test_a_ported_apps_arguments_signals_and_class_based_tasks_work(ported, here):
    w = here(ported, ("portpkg.celery",))
    module = w.loaded[0]
    app = module.app
    # Loaded as a worker loads it: discovered and configured, once.
    assert module.SEEN == [("configured", True)] and "portpkg.tasks.discovered" in app.tasks
    multiply = module.multiply
    calls = [multiply.delay(4), app.send_task("portpkg.tasks.discovered", [1]),
             app.send_task("portpkg.extra.included", [2])]
    assert w.work() == 3
    assert [r.get(timeout=5) for r in calls] == [40, ["discovered", 1], ["included", 2]]
    assert app.periodic["ping every 30"]["task"] == "portpkg.celery.ping"
    assert ("on_success", "portpkg.multiply", 40) in module.SEEN
    assert isinstance(multiply, module.Base) and multiply(2, y=3) == 6
    assert sorted(n for n in app.tasks if n.startswith("portpkg.")) == [
        "portpkg.celery.ping", "portpkg.extra.included", "portpkg.multiply",
        "portpkg.tasks.discovered"]


def test_register_task_and_task_cls_refuse_what_is_not_a_task(tmp_path):
    app = LiteQueue(str(tmp_path / "jobs.sqlite"))
    with pytest.raises(ConfigurationError, match="own run"):
        app.register_task(Task)
    with pytest.raises(ConfigurationError, match="task_cls"):
        LiteQueue(str(tmp_path / "jobs.sqlite"), task_cls=dict)
    app.autodiscover_tasks(["no_such_package_here"], force=True)      # skipped quietly
    assert litequeue.LiteQueue.Task is Task and app.Task is Task


PYDANTIC_TASKS = '''
    from typing import Optional
    from pydantic import BaseModel
    from litequeue import LiteQueue

    app = LiteQueue("jobs.sqlite")

    class ArgModel(BaseModel):
        value: int

    class ReturnModel(BaseModel):
        value: str

    @app.task(pydantic=True)
    def describe(arg: ArgModel, maybe: Optional[ArgModel] = None) -> ReturnModel:
        assert isinstance(arg, ArgModel)
        return ReturnModel(value=f"example: {arg.value} {maybe and maybe.value}")

    @app.task(pydantic=True, bind=True)
    async def described(self, arg: ArgModel) -> ReturnModel:
        return ReturnModel(value=f"{self.name}: {arg.value}")
'''


def test_pydantic_arguments_are_validated_and_models_returned_as_dicts(tmp_path, here):
    """Celery's examples/pydantic: a dict (or a model) in, the model in the task, its dict
    out; a value the model refuses fails the task with pydantic's ValidationError."""
    folder = Folder(tmp_path / "pyd", {"tasks": PYDANTIC_TASKS})
    w = here(folder)
    tasks = w.loaded[0]
    calls = [tasks.describe.delay({"value": 1}), tasks.describe.delay(tasks.ArgModel(value=2),
                                                                       {"value": 3}),
             tasks.described.delay({"value": 4}), tasks.describe.delay({"value": "x"})]
    w.work_until(lambda: all(r.ready() for r in calls), 10)
    assert [r.get(timeout=5) for r in calls[:3]] == [
        {"value": "example: 1 None"}, {"value": "example: 2 3"},
        {"value": "tasks.described: 4"}]
    assert calls[3].state == "FAILURE" and calls[3].result.exc_type.endswith(".ValidationError")
    assert tasks.describe({"value": 5}) == {"value": "example: 5 None"}     # a plain call too


def test_task_annotations_set_task_attributes_by_name_or_for_all(tmp_path):
    """Celery's task_annotations, set before or after the tasks: the worker reads the
    rate limit from the registry row a registration writes."""
    app = LiteQueue(str(tmp_path / "jobs.sqlite"),
                    task_annotations={"tasks.add": {"rate_limit": "10/s"},
                                      "*": {"max_retries": 7, "time_limit": 30}})

    @app.task(name="tasks.add")
    def add(x, y):
        return x + y

    @app.task(name="tasks.mul")
    def mul(x, y):
        return x * y

    assert (add.rate_limit, add._registry_row(0)["interval"], add.max_retries,
            add.time_limit) == ("10/s", 0.1, 7, 30)
    assert (mul.rate_limit, mul.max_retries) == (None, 7)
    app.conf.task_annotations = [{"tasks.mul": {"rate_limit": "1/m"}}]   # Celery's list form
    app.finalize()
    assert mul._registry_row(0)["interval"] == 60.0
    with pytest.raises(ConfigurationError, match="not a task option"):
        app.conf.task_annotations = {"*": {"on_failure": print}}
        app.task(name="tasks.other")(lambda: None)
