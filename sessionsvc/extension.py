"""``SessionManager``: the Flask extension and its Python API."""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from flask import Flask, has_request_context, request
from flask_jwt_extended import JWTManager
from werkzeug.middleware.proxy_fix import ProxyFix

from . import (
    admin,
    api,
    audit,
    auth,
    binding,
    cli,
    devices,
    errors,
    geo,
    metrics,
    ratelimit,
    tokens,
)
from .admin import AdminLoader
from .errors import RefreshTokenReused, SessionRevoked
from .models import SecurityEvent, Session, TokenPair, User
from .openapi import mounted
from .passwords import HashSlots
from .settings import ConfigError, Settings, unknown_keys
from .state import EXTENSION_KEY, State, current_state, owns_request
from .store import Actor, CheckResult, CheckStatus, Policy, SessionStore, store_from_url

if TYPE_CHECKING:
    import redis

logger = logging.getLogger("sessionsvc")

#: ``callback(user_id, claims) -> claims``: see :meth:`SessionManager.refresh_claims_loader`.
ClaimsLoader = Callable[[str, dict[str, Any]], dict[str, Any]]

# Marks "take it from the current request" in :meth:`SessionManager.open`.
_FROM_REQUEST: Any = object()


def new_session_id() -> str:
    """A fresh session id: 128 bits from the OS CSPRNG, meaningless."""
    return secrets.token_urlsafe(16)


class SessionManager:
    """Device sessions for a Flask app, bound to flask-jwt-extended.

    ``SessionManager(app)`` or ``sessions = SessionManager()`` and later
    ``sessions.init_app(app)``. Per-app state lives in
    ``app.extensions["sessionsvc"]``; this object keeps no app.

    :param redis_client: use this Redis client (``decode_responses=True``)
        instead of building one from ``SESSIONSVC_REDIS_URL``.
    :param url_prefix: where the sessions blueprint is mounted.
    :param auth_routes: also mount ``/api/v1/auth`` (login, refresh, logout)
        backed by the user store; the standalone service does.
    :param admin_routes: mount the admin routes (:meth:`admin_loader`
        says who may use them); ``None``: ``SESSIONSVC_ADMIN_ROUTES``.
    :param problem_paths: path prefixes whose HTTP errors (404, 405, 413...)
        are answered as problem documents; defaults to the blueprints'
        prefixes, so the host app keeps its own error pages elsewhere.
    :param docs: also serve the OpenAPI 3.1 document of the routes mounted
        here at ``spec_path``, and Swagger UI for it at ``docs_path`` (see
        :mod:`sessionsvc.openapi.mounted`).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        redis_client: redis.Redis | None = None,
        url_prefix: str = "/api/v1/sessions",
        auth_routes: bool = False,
        admin_routes: bool | None = None,
        problem_paths: Sequence[str] | None = None,
        docs: bool = False,
        docs_path: str = "/docs",
        spec_path: str = "/apispec.json",
    ) -> None:
        self._redis_client = redis_client
        self._url_prefix = url_prefix
        self._auth_routes = auth_routes
        self._admin_routes = admin_routes
        #: Who may use the admin routes: see :meth:`admin_loader`.
        self.admin_callback: AdminLoader | None = None
        self._problem_paths = tuple(problem_paths) if problem_paths is not None else None
        self._docs = (docs_path, spec_path) if docs else None
        self._refresh_claims: ClaimsLoader | None = None
        if app is not None:
            self.init_app(app)

    # -- set-up ---------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Validate the settings and wire the extension into ``app``.

        :raises ConfigError: naming the first bad configuration key.
        """
        jwt = app.extensions.get("flask-jwt-extended")
        if jwt is None:
            jwt = JWTManager(app)
        elif tokens.has_blocklist_loader(jwt):
            # flask-jwt-extended has one slot: ours would silently replace
            # the host's, or the host's (registered later) ours.
            raise ConfigError(
                "the app's JWTManager already has a token_in_blocklist_loader: register it "
                "after SessionManager.init_app and call sessions.is_revoked() from it"
            )
        settings = Settings.from_config(app.config)
        for warning in unknown_keys(app.config, os.environ):
            logger.warning(warning)
        for warning in tokens.check_signing(app.config, strict=not (app.debug or app.testing)):
            logger.warning(warning)
        locator = geo.Locator(settings.geoip_db) if settings.geoip_db is not None else None
        # The request path's parsers are built now, not by a worker's first user.
        devices.warm_up()
        policy = Policy(
            touch_interval=settings.touch_interval,
            idle_timeout=settings.idle_timeout,
            revoke_on_anomaly=settings.revoke_on_anomaly,
            locate=locator.lookup if locator is not None else None,
        )

        store = store_from_url(
            settings.redis_url,
            client=self._redis_client,
            prefix=settings.key_prefix,
            timeout=settings.store_timeout,
            events_max=settings.events_max,
            events_ttl=settings.refresh_expires,
        )
        store.policy = policy
        if store.private:  # then one process must serve every request
            app.before_request(lambda: store.check_one_process(request.environ))
        store.on_events = audit.recorded
        # One stream feeds both: the webhook deliverers and the audit writers.
        store.webhooks = bool(settings.webhook_urls) or settings.audit_url is not None
        admin_routes = settings.admin_routes if self._admin_routes is None else self._admin_routes
        prefixes = [self._url_prefix, *([admin.URL_PREFIX] if admin_routes else [])]
        if self._auth_routes:
            prefixes.append(auth.URL_PREFIX)
        problem_paths = self._problem_paths if self._problem_paths is not None else tuple(prefixes)
        app.extensions[EXTENSION_KEY] = State(
            self, settings, store, locator, problem_paths, HashSlots(settings.password_hashes)
        )

        tokens.bind(app, jwt, owns_request)
        binding.install(app)
        tokens.guard(app, jwt)
        errors.register_error_handlers(app, owns_request)
        app.register_blueprint(api.blueprint, url_prefix=self._url_prefix)
        if admin_routes:
            admin.register(
                app, with_users=self._auth_routes, with_audit=settings.audit_url is not None
            )
        if self._auth_routes:
            app.register_blueprint(auth.blueprint, url_prefix=auth.URL_PREFIX)
            ratelimit.init_app(app, settings, store)
        if self._docs is not None:
            mounted.install(app, *self._docs)
        app.cli.add_command(cli.command_group(user_store=self._auth_routes))
        if settings.trusted_proxies:
            app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]

    @property
    def settings(self) -> Settings:
        """The current app's validated settings."""
        return current_state().settings

    @property
    def store(self) -> SessionStore:
        """The current app's session store."""
        return current_state().store

    # -- the revocation check ---------------------------------------------------

    def is_revoked(self, jwt_header: dict[str, Any], jwt_payload: dict[str, Any]) -> bool:
        """flask-jwt-extended's blocklist check: ``True`` once the session is gone.

        Also records activity (at most once per touch interval), address
        changes and anomalies, and applies the idle timeout; in the common
        case all in one plain read. For a refresh token, presenting one that
        was already rotated away revokes the session and raises
        :class:`~sessionsvc.errors.RefreshTokenReused`. A host app with a
        blocklist of its own calls this from its loader.

        :raises InvalidToken: the token carries no session id.
        :raises StoreUnavailable: the store cannot answer (fail closed).
        """
        user_id, session_id = tokens.token_session(jwt_payload)
        state = current_state()
        tokens.mark_checked()
        now = int(time.time())
        started = time.perf_counter()
        try:
            # A bound token's proof is checked before the store is asked.
            proof = binding.check(state, user_id, session_id, jwt_payload, now=now)
            if jwt_payload.get("type") != "refresh":
                # The path every authenticated request takes: one plain read;
                # of the whole session when the request is about that one.
                whole = api.asks_for_session(session_id)
                result = binding.check_access(
                    state, user_id, session_id, proof, now=now, whole=whole
                )
                if result.session is not None:
                    # On the request itself: g may outlive it (an app
                    # context reused across requests).
                    request.environ[_SESSION_READ] = result.session
            else:
                result = self._check_refresh(
                    state, user_id, session_id, jwt_payload, now=now, proof=proof
                )
        finally:
            metrics.CHECK_SECONDS.observe(time.perf_counter() - started)
        return result.status is not CheckStatus.ACTIVE

    def _check_refresh(
        self,
        state: State,
        user_id: str,
        session_id: str,
        payload: dict[str, Any],
        *,
        now: int,
        new_jti: str | None = None,
        proof: binding.Presented | None = None,
    ) -> CheckResult:
        """Check a refresh token's session, rotating it to ``new_jti`` if given.

        :raises RefreshTokenReused: the token was rotated away before; the
            store has revoked the whole session.
        :raises InvalidDPoPProof: its proof (``proof``) was accepted before.
        """
        result = state.store.check_refresh(
            user_id,
            session_id,
            now=now,
            actor=devices.request_actor(),
            presented_jti=str(payload.get("jti") or "-"),
            new_jti=new_jti,
            # The standalone service's user must still be the session's
            # account, and not disabled; its roles come from the store.
            with_user=self._auth_routes,
            proof=proof.digest if proof is not None else "",
            window=proof.window if proof is not None else 0,
        )
        binding.refuse_replay(result, proof)
        if result.status is CheckStatus.REFRESH_REUSED:
            raise RefreshTokenReused("This refresh token was already used; the session is revoked.")
        return result

    def refresh_claims_loader(self, callback: ClaimsLoader) -> ClaimsLoader:
        """Decorate the function that gives a refresh's new tokens their claims.

        Called as ``callback(user_id, claims)`` with the claims the refresh
        token carried (``roles``, say; not ``sub``, ``sid`` or the JWT's own),
        it returns the claims for the new pair: a host app reads its user's
        roles as they are now, so a demoted user is not an admin for the rest
        of the session. Without one, the claims are handed on as they are.
        """
        self._refresh_claims = callback
        return callback

    def admin_loader(self, callback: AdminLoader) -> AdminLoader:
        """Decorate ``callback(user_id, claims) -> bool``: who is an admin (docs/api.md, 5)."""
        self.admin_callback = callback
        return callback

    # -- the Python API -----------------------------------------------------------

    def open(
        self,
        user_id: str,
        *,
        ip: str | None = _FROM_REQUEST,
        user_agent: str | None = _FROM_REQUEST,
        claims: dict[str, Any] | None = None,
        account: str | None = None,
        user_version: int | None = None,
    ) -> TokenPair:
        """Open a session for a user whose credentials the caller checked.

        Call it from your login view: the session's address and user agent
        are taken from the current request unless given.

        :param user_id: the ``sub`` of the tokens; any non-empty string.
        :param claims: extra JWT claims (``roles``, say) for both tokens;
            a refresh hands them on to the new tokens (through the
            :meth:`refresh_claims_loader`, if there is one).
        :param account: the account the session belongs to (the standalone
            service's user store; see :attr:`User.account`).
        :param user_version: with ``account``, the :attr:`User.version` of
            the record the caller checked: the session opens only if the
            record is still that account at that version, in the same atomic
            step, so a change that revoked the user's sessions meanwhile
            (password, roles, disabled, deleted) leaves none behind.
        :returns: the token pair of the new session.
        :raises UserChanged: the user record changed (nothing opened): check
            the credentials against the record as it is now.
        """
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        state = current_state()
        settings = state.settings
        in_request = has_request_context()
        if ip is _FROM_REQUEST:
            ip = devices.client_ip(request) if in_request else None
        if user_agent is _FROM_REQUEST:
            user_agent = devices.user_agent_of(request) if in_request else None
        location = state.locator.lookup(ip) if state.locator is not None and ip else None
        # Bound to the key of the request's valid DPoP proof, if it has one.
        jkt = binding.sign_in(state, user_id) if in_request else None
        now = int(time.time())
        expires_at, lifetime = now + settings.refresh_expires, settings.refresh_expires
        extra = tokens.extra_claims(claims or {})
        for _ in range(3):
            session = Session(
                id=new_session_id(),
                user_id=user_id,
                created_at=now,
                last_seen_at=now,
                expires_at=expires_at,
                ip=ip,
                created_ip=ip,
                user_agent=user_agent,
                device=devices.parse_user_agent(user_agent),
                location=location,
                refresh_jti=secrets.token_urlsafe(16),
                account=account,
                dpop_jkt=jkt,
            )
            # Sign first: a token that cannot be made leaves no session behind.
            pair = tokens.token_pair(
                user_id, session.id, session.refresh_jti, settings, extra, lifetime, jkt=jkt
            )
            opened = state.store.create(
                session,
                max_sessions=settings.max_sessions_per_user,
                actor=Actor(ip=ip, user_agent=user_agent),
                user_version=user_version,
            )
            if opened is not None:
                audit.opened(user_id, dataclasses.replace(session, risk=opened.risk))
                audit.revoked(user_id, opened.evicted, "evicted", None)
                return pair
        raise RuntimeError("could not draw an unused session id")  # pragma: no cover

    def rotate(self, refresh_payload: dict[str, Any]) -> TokenPair:
        """Exchange a verified refresh token for a new pair (rotation).

        Atomic: of two refreshes with the same token one wins; the other is
        reuse, which revokes the whole session.

        :raises SessionRevoked: the session is gone.
        :raises RefreshTokenReused: the token was already used.
        """
        user_id, session_id = tokens.token_session(refresh_payload)
        state = current_state()
        now = int(time.time())
        new_jti = secrets.token_urlsafe(16)
        proof = binding.check(state, user_id, session_id, refresh_payload, now=now)
        result = self._check_refresh(
            state, user_id, session_id, refresh_payload, now=now, new_jti=new_jti, proof=proof
        )
        if result.status is CheckStatus.GONE or result.expires_at is None:
            raise SessionRevoked("The token's session was signed out or has expired.")
        extra = tokens.extra_claims(refresh_payload)
        if result.roles is not None:
            # The standalone service: the roles as stored now, not as copied.
            extra.pop("roles", None)
            if result.roles:
                extra["roles"] = list(result.roles)
        if self._refresh_claims is not None:
            # Reserved claims it returns are dropped, as token_pair drops them.
            extra = self._refresh_claims(user_id, extra)
        lifetime = max(result.expires_at - now, 1)
        jkt = binding.bound_key(refresh_payload)  # the new pair is bound to the same key
        return tokens.token_pair(
            user_id, session_id, new_jti, state.settings, extra, lifetime, jkt=jkt
        )

    def get(self, user_id: str, session_id: str) -> Session | None:
        """One of a user's sessions, or ``None`` (also for ids that cannot be ours)."""
        if not tokens.is_session_id(session_id):
            return None
        state = current_state()
        # The check of this request may have read it already.
        read = request.environ.get(_SESSION_READ) if has_request_context() else None
        session: Session | None
        if isinstance(read, Session) and read.user_id == user_id and read.id == session_id:
            session = read
        else:
            session = state.store.get(user_id, session_id)
        if session is not None and session.last_seen_at < state.settings.seen_since():
            return None  # dead: revoked (reason idle) when next used or listed
        return session

    def list_for(self, user_id: str) -> list[Session]:
        """A user's live sessions, most recently active first."""
        sessions = current_state().store.list_sessions(user_id, now=int(time.time()))
        sessions.sort(key=lambda s: (-s.last_seen_at, -s.created_at, s.id))
        return sessions

    def rename(self, user_id: str, session_id: str, name: str | None) -> Session | None:
        """Label a session (``None`` clears the label); ``None`` if no such session."""
        if not tokens.is_session_id(session_id):
            return None
        state = current_state()
        return state.store.rename(user_id, session_id, name, seen_since=state.settings.seen_since())

    def revoke(
        self,
        user_id: str,
        session_id: str,
        *,
        reason: str = "user",
        current: str | None = None,
    ) -> bool:
        """Sign one session out; its tokens fail on their very next use.

        :param current: the caller's own session id: revoking it is recorded
            as ``logout``.
        :returns: ``False`` when the user has no such session.
        """
        if not tokens.is_session_id(session_id):
            return False
        revoked = current_state().store.revoke(
            user_id,
            [session_id],
            now=int(time.time()),
            reason=reason,
            actor=devices.request_actor() or Actor(),
            current=current,
        )
        audit.revoked(user_id, revoked, reason, current)
        return bool(revoked)

    def revoke_all(
        self,
        user_id: str,
        *,
        reason: str = "admin",
        keep: str | None = None,
        current: str | None = None,
    ) -> int:
        """Sign a user out everywhere, e.g. after a password change.

        :param keep: a session to spare (the caller's, for "sign out others").
        :param current: the caller's own session, recorded as ``logout``.
        :returns: how many sessions were revoked.
        """
        revoked = current_state().store.revoke(
            user_id,
            None,
            now=int(time.time()),
            reason=reason,
            actor=devices.request_actor() or Actor(),
            keep=keep,
            current=current,
        )
        audit.revoked(user_id, revoked, reason, current)
        return len(revoked)

    def session_json(self, session: Session, *, current: bool = False) -> dict[str, Any]:
        """The API's Session object, with this app's settings (idle timeout)."""
        return session.to_json(current=current, idle_timeout=current_state().settings.idle_timeout)

    def events_for(self, user_id: str, *, limit: int = 50) -> list[SecurityEvent]:
        """A user's security events, newest first."""
        return current_state().store.events(user_id, limit=limit)

    def ping(self) -> None:
        """Raise :class:`~sessionsvc.errors.StoreUnavailable` unless the store answers."""
        current_state().store.ping()

    # -- the standalone service's user store --------------------------------------

    def find_user(self, user_id: str) -> User | None:
        """A user of the built-in user store, or ``None``."""
        return current_state().store.get_user(user_id)

    def add_user(self, user: User) -> bool:
        """Add a user to the built-in user store; ``False`` if the id is taken."""
        return current_state().store.create_user(user)


#: Where the revocation check leaves the session it read whole, for the view.
_SESSION_READ = "sessionsvc.session"
