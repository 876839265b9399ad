"""The gunicorn settings every benchmark service runs with (and nothing
else: the project's own gunicorn.conf.py would start a development store).

Two sync workers unless ``BENCH_WORKERS`` / ``BENCH_THREADS`` say otherwise
(``python -m bench --workers 1 --threads 4``): with more than one thread a
worker is gunicorn's ``gthread``.
"""

import os

workers = int(os.environ.get("BENCH_WORKERS", "2"))
threads = int(os.environ.get("BENCH_THREADS", "1"))
worker_class = "gthread" if threads > 1 else "sync"
loglevel = "warning"
