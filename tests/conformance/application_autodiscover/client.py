"""Tasks found by autodiscovery run on the worker and answer by name."""
from proj import app


def observe(seen):
    from billing.tasks import invoice, refund
    from shipping.tasks import ship
    seen("invoice", lambda: invoice.delay(10).get(timeout=10))
    seen("refund", lambda: refund.delay(5).get(timeout=10))
    seen("ship", lambda: ship.delay("box").get(timeout=10))
    seen("names", lambda: [invoice.name, refund.name, ship.name])
    seen("send_task by name",
         lambda: app.send_task("shipping.tasks.ship", args=("crate",)).get(timeout=10))
    seen("shared task uses the app", lambda: invoice.app is app)
