"""What a conformance client records: each observation is a value made plain for JSON, or
what it raised (the exception's type name and message). Copied beside every program."""

import datetime
import re
import time

# A task id in a value or a message: ids differ from run to run, so they read <id>.
TASK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def plain(value):
    """value as JSON data: tuples become lists, an exception its [type name, message], a
    task id in text <id>, and anything else without a JSON form its type name and repr."""
    if isinstance(value, str):
        return TASK_ID.sub("<id>", value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, BaseException):
        return {"exception": [type(value).__name__, plain(str(value))]}
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, datetime.datetime):
        return {"datetime": value.isoformat()}
    return {type(value).__name__: TASK_ID.sub("<id>", repr(value))}


class Observations(dict):
    """seen("name", fn, *args): record fn(*args), or what it raised."""

    def __call__(self, name, fn, *args, **kwargs):
        if name in self:
            raise AssertionError(f"observation {name!r} recorded twice")
        try:
            self[name] = plain(fn(*args, **kwargs))
        except Exception as exc:
            self[name] = {"raised": [type(exc).__name__, plain(str(exc))]}
        return self[name]


def wait_for(predicate, timeout=5.0):
    """predicate()'s first truthy value within timeout seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)
