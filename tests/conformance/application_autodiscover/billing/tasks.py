from litequeue import shared_task  # celery: from celery import shared_task


@shared_task
def invoice(amount):
    return f"invoice for {amount}"


@shared_task(bind=True, name="billing.refund")
def refund(self, amount):
    return [self.name, -amount]
