"""examples/eventlet/celeryconfig.py and examples/gevent's, without the network."""
import os
import sys

sys.path.insert(0, os.getcwd())

broker_url = "sqlite://"  # celery: broker_url = REDIS_URL
result_backend = "sqlite://"  # celery: result_backend = REDIS_URL
worker_disable_rate_limits = True
result_expires = 30 * 60
imports = ("tasks", "webcrawler")
