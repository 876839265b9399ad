"""The ``flask sessions`` command group."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click
from flask.cli import AppGroup

from . import accounts
from .accounts import new_user
from .errors import StoreUnavailable, UserNotFound, WeakPassword
from .models import isotime
from .state import current_manager

sessions_cli = AppGroup("sessions", help="Manage sessionsvc users and sessions.")

# Session ids (and user ids) may start with "-": take unknown options as
# arguments, or "revoke alice -Xk..." would be a usage error.
_ARGS = {"ignore_unknown_options": True}


def _fail(message: str) -> None:
    raise click.ClickException(message)


@contextmanager
def _store_errors() -> Iterator[None]:
    """A store that cannot answer, an unknown user or a weak password is a
    one-line message on stderr and exit code 1, not a traceback."""
    try:
        yield
    except (StoreUnavailable, UserNotFound, WeakPassword) as exc:
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
    password = _read_password(password_stdin)
    with _store_errors():
        created = current_manager().add_user(new_user(username, password, admin=admin))
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


@sessions_cli.command("delete-user", context_settings=_ARGS)
@click.argument("username")
def delete_user(username: str) -> None:
    """Delete USERNAME with all its sessions (user_deleted)."""
    with _store_errors():
        count = accounts.delete(username)
    click.echo(f"deleted user {username!r}; revoked {count} session(s)")


@sessions_cli.command("disable-user", context_settings=_ARGS)
@click.argument("username")
def disable_user(username: str) -> None:
    """Disable USERNAME: no sign-in, every session ends (user_disabled)."""
    _set_disabled(username, True)


@sessions_cli.command("enable-user", context_settings=_ARGS)
@click.argument("username")
def enable_user(username: str) -> None:
    """Enable USERNAME again."""
    _set_disabled(username, False)


def _set_disabled(username: str, disabled: bool) -> None:
    with _store_errors():
        accounts.update(username, disabled=disabled)
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
