"""The gunicorn settings both benchmark services run with (and nothing else:
the project's own gunicorn.conf.py would start a development store)."""

workers = 2
worker_class = "sync"
loglevel = "warning"
