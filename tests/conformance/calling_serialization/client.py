"""Values sent to a task and returned by it: what type the task sees, what the caller
gets back."""
import datetime
import decimal
import uuid

from tasks import describe, echo

VALUES = {
    "int": 7, "float": 2.5, "str": "text", "none": None, "bool": True,
    "list": [1, "a"], "tuple": (1, 2), "nested": {"a": [1, {"b": (2, 3)}]},
    "dict with int keys": {1: "one"},
    "aware datetime": datetime.datetime(2026, 3, 1, 12, 30, tzinfo=datetime.timezone.utc),
    "naive datetime": datetime.datetime(2026, 3, 1, 12, 30),
    "date": datetime.date(2026, 3, 1),
    "decimal": decimal.Decimal("1.10"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "bytes": b"\x00\xff",
    "set": {1},
    "big int": 2 ** 70,
}


def observe(seen):
    for name, value in VALUES.items():
        seen(f"task sees {name}", lambda: describe.delay(value).get(timeout=10))
        seen(f"round trip {name}", lambda: repr(echo.delay(value).get(timeout=10)))
