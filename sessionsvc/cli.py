"""The ``flask sessions`` command group."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from flask.cli import AppGroup

from . import accounts
from .audit_cli import EXIT_WITH, audit_cli, stop_on_signals
from .errors import Busy, LastAdmin, StoreUnavailable, UserNotFound, WeakPassword
from .logs import configure_logging
from .models import isotime
from .payloads import MAX_USERNAME
from .state import current_manager, current_state
from .webhooks import TAKEOVER_AFTER, TIMEOUT, Deliverer, redact, tidy

#: The whole group, as the standalone service has it: sessions and the user store.
sessions_cli = AppGroup("sessions", help="Manage sessionsvc users and sessions.")

# Session ids (and user ids) may start with "-": take unknown options as
# arguments, or "revoke alice -Xk..." would be a usage error.
_ARGS = {"ignore_unknown_options": True}


def _fail(message: str) -> None:
    raise click.ClickException(message)


@contextmanager
def _store_errors() -> Iterator[None]:
    """A store that cannot answer, a busy one (the lock of user changes held
    too long), an unknown user, a weak password or the last admin is a
    one-line message on stderr and exit code 1, not a traceback."""
    try:
        yield
    except LastAdmin as exc:
        raise click.ClickException(f"{exc.detail} (--force does it anyway)") from None
    except (StoreUnavailable, Busy, UserNotFound, WeakPassword) as exc:
        raise click.ClickException(exc.detail) from None


_PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (one trailing newline is stripped).",
)


def _read_password(password_stdin: bool) -> str:
    if not password_stdin:
        password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        return password
    password = sys.stdin.read()
    if password.endswith("\r\n"):
        return password[:-2]
    if password.endswith("\n"):
        return password[:-1]
    return password


@sessions_cli.command("create-user", context_settings=_ARGS)
@click.argument("username")
@click.option("--admin", is_flag=True, help="Grant the admin role.")
@_PASSWORD_STDIN
def create_user(username: str, admin: bool, password_stdin: bool) -> None:
    """Add USERNAME to the standalone service's user store."""
    if not username or not username.isprintable():
        _fail("USERNAME must be non-empty printable text")
    # What a sign-in takes; a longer id could not end a page of the admins'
    # listing either (its cursor holds a username's length).
    if len(username) > MAX_USERNAME:
        _fail(f"USERNAME must be at most {MAX_USERNAME} characters")
    password = _read_password(password_stdin)
    with _store_errors():
        created = accounts.create(accounts.new_user(username, password, admin=admin))
    if not created:
        _fail(f"user {username!r} already exists")
    click.echo(f"created user {username!r}" + (" (admin)" if admin else ""))


@sessions_cli.command("list", context_settings=_ARGS)
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True, help="Print the sessions as JSON.")
def list_sessions(user_id: str, as_json: bool) -> None:
    """List USER_ID's active sessions, most recently active first."""
    with _store_errors():
        sessions = current_manager().list_for(user_id)
    if as_json:
        click.echo(
            json.dumps(
                {"sessions": [current_manager().session_json(s) for s in sessions]}, indent=2
            )
        )
        return
    if not sessions:
        click.echo(f"no active sessions for {user_id!r}")
        return
    for s in sessions:
        label = s.device.label or s.user_agent or "unknown device"
        click.echo(f"{s.id}  {isotime(s.last_seen_at)}  {s.ip or '-':<15}  {label}")


@sessions_cli.command("revoke", context_settings=_ARGS)
@click.argument("user_id")
@click.argument("session_id")
def revoke(user_id: str, session_id: str) -> None:
    """Sign out one session of USER_ID (recorded with reason admin)."""
    with _store_errors():
        found = current_manager().revoke(user_id, session_id, reason="admin")
    if not found:
        _fail(f"{user_id!r} has no session {session_id!r}")
    click.echo(f"revoked {session_id}")


@sessions_cli.command("revoke-all", context_settings=_ARGS)
@click.argument("user_id")
def revoke_all(user_id: str) -> None:
    """Sign out every session of USER_ID (recorded with reason admin)."""
    with _store_errors():
        count = current_manager().revoke_all(user_id, reason="admin")
    click.echo(f"revoked {count} session(s)")


@sessions_cli.command("set-password", context_settings=_ARGS)
@click.argument("username")
@_PASSWORD_STDIN
def set_password(username: str, password_stdin: bool) -> None:
    """Set USERNAME's password; every session of the user ends (password_changed)."""
    with _store_errors():
        accounts.get(username)  # an unknown user is refused before the prompt
        count = accounts.set_password(username, _read_password(password_stdin))
    click.echo(f"password of {username!r} changed; revoked {count} session(s)")


_FORCE = click.option(
    "--force",
    is_flag=True,
    help="Even if USERNAME is the last admin (the API refuses that: 409 last_admin).",
)


def _warn_if_no_admin(force: bool) -> None:
    if force and not accounts.any_admin():
        click.echo(
            "warning: no admin is left; make one with create-user --admin or enable-user", err=True
        )


@sessions_cli.command("delete-user", context_settings=_ARGS)
@click.argument("username")
@_FORCE
def delete_user(username: str, force: bool) -> None:
    """Delete USERNAME with all its sessions (user_deleted)."""
    with _store_errors():
        count = accounts.delete(username, force=force)
        _warn_if_no_admin(force)
    click.echo(f"deleted user {username!r}; revoked {count} session(s)")


@sessions_cli.command("disable-user", context_settings=_ARGS)
@click.argument("username")
@_FORCE
def disable_user(username: str, force: bool) -> None:
    """Disable USERNAME: no sign-in, every session ends (user_disabled)."""
    _set_disabled(username, True, force=force)


@sessions_cli.command("enable-user", context_settings=_ARGS)
@click.argument("username")
def enable_user(username: str) -> None:
    """Enable USERNAME again."""
    _set_disabled(username, False)


def _set_disabled(username: str, disabled: bool, *, force: bool = False) -> None:
    with _store_errors():
        accounts.update(username, disabled=disabled, force=force)
        _warn_if_no_admin(force)
    click.echo(f"{'disabled' if disabled else 'enabled'} user {username!r}")


@sessions_cli.command("list-users")
@click.option("--json", "as_json", is_flag=True, help="Print the users as JSON.")
def list_users(as_json: bool) -> None:
    """List the users of the user store."""
    with _store_errors():
        users = accounts.all_users()
    if as_json:
        click.echo(json.dumps({"users": [user.to_json() for user in users]}, indent=2))
        return
    for user in users:
        flags = ", ".join([*user.roles, *(["disabled"] if user.disabled else [])])
        click.echo(
            f"{user.id}  {isotime(user.created_at) or '-'}" + (f"  ({flags})" if flags else "")
        )


@sessions_cli.command("reindex-users")
def reindex_users() -> None:
    """Rebuild the index of user ids the admins' listing reads: add the users
    it misses, drop the names whose user is gone. Safe to run at any time."""
    with _store_errors():
        added, dropped = current_state().store.reindex_names()
    click.echo(f"name index rebuilt: {added} users added, {dropped} stale names dropped")


webhooks_cli = AppGroup("webhooks", help="Deliver security events to the webhook endpoints.")
sessions_cli.add_command(webhooks_cli)


def _deliverer(**options: Any) -> Deliverer:
    state = current_state()
    if not state.settings.webhook_urls:
        _fail("webhooks are off: set SESSIONSVC_WEBHOOK_URLS (and SESSIONSVC_WEBHOOK_SECRET)")
    return Deliverer(state.store, state.settings, **options)


@webhooks_cli.command("run")
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Deliveries in flight at once per endpoint.",
)
@click.option(
    "--takeover-after",
    type=click.FloatRange(TIMEOUT + 2, 60),
    default=TAKEOVER_AFTER,
    show_default=True,
    help="Seconds after which a delivery held by a deliverer that died is taken over.",
)
@EXIT_WITH
def webhooks_run(threads: int, takeover_after: float, exit_with: int | None) -> None:
    """Deliver queued security events until stopped (SIGTERM or Ctrl-C ends
    the deliveries in progress first). Run as many as you like."""
    # Deliveries and failures are logged (sessionsvc.webhooks): to stderr,
    # as JSON lines, unless the app configured its loggers itself.
    configure_logging()
    deliverer = _deliverer(threads=threads, takeover_after=takeover_after)

    stop_on_signals(deliverer.stop, exit_with)
    try:
        tidy(deliverer)
    except StoreUnavailable as exc:
        # Not fatal: the deliverer waits for the store like every part.
        logging.getLogger("sessionsvc.webhooks").warning("webhooks: %s", exc.detail)
    click.echo(
        f"delivering to {len(deliverer.endpoints)} endpoint(s) as {deliverer.name}",
        err=True,
    )
    deliverer.run()
    click.echo("stopped", err=True)


@webhooks_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.option(
    "--failed",
    "show_failed",
    type=click.IntRange(0, 1000),
    default=0,
    help="Also show the newest N deliveries parked as failed.",
)
def webhooks_status(as_json: bool, show_failed: int) -> None:
    """Per endpoint: deliveries pending, delivered, retrying and failed."""
    deliverer = _deliverer()
    with _store_errors():
        report = deliverer.status(parked=show_failed)
    rows: list[dict[str, Any]] = [
        {
            "endpoint": redact(endpoint.url),
            "id": endpoint.id,
            "pending": counts.pending,
            "delivered": counts.delivered,
            "retrying": counts.retrying,
            "failed": counts.failed,
            **({"parked": counts.parked} if show_failed else {}),
        }
        for endpoint, counts in report
    ]
    if as_json:
        click.echo(json.dumps({"endpoints": rows}, indent=2))
        return
    click.echo(f"{'endpoint':<48} {'pending':>8} {'delivered':>10} {'retrying':>9} {'failed':>7}")
    for row in rows:
        click.echo(
            f"{row['endpoint']:<48} {row['pending']:>8} {row['delivered']:>10} "
            f"{row['retrying']:>9} {row['failed']:>7}"
        )
        for item in row.get("parked", []):
            click.echo(
                f"  parked {item.get('id')} after {item.get('attempts')} attempt(s) "
                f"at {isotime(item.get('at'))}: {item.get('error')}"
            )


sessions_cli.add_command(audit_cli)


#: The commands of the built-in user store (the standalone service's users);
#: a host app's users are its own.
USER_COMMANDS = frozenset(
    {
        "create-user",
        "set-password",
        "delete-user",
        "disable-user",
        "enable-user",
        "list-users",
        "reindex-users",
    }
)

#: The group of a host app without the user store: its users' sessions
#: (``list``, ``revoke``, ``revoke-all``), the webhooks and the audit trail.
host_sessions_cli = AppGroup("sessions", help="Manage sessionsvc sessions.")
for _name, _command in sessions_cli.commands.items():
    if _name not in USER_COMMANDS:
        host_sessions_cli.add_command(_command)


def command_group(*, user_store: bool) -> AppGroup:
    """The ``flask sessions`` group for an app: every command with the
    built-in user store (``SessionManager(auth_routes=True)``), without it
    only those that do not manage its users."""
    return sessions_cli if user_store else host_sessions_cli
