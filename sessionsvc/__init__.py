"""sessionsvc: every device a user is signed in on, and revocation that bites
on the very next request.

The public API: :class:`SessionManager` (the Flask extension),
:func:`create_app` (the standalone service), and the errors.
"""

from __future__ import annotations

from .app import create_app
from .errors import SessionsvcError, StoreUnavailable
from .extension import SessionManager
from .models import Device, Location, SecurityEvent, Session, TokenPair
from .settings import ConfigError, Settings
from .signals import session_anomaly, session_opened, session_revoked
from .state import current_manager

__all__ = [
    "ConfigError",
    "Device",
    "Location",
    "SecurityEvent",
    "Session",
    "SessionManager",
    "SessionsvcError",
    "Settings",
    "StoreUnavailable",
    "TokenPair",
    "create_app",
    "current_manager",
    "session_anomaly",
    "session_opened",
    "session_revoked",
]
