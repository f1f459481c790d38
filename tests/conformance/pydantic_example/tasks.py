"""examples/pydantic/tasks.py: pydantic=True converts model arguments and results."""
from typing import Optional

from pydantic import BaseModel

from litequeue import LiteQueue  # celery: from celery import Celery
app = LiteQueue("jobs.sqlite")  # celery: app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)


class ArgModel(BaseModel):
    value: int


class ReturnModel(BaseModel):
    value: str


@app.task(pydantic=True)
def x(arg: ArgModel) -> ReturnModel:
    assert isinstance(arg, ArgModel)
    return ReturnModel(value=f"example: {arg.value}")


@app.task(pydantic=True)
def optional(arg: Optional[ArgModel] = None, n: int = 0) -> dict:
    return {"arg": None if arg is None else arg.value, "n": n}
