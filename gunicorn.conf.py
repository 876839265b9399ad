"""gunicorn settings for the standalone service: the ones the package ships.

``gunicorn -c gunicorn.conf.py wsgi:app`` (``make run``) is
``gunicorn -c python:sessionsvc.gunicorn_config wsgi:app``, which an
installed package runs as it is; :mod:`sessionsvc.gunicorn_config` says what
each setting does.
"""

from sessionsvc.gunicorn_config import *  # noqa: F403
