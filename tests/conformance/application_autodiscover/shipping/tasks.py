from litequeue import shared_task  # celery: from celery import shared_task


@shared_task()
def ship(item):
    return f"shipping {item}"
