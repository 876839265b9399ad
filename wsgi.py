"""The standalone service for gunicorn: ``gunicorn -c gunicorn.conf.py wsgi:app``."""

from __future__ import annotations

import config
from sessionsvc.app import create_app
from sessionsvc.logs import configure_logging

configure_logging()
app = create_app(config.from_env())
