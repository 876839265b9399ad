"""sessionsvc: every device a user is signed in on, and revocation that bites
on the very next request.

The public API: :class:`SessionManager` (the Flask extension),
:func:`create_app` (the standalone service), the errors, and
:class:`DPoPKey` and :class:`DPoPAuth` (DPoP proofs for Python clients).

Each name is imported on first use: importing one module of the package
imports no other. ``sessionsvc.gunicorn_config`` depends on it, since it must
set up prometheus_client's multiprocess directory before anything imports
prometheus_client (which the app's modules do).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, as their modules define them
    from .app import create_app as create_app
    from .dpop_client import DPoPAuth as DPoPAuth
    from .dpop_client import DPoPKey as DPoPKey
    from .errors import SessionsvcError as SessionsvcError
    from .errors import StoreUnavailable as StoreUnavailable
    from .extension import SessionManager as SessionManager
    from .models import Device as Device
    from .models import Location as Location
    from .models import SecurityEvent as SecurityEvent
    from .models import Session as Session
    from .models import TokenPair as TokenPair
    from .settings import ConfigError as ConfigError
    from .settings import Settings as Settings
    from .signals import session_anomaly as session_anomaly
    from .signals import session_confirmed as session_confirmed
    from .signals import session_opened as session_opened
    from .signals import session_revoked as session_revoked
    from .state import current_manager as current_manager

#: Each public name, and the module it is defined in.
_PUBLIC = {
    "ConfigError": ".settings",
    "DPoPAuth": ".dpop_client",
    "DPoPKey": ".dpop_client",
    "Device": ".models",
    "Location": ".models",
    "SecurityEvent": ".models",
    "Session": ".models",
    "SessionManager": ".extension",
    "SessionsvcError": ".errors",
    "Settings": ".settings",
    "StoreUnavailable": ".errors",
    "TokenPair": ".models",
    "create_app": ".app",
    "current_manager": ".state",
    "session_anomaly": ".signals",
    "session_confirmed": ".signals",
    "session_opened": ".signals",
    "session_revoked": ".signals",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        # Also how ``from sessionsvc import tokens`` goes on to import a submodule.
        raise AttributeError(f"module 'sessionsvc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
