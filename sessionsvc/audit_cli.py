"""The ``flask sessions audit`` commands: the audit trail's schema, writer,
status, prune and export.

SQLAlchemy is imported only inside the commands: an install without the
``audit`` extra runs every other command.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

import click
from flask.cli import AppGroup

from .errors import InvalidRequest, StoreUnavailable
from .logs import configure_logging
from .models import isotime
from .settings import redact
from .state import current_state

if TYPE_CHECKING:
    from .audit_writer import Writer

#: The group; :mod:`sessionsvc.cli` adds it to the standalone service's and a host app's.
audit_cli = AppGroup("audit", help="The audit trail in a SQL database (SESSIONSVC_AUDIT_URL).")


#: ``--exit-with PID`` of the ``run`` commands (:func:`stop_on_signals`).
EXIT_WITH = click.option(
    "--exit-with",
    type=int,
    default=None,
    metavar="PID",
    help="Stop when process PID is gone (gunicorn's master starts one so).",
)


def stop_on_signals(stop: threading.Event, exit_with: int | None) -> None:
    """Set ``stop`` on SIGTERM or SIGINT, and when process ``exit_with``
    (gunicorn's master, say) is gone."""

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    if exit_with is not None:
        threading.Thread(target=_stop_when_gone, args=(exit_with, stop), daemon=True).start()


def _stop_when_gone(pid: int, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            stop.set()
        except PermissionError:
            pass


def _audit_url() -> str:
    url = current_state().settings.audit_url
    if url is None:
        raise click.ClickException("the audit trail is off: set SESSIONSVC_AUDIT_URL")
    return url


@contextmanager
def _errors() -> Iterator[None]:
    """A database or a Redis that cannot answer, or a schema that is not
    this version's, is one line on stderr and exit code 1."""
    from .sql.migrate import AuditUnavailable, SchemaOutdated

    try:
        yield
    except (AuditUnavailable, SchemaOutdated) as exc:
        raise click.ClickException(str(exc)) from None
    except StoreUnavailable as exc:
        raise click.ClickException(exc.detail) from None


def _writer(**options: Any) -> Writer:
    from .audit_writer import Writer

    _audit_url()
    state = current_state()
    return Writer(state.store, state.settings, **options)


@audit_cli.command("upgrade")
def audit_upgrade() -> None:
    """Create the audit table or upgrade it to this version's schema."""
    from .sql.migrate import schema_state, upgrade

    url = _audit_url()
    with _errors():
        upgrade(url)
        current, _head = schema_state(url)
    click.echo(f"audit schema at revision {current}")


@audit_cli.command("run")
@click.option(
    "--batch",
    type=click.IntRange(1, 10_000),
    default=500,
    show_default=True,
    help="Events taken, and rows inserted in one transaction, at a time.",
)
@click.option(
    "--takeover-after",
    type=click.FloatRange(1, 3600),
    default=30.0,
    show_default=True,
    help="Seconds after which a batch held by a writer that died is taken over.",
)
@EXIT_WITH
def audit_run(batch: int, takeover_after: float, exit_with: int | None) -> None:
    """Write the security events to the audit table until stopped (SIGTERM
    or Ctrl-C ends the batch in progress first). Run as many as you like."""
    # Outages, losses and refused rows are logged (sessionsvc.audit): to
    # stderr, as JSON lines, unless the app configured its loggers itself.
    configure_logging()
    writer = _writer(batch=batch, takeover_after=takeover_after)
    stop_on_signals(writer.stop, exit_with)
    # A schema that is not this version's is refused before anything is
    # taken; a database that does not answer yet is waited for.
    with _errors():
        if writer.ready():
            click.echo(
                f"writing the audit trail to {redact(writer.url)} as {writer.name}", err=True
            )
            writer.run()
    click.echo("stopped", err=True)


@audit_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def audit_status(as_json: bool) -> None:
    """The schema's revision, the rows stored, the events waiting, the lag."""
    from .sql.migrate import UPGRADE_COMMAND, schema_state

    writer = _writer()
    try:
        with _errors():
            current, head = schema_state(writer.url)
            status = writer.status(rows=current is not None)
    finally:
        writer.database.close()
    if as_json:
        report = {
            "schema": current,
            "head": head,
            "current": current == head,
            "rows": status.rows,
            "pending": status.pending,
            "unread": status.unread,
            "lag_seconds": round(status.lag_seconds, 3),
        }
        click.echo(json.dumps(report, indent=2))
        return
    if current is None:
        click.echo(f"audit schema: none (run {UPGRADE_COMMAND} to create {head})")
    elif current == head:
        click.echo(f"audit schema: {current} (current)")
    else:
        click.echo(f"audit schema: {current}, outdated (run {UPGRADE_COMMAND} for {head})")
    click.echo(f"rows: {'-' if status.rows is None else status.rows}")
    click.echo(f"pending: {status.pending} (taken by a writer, not yet stored)")
    click.echo(f"unread: {status.unread}")
    click.echo(f"lag: {status.lag_seconds:.1f} s")


@audit_cli.command("prune")
def audit_prune() -> None:
    """Delete the rows older than SESSIONSVC_AUDIT_RETENTION_DAYS now (the
    writers do it once a day)."""
    from .audit_writer import prune
    from .sql.events import AuditDatabase
    from .sql.migrate import require_current

    url = _audit_url()
    database = AuditDatabase(url)
    try:
        with _errors():
            require_current(url)
            deleted, cutoff = prune(database, current_state().settings.audit_retention_days)
    finally:
        database.close()
    click.echo(f"deleted {deleted} row(s) older than {isotime(int(cutoff.timestamp()))}")


@audit_cli.command("export")
@click.option("--user", "user_id", metavar="ID", help="Only this user's events.")
@click.option("--session", "session_id", metavar="ID", help="Only this session's events.")
@click.option("--type", "event_type", metavar="TYPE", help="Only events of this type.")
@click.option("--ip", metavar="ADDRESS", help="Only events from this address.")
@click.option("--since", metavar="TIME", help="From this ISO 8601 time (inclusive), with a zone.")
@click.option("--until", metavar="TIME", help="Before this ISO 8601 time (exclusive), with a zone.")
@click.option(
    "--output",
    "-o",
    type=click.File("w", encoding="utf-8", lazy=True),
    default="-",
    show_default=True,
    help="Where to write the JSON lines (- is standard output).",
)
def audit_export(
    user_id: str | None,
    session_id: str | None,
    event_type: str | None,
    ip: str | None,
    since: str | None,
    until: str | None,
    output: TextIO,
) -> None:
    """Write the audit trail's events as JSON lines, oldest first, each the
    object GET /api/v1/admin/audit answers; the filters are the API's."""
    from .audit_query import audit_filter
    from .sql.query import export_lines

    url = _audit_url()
    try:
        filters = audit_filter(
            user_id=user_id,
            session_id=session_id,
            type=event_type,
            ip=ip,
            since=since,
            until=until,
        )
    except InvalidRequest as exc:
        raise click.UsageError(exc.detail) from None
    with _errors():
        count = export_lines(url, filters, output)
    click.echo(f"exported {count} event(s)", err=True)
