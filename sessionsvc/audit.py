"""Security events leave the process: a JSON log line and a signal each.

The store records every event in the user's history (inside the same atomic
step as the change); what it recorded comes here, to be written as one JSON
line on the ``sessionsvc.events`` logger (ids, reason and what changed, never
a token or a password) and sent as a signal (:mod:`sessionsvc.signals`).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, has_request_context, request

from . import devices
from .logs import json_line
from .models import SecurityEvent, Session
from .signals import session_anomaly, session_confirmed, session_opened, session_revoked

#: One JSON line per security event (logger ``sessionsvc.events``).
events_log = logging.getLogger("sessionsvc.events")


def _sender() -> Flask:
    """The app itself (not the proxy): what signals are sent with."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    return app


def _log(
    kind: str,
    user_id: str,
    session_id: str,
    reason: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    record: dict[str, Any] = {"event": kind, "user_id": user_id, "session_id": session_id}
    if reason:
        record["reason"] = reason
    if detail:
        record["detail"] = detail
    if has_request_context():
        record["ip"] = devices.client_ip(request)
    events_log.info(json_line(record))


def opened(user_id: str, session: Session) -> None:
    """Report a new session (``session.created``, :data:`session_opened`)."""
    detail = {"risk": list(session.risk)} if session.risk else None
    _log("session.created", user_id, session.id, None, detail)
    session_opened.send(_sender(), user_id=user_id, session=session)


def revoked(user_id: str, session_ids: list[str], reason: str, current: str | None) -> None:
    """Report revoked sessions; ``current`` (the caller's own) as ``logout``."""
    app = _sender()
    for session_id in session_ids:
        why = "logout" if session_id == current else reason
        _log("session.revoked", user_id, session_id, why)
        session_revoked.send(app, user_id=user_id, session_id=session_id, reason=why)


def password_changed(user_id: str, session_id: str | None, revoked: int) -> None:
    """Report a password change (``password.changed``): a log line."""
    _log("password.changed", user_id, session_id or "", None, {"revoked": revoked})


def recorded(user_id: str, events: list[SecurityEvent]) -> None:
    """Report the events the store recorded on activity, a listing or a confirmation."""
    app = _sender()
    reasons = {e.session_id: e.detail.get("reason") for e in events if e.type == "session.revoked"}
    for event in events:
        detail = {k: v for k, v in event.detail.items() if k != "reason"}
        reason = event.detail.get("reason")
        _log(event.type, user_id, event.session_id, reason, detail)
        if event.type == "session.revoked":
            session_revoked.send(
                app, user_id=user_id, session_id=event.session_id, reason=str(reason)
            )
        elif event.type == "session.confirmed":
            session_confirmed.send(app, user_id=user_id, session_id=event.session_id)
        elif event.type == "session.anomaly":
            session_anomaly.send(
                app,
                user_id=user_id,
                session_id=event.session_id,
                detail=detail,
                revoked=reasons.get(event.session_id) == "anomaly",
            )
