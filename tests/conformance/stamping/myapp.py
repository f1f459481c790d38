"""examples/stamping/myapp.py: the worker imports the tasks."""
import tasks  # noqa
from config import app  # noqa
