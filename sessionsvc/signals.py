"""Signals a host app can subscribe to; they only report, never change behaviour.

Each is sent with the Flask app as sender::

    from sessionsvc.signals import session_revoked

    @session_revoked.connect_via(app)
    def notify(app, user_id, session_id, reason, **extra):
        ...
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A session was opened. Sender: the app. Keyword arguments: ``user_id``
#: (str) and ``session`` (:class:`~sessionsvc.models.Session`).
session_opened = _signals.signal("session-opened")

#: A session was revoked, once per session. Sender: the app. Keyword
#: arguments: ``user_id``, ``session_id`` and ``reason`` (one of
#: :data:`~sessionsvc.models.REVOCATION_REASONS`, or a host app's own).
session_revoked = _signals.signal("session-revoked")

#: A session was used from another browser/OS family than it opened with, or
#: from another country. Sender: the app. Keyword arguments: ``user_id``,
#: ``session_id``, ``detail`` (what changed, e.g. ``{"browser": {"from":
#: "Chrome", "to": "Firefox"}}``) and ``revoked`` (``True`` when
#: ``SESSIONSVC_REVOKE_ON_ANOMALY`` signed the session out; a
#: ``session_revoked`` with reason ``anomaly`` follows).
session_anomaly = _signals.signal("session-anomaly")

#: The user confirmed that a flagged session was theirs ("Was this you?"),
#: once per confirmation. Sender: the app. Keyword arguments: ``user_id`` and
#: ``session_id``. A denied one is a ``session_revoked`` with reason ``denied``.
session_confirmed = _signals.signal("session-confirmed")
