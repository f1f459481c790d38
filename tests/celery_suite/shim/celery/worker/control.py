"""celery.worker.control: litequeue has no remote-control commands. The decorators let a
module that defines commands import; a command so defined refuses when called."""
from .._missing import missing_function

add_consumer = missing_function("add_consumer (remote control)")
cancel_consumer = missing_function("cancel_consumer (remote control)")


def control_command(*args, **kwargs):
    return lambda fn: missing_function(f"control_command {fn.__name__} (remote control)")


def inspect_command(*args, **kwargs):
    return lambda fn: missing_function(f"inspect_command {fn.__name__} (remote control)")
