import os

BROKER_URL = "amqp://guest:guest@localhost:5672//"
task_acks_late = True
CELERY_IMPORTS = ("tasks",)
