"""What the caller gets from a task that replaced itself."""
from tasks import add, fan_out, replaced, tsum, update_other


def observe(seen):
    seen("replaced by a signature", lambda: replaced.delay(1).get(timeout=10))
    seen("replaced by a group", lambda: fan_out.delay(3).get(timeout=10))
    seen("return self.replace", lambda: update_other.delay(4).get(timeout=10))
    seen("replaced in a chain", lambda: (replaced.s(1) | add.s(1))().get(timeout=10))
    seen("group replacement then a task", lambda: (fan_out.s(3) | tsum.s())().get(timeout=10))
