"""The ``flask sessions`` command group."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click
from flask.cli import AppGroup

from .auth import new_user
from .errors import StoreUnavailable, WeakPassword
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
    """A store that cannot answer is a plain error message, not a traceback."""
    try:
        yield
    except StoreUnavailable as exc:
        raise click.ClickException(exc.detail) from None


@sessions_cli.command("create-user", context_settings=_ARGS)
@click.argument("username")
@click.option("--admin", is_flag=True, help="Grant the admin role.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (one trailing newline is stripped).",
)
def create_user(username: str, admin: bool, password_stdin: bool) -> None:
    """Add USERNAME to the standalone service's user store."""
    if not username or not username.isprintable():
        _fail("USERNAME must be non-empty printable text")
    if password_stdin:
        password = sys.stdin.read()
        if password.endswith("\r\n"):
            password = password[:-2]
        elif password.endswith("\n"):
            password = password[:-1]
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = new_user(username, password, admin=admin)
    except WeakPassword as exc:
        raise click.ClickException(exc.detail) from None
    with _store_errors():
        created = current_manager().add_user(user)
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
