"""The per-app state and the manager lookup.

A leaf: views, the CLI and the extension reach the current app's manager,
settings and store at call time through :func:`current_state` and
:func:`current_manager`, as flask-jwt-extended's views reach their
``JWTManager`` through ``get_jwt_manager()``. Package types are imported only
for type checking, so this module imports nothing of the package and
anything may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app, request

if TYPE_CHECKING:
    from .extension import SessionManager
    from .geo import Locator
    from .passwords import HashSlots
    from .settings import Settings
    from .store import SessionStore

#: Key of the per-app state in ``app.extensions``.
EXTENSION_KEY = "sessionsvc"


@dataclass(frozen=True)
class State:
    """What :meth:`SessionManager.init_app` sets up for one app."""

    manager: SessionManager
    settings: Settings
    store: SessionStore
    #: The GeoIP database, when ``SESSIONSVC_GEOIP_DB`` is set.
    locator: Locator | None
    #: Path prefixes whose HTTP errors are answered as problem documents.
    problem_paths: tuple[str, ...]
    #: The bound on this process's password hashes for this app's requests.
    hash_slots: HashSlots


def state_of(app: Flask) -> State:
    """The extension's state on ``app``.

    :raises RuntimeError: the extension is not initialised on this app.
    """
    try:
        state: State = app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "SessionManager is not initialised on this app: call init_app(app) first"
        ) from None
    return state


def current_state() -> State:
    """The current app's state (see :func:`state_of`)."""
    return state_of(current_app)


def current_manager() -> SessionManager:
    """The :class:`~sessionsvc.SessionManager` of the current app."""
    return current_state().manager


def owns_request() -> bool:
    """Whether the current request is on a path the current app's sessionsvc owns
    (its ``problem_paths``): those get problem documents, the rest the host's answers."""
    state: State | None = current_app.extensions.get(EXTENSION_KEY)
    if state is None:
        return False
    path = request.path
    return any(
        prefix == "/" or path == prefix or path.startswith(prefix.rstrip("/") + "/")
        for prefix in state.problem_paths
    )
