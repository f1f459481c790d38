"""Each option as calling.rst shows it, and what the task and the caller see."""
import warnings

from tasks import add, custom_header, names_seen, what_i_got

warnings.simplefilter("ignore")


def observe(seen):
    seen("serializer='json'", lambda: add.apply_async((10, 10), serializer="json").get(timeout=10))
    seen("compression='zlib'",
         lambda: add.apply_async((2, 2), compression="zlib").get(timeout=10))
    seen("retry_policy", lambda: add.apply_async((2, 2), retry=True, retry_policy={
        "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2,
    }).get(timeout=10))
    seen("retry=False", lambda: add.apply_async((2, 2), retry=False).get(timeout=10))
    seen("queue='priority.high'",
         lambda: what_i_got.apply_async((1,), queue="priority.high").get(timeout=10))
    seen("priority", lambda: add.apply_async((1, 1), priority=5).get(timeout=10))
    r = add.apply_async((1, 2), ignore_result=True)
    seen("ignore_result=True get", r.get, timeout=2)
    seen("ignore_result=False get",
         lambda: add.apply_async((1, 2), ignore_result=False).get(timeout=10))
    seen("headers",
         lambda: custom_header.apply_async(headers={"periodic_task_name": "task_name"}).get(
             timeout=10))
    seen("shadow", lambda: names_seen.apply_async(shadow="other.name").get(timeout=10))
    seen("an option nobody knows",
         lambda: add.apply_async((1, 1), colour="blue").get(timeout=10))
