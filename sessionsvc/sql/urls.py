"""What an audit URL must be before anything connects with it: read by the
settings at start-up (only SQLAlchemy's URL parser, no engine, no driver)."""

from __future__ import annotations

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the audit trail's database, in words that never
    hold its password; ``None`` when it can."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # SQLAlchemy's own message may quote the URL: never shown.
        return (
            "is not a URL SQLAlchemy reads: is the port a number, and every "
            "'@', ':', '/' or '%' in the user or password percent-encoded?"
        )
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return f"has port {parsed.port}, and port {parsed.port} is not 1..65535"
    if parsed.get_backend_name() != "sqlite":
        return None
    if parsed.host or parsed.username or parsed.password or parsed.port:
        return (
            "is a SQLite URL, which names no host, user or password: "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    if not parsed.database or parsed.database == ":memory:":
        return (
            "names an in-memory SQLite database, which each connection has "
            "its own of: name a file (sqlite:///path/audit.db)"
        )
    return None
