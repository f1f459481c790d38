"""application.rst's configuration module."""
enable_utc = True
timezone = "Europe/London"
result_expires = 1800
