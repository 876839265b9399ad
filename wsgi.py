"""The standalone service for gunicorn: ``gunicorn -c gunicorn.conf.py wsgi:app``."""

from __future__ import annotations

import config
from sessionsvc import create_app

app = create_app(config.from_env())
