"""The state a caller reads after Ignore and Reject."""
from observe import wait_for
from tasks import Reject, custom_failure, custom_state


def observe(seen):
    r = custom_failure.delay()
    seen("Ignore after FAILURE: get", r.get, timeout=10)
    seen("Ignore after FAILURE: state", lambda: r.state)
    r = custom_state.delay()
    seen("Ignore after a custom state",
         lambda: wait_for(lambda: r.state == "ABANDONED") and [r.state, r.info])
    seen("ready", r.ready)
    seen("Reject's fields", lambda: [Reject("why", requeue=True).requeue,
                                     str(Reject("why", requeue=False).reason)])
