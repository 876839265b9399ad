"""The standalone service for gunicorn: ``gunicorn -c gunicorn.conf.py wsgi:app``."""

from __future__ import annotations

import config
from sessionsvc.app import configure_logging, create_app

configure_logging()
app = create_app(config.from_env())
