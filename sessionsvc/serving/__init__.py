"""What gunicorn runs around the standalone app (``gunicorn.conf.py`` names it).

- :class:`Worker`: gunicorn's threaded worker, changed so that a slow or
  silent client holds no thread. Its poller (the loop that accepts
  connections) reads each request head itself, without blocking, a
  connection's bytes buffered until the head is whole, and then the body
  the head announces (:func:`body_of`), and only then hands the connection
  to a thread, which parses the request from that buffer; a kept-alive
  connection's next request comes back the same way. A head has
  :data:`HEAD_TIMEOUT` seconds from its first byte (then 408), a body
  :data:`BODY_TIMEOUT` seconds from the head's end, a response
  :data:`RESPONSE_TIMEOUT` seconds to be taken by the client (a thread
  writes it; at most half the threads wait at once on clients taking their
  responses slowly, and past that such a connection is closed at once).
  A client address holds at most :attr:`Worker.max_connections_per_client`
  open connections in a worker; past that its new ones are closed at once,
  unanswered; and a worker holding as many connections as gunicorn (or
  ``ulimit -n``) lets it closes one waiting in the poller
  (:meth:`Worker.longest_waiting`) for each new one, where gthread would
  stop accepting (or end, out of files). Connections are closed gracefully
  in the poller too (gthread's own close waited for the client in its loop,
  up to 2 s). What gunicorn refuses before the app runs (a request line or
  headers too long, a malformed request) is answered with the same RFC 9457
  problem documents as the app's own errors, not gunicorn's HTML page.
- :class:`Logger`: gunicorn's logger, writing one JSON object per line: the
  access log (method, route, path, status, duration, bytes, client, request
  id) and gunicorn's own messages alike, each a plain-ASCII
  :func:`~sessionsvc.logs.json_line`, so nothing a client sends can start
  a line of its own or carry a terminal escape.

gunicorn is the ``server`` extra: only a gunicorn process imports this.
"""

from __future__ import annotations

from .logger import Logger
from .worker import Worker

__all__ = ["Logger", "Worker"]
