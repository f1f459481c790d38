"""What the caller sees of retries: the result, the exception once they are used up, the
RETRY state while one waits."""
import os

from observe import wait_for
from tasks import auto, backoff, give_up, give_up_plain, retry_info, send_twitter_status, waits


def observe(seen):
    seen("retried twice then done", lambda: send_twitter_status.delay(2).get(timeout=10))
    r = give_up.delay()
    seen("max_retries used up", r.get, timeout=10)
    seen("state after giving up", lambda: r.state)
    seen("retry() without exc, used up", lambda: give_up_plain.delay().get(timeout=10))
    path = os.path.abspath("auto.log")
    r = auto.delay(path)
    seen("autoretry_for", r.get, timeout=10)
    seen("autoretry runs", lambda: open(path).read())
    path = os.path.abspath("backoff.log")
    r = backoff.delay(path)
    seen("retry_backoff", r.get, timeout=10)
    seen("retry_backoff runs", lambda: open(path).read())
    marker = os.path.abspath("go")
    r = waits.delay(marker)
    seen("RETRY while waiting", lambda: wait_for(lambda: r.state == "RETRY"))
    seen("RETRY result", lambda: type(r.result).__name__)
    open(marker, "w").close()
    seen("after the wait", lambda: r.get(timeout=10)[0])
    seen("retry(max_retries=) in the call", lambda: retry_info.delay().get(timeout=10))
