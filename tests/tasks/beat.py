"""Periodic tasks of the test project (copied into a project by the tests)."""
import datetime

from litequeue import crontab
from tasks import app, record

app.add_periodic_task(1.0, record.s("tick"), name="tick")
app.add_periodic_task(crontab(minute=0, hour=9, day_of_week="mon-fri", tz="Asia/Shanghai"),
                      record, args=("morning",), name="morning")


@app.periodic_task(datetime.timedelta(hours=6), name="six-hourly", kwargs={"n": "six"})
def six_hourly(n):
    return n
