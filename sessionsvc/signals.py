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
#: arguments: ``user_id``, ``session_id`` and ``reason`` (``user``, ``logout``,
#: ``others``, ``admin``, ``evicted``, ``refresh_reuse``).
session_revoked = _signals.signal("session-revoked")
