"""What app.conf answers after each way of configuring it."""
import os

import celeryconfig
from tasks import Config, add, app, conf_in_worker


def observe(seen):
    seen("main", lambda: app.main)
    seen("timezone from the module", lambda: app.conf.timezone)
    seen("result_expires from the module", lambda: app.conf.result_expires)
    seen("worker read the module too", lambda: conf_in_worker.delay().get(timeout=10))
    app.config_from_object(Config)
    seen("from a class", lambda: [app.conf.result_expires, app.conf.task_default_priority])
    app.config_from_object(celeryconfig)
    seen("from the module object", lambda: app.conf.result_expires)
    app.config_from_object({"result_expires": 42})
    seen("from a dict", lambda: app.conf.result_expires)
    app.conf.update(result_expires=43)
    seen("conf.update", lambda: app.conf.result_expires)
    app.conf.result_expires = 44
    seen("attribute set", lambda: app.conf["result_expires"])
    os.environ["MY_CONFIG_MODULE"] = "celeryconfig"
    seen("config_from_envvar", lambda: [app.config_from_envvar("MY_CONFIG_MODULE"),
                                        app.conf.result_expires][1])
    seen("unknown setting read", lambda: app.conf.no_such_setting)
    seen("still runs tasks", lambda: add.delay(1, 2).get(timeout=10))
