"""examples/stamping/visitors.py's visitors, with fixed stamps."""
from litequeue import StampingVisitor  # celery: from celery.canvas import StampingVisitor


class MyStampingVisitor(StampingVisitor):
    def on_signature(self, sig, **headers):
        return {"mystamp": "I am a stamp!"}


class MonitoringIdStampingVisitor(StampingVisitor):
    def on_signature(self, sig, **headers):
        return {"mtask_id": "monitoring-1"}
