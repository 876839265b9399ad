"""The admin API's reading of the audit trail (``GET /api/v1/admin/audit``):
its query values, read strictly into a filter, and the app's reader.

SQLAlchemy is imported only when a request reads the trail: an install
without the ``audit`` extra imports this module, and the route answers 404
``not_found`` while ``SESSIONSVC_AUDIT_URL`` is unset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from flask import Flask, Request, current_app

from . import payloads
from .errors import InvalidRequest, NotFound
from .models import AUDIT_LIMIT_DEFAULT, AUDIT_LIMIT_MAX, EVENT_TYPES, parse_ip
from .state import current_state

if TYPE_CHECKING:
    from .sql.query import AuditFilter, AuditReader

#: The longest ``user_id`` or ``session_id`` filter (characters).
MAX_FILTER = 1024
#: The longest ``since`` or ``until`` value (an ISO 8601 time is about 32).
MAX_TIME = 64

#: Where an app keeps its reader, created at its first page.
_READER = "sessionsvc.audit_reader"


def require_on() -> None:
    """Answer 404 ``not_found`` while the app has no audit trail, as for a
    path that does not exist (to an admin: the route asks for a token first,
    as its OpenAPI operation says, and an admin after it)."""
    if current_state().settings.audit_url is None:
        raise NotFound("The audit trail is off (SESSIONSVC_AUDIT_URL is not set).")


def reader() -> AuditReader:
    """The current app's reader, made at its first use in this process (its
    engine at its first page: after a server forks its workers)."""
    from .sql.query import AuditReader

    made: AuditReader | None = current_app.extensions.get(_READER)
    if made is None:
        url = current_state().settings.audit_url
        assert url is not None, "require_on lets no request through without a URL"
        # Two first requests at once may each make one; one is kept, and an
        # unused reader holds no connection.
        made = current_app.extensions.setdefault(_READER, AuditReader(url))
    return made


def close_reader(app: Flask) -> None:
    """Close the connections of ``app``'s reader, if it made one (a next page
    opens new ones): at a shutdown, or a test's end."""
    made: AuditReader | None = app.extensions.get(_READER)
    if made is not None:
        made.close()


def _text(request: Request, name: str, max_length: int) -> str | None:
    if name not in request.args:
        return None
    value = payloads.query_text(request, name, max_length=max_length)
    if not value:
        raise InvalidRequest(f"{name!r} is empty: leave it out to match every value.")
    if "\x00" in value:
        raise InvalidRequest(f"{name!r} holds a NUL character.")
    return value


def parse_time(name: str, value: str) -> datetime:
    """An ISO 8601 time with a zone, in UTC.

    :raises InvalidRequest: no zone, or not such a time.
    """
    try:
        at = datetime.fromisoformat(value)
        if at.tzinfo is None:
            raise InvalidRequest(
                f"{name!r} has no time zone: end it with Z or an offset such as +01:00."
            )
        return at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            f"{name!r} is not an ISO 8601 time such as 2026-12-05T06:00:00Z."
        ) from None


def audit_filter(
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    type: str | None = None,
    ip: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> AuditFilter:
    """The filter of values as a caller gives them (the API's query, the
    ``audit export`` options): a type that exists, an address normalised
    as sessions record it, times with a zone, ``since`` not after ``until``.

    :raises InvalidRequest: a value that breaks one of those.
    """
    from .sql.query import AuditFilter

    if type is not None and type not in EVENT_TYPES:
        raise InvalidRequest(f"'type' is not one of {', '.join(EVENT_TYPES)}.")
    if ip is not None:
        try:
            # As sessions record it: an IPv4-mapped address is its IPv4 one.
            ip = str(parse_ip(ip))
        except ValueError:
            raise InvalidRequest("'ip' is not an IPv4 or IPv6 address.") from None
    first = None if since is None else parse_time("since", since)
    last = None if until is None else parse_time("until", until)
    if first is not None and last is not None and first > last:
        raise InvalidRequest("'since' is after 'until'.")
    return AuditFilter(
        user_id=user_id, session_id=session_id, type=type, ip=ip, since=first, until=last
    )


def query(request: Request) -> tuple[AuditFilter, int, str | None]:
    """The filter, page size and cursor of a request for the trail.

    :raises InvalidRequest: a value that does not parse, is out of range,
        repeated, too long, empty or holds NUL; ``since`` after ``until``;
        an event type that does not exist; a cursor no page gave.
    """
    from .sql.query import decode_cursor

    filters = audit_filter(
        user_id=_text(request, "user_id", MAX_FILTER),
        session_id=_text(request, "session_id", MAX_FILTER),
        type=_text(request, "type", MAX_FILTER),
        ip=_text(request, "ip", MAX_FILTER),
        since=_text(request, "since", MAX_TIME),
        until=_text(request, "until", MAX_TIME),
    )
    limit = payloads.query_int(
        request, "limit", AUDIT_LIMIT_DEFAULT, minimum=1, maximum=AUDIT_LIMIT_MAX
    )
    cursor = _text(request, "cursor", payloads.MAX_CURSOR)
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except ValueError:
            raise InvalidRequest("'cursor' is not one a page of the audit trail gave.") from None
    return filters, limit, cursor
