from .celery import app


@app.task(bind=True)
def add(self, x, y):
    return [x + y, self.request.delivery_info["routing_key"]]


@app.task(bind=True, queue="lopri")
def mul(self, x, y):
    return [x * y, self.request.delivery_info["routing_key"]]


@app.task(bind=True)
def plain(self):
    return self.request.delivery_info["routing_key"]
