"""first-steps-with-celery.rst's configuration module (its routing and settings)."""
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "Europe/Oslo"
enable_utc = True

task_routes = {
    "tasks.add": "low-priority",
}
