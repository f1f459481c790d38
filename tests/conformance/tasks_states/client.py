"""The built-in state names, a task reporting PROGRESS, another task setting a state."""
import os

from observe import wait_for
from tasks import never_done, ok, report_for, states, upload_files


def observe(seen):
    seen("names", lambda: [states.PENDING, states.STARTED, states.SUCCESS, states.FAILURE,
                           states.RETRY, states.REVOKED])
    seen("READY_STATES", lambda: sorted(states.READY_STATES))
    seen("UNREADY_STATES", lambda: sorted(states.UNREADY_STATES))
    seen("EXCEPTION_STATES", lambda: sorted(states.EXCEPTION_STATES))
    seen("PROPAGATE_STATES", lambda: sorted(states.PROPAGATE_STATES))
    seen("in a task", lambda: ok.delay().get(timeout=10))
    marker = os.path.abspath("go")
    r = upload_files.delay(["a", "b", "c"], marker)
    seen("PROGRESS seen", lambda: wait_for(lambda: r.state == "PROGRESS"))
    seen("info while running", lambda: wait_for(lambda: r.info == {"current": 2, "total": 3})
         and r.info)
    seen("ready while running", r.ready)
    open(marker, "w").close()
    seen("result", r.get, timeout=10)
    seen("state then", lambda: r.state)
    seen("info then", lambda: r.info)
    marker2 = os.path.abspath("go2")
    target = never_done.delay(marker2)
    seen("state of another task", lambda: report_for.delay(target.id).get(timeout=10))
    seen("the other task's state", lambda: wait_for(lambda: target.state == "EXTERNAL")
         and [target.state, target.info])
    open(marker2, "w").close()
    seen("the other task's result", target.get, timeout=10)
