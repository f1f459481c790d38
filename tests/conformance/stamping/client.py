"""Stamp a signature, a chain and a group, and read the stamps in the tasks."""
from visitors import MonitoringIdStampingVisitor, MyStampingVisitor

from tasks import identity_task


def observe(seen):
    sig = identity_task.si("foo")
    sig.stamp(MyStampingVisitor())
    seen("stamped signature", lambda: sig.delay().get(timeout=10))
    seen("options after stamp", lambda: sig.options.get("mystamp"))
    from tasks import identity_task as t
    c = t.si("a") | t.si("b")
    c.stamp(MonitoringIdStampingVisitor())
    seen("stamped chain", lambda: c.delay().get(timeout=10))
    unstamped = identity_task.delay("plain")
    seen("unstamped", unstamped.get, timeout=10)
