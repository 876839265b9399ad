"""The "Where you're signed in" page: ``GET /account/sessions``.

A plain HTML page with its own script and stylesheet (served from
``static/account`` at ``/account/assets/<file>``, the scripts it shares with
the admin console at ``/account/assets/shared/``); it signs in through the
auth routes, keeps its tokens in ``sessionStorage`` and calls the sessions
API, so it needs nothing from the internet and no inline script or style.

The standalone service mounts it in :func:`~sessionsvc.create_app`. A host
app mounts it itself, after :class:`~sessionsvc.SessionManager`::

    from sessionsvc import account

    app.register_blueprint(account.blueprint)

The page signs in through ``/api/v1/auth`` (the standalone auth routes,
``SessionManager(auth_routes=True)``); a host app with its own sign-in
stores the tokens under the ``sessionStorage`` keys ``sessionsvc.access``
and ``sessionsvc.refresh`` before sending the user here.
"""

from __future__ import annotations

from flask import Response, url_for

from . import auth, openapi, pages

#: The page and its assets (``/account/assets/account.js``, ``account.css``).
blueprint = pages.page_blueprint(
    "sessionsvc_account", __name__, assets="account", url_path="/account/assets"
)

#: The page's Content-Security-Policy: its own scripts and stylesheet only.
CSP = pages.CSP


@blueprint.get("/account/sessions")
@openapi.spec("account_page")
def sessions_page() -> Response:
    return pages.render_page(
        "sessionsvc_account/sessions.html",
        # Without the trailing slash: the script appends "/<session_id>".
        sessions_url=url_for("sessionsvc.list_sessions").rstrip("/"),
        auth_url=pages.api_url(auth.URL_PREFIX),
    )
