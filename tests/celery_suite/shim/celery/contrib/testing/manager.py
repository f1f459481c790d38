"""celery.contrib.testing.manager: Celery's test Manager drives workers by remote control
(inspect, ping, query_task) and result-backend polling. litequeue has neither, so every
method is a placeholder; only `app` is kept, as the tests read manager.app."""
from ..._missing import MissingObject


class Manager(MissingObject):
    def __init__(self, app, **kwargs):
        super().__init__("Celery test Manager (worker remote control: inspect, ping)")
        object.__setattr__(self, "app", app)
