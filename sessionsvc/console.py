"""The admin console: ``GET /admin``.

A plain HTML page like the account page (:mod:`sessionsvc.account`), with its
own script and stylesheet (``static/console`` at ``/admin/assets/<file>``) and
the scripts the two pages share (``/admin/assets/shared/``). It signs in
through the auth routes with the account page's ``sessionStorage`` keys (one
sign-in serves both pages), then calls the admin API; a caller the app's
admin loader refuses (403) is told the console is for administrators and
shown nothing else.

The standalone service mounts it in :func:`~sessionsvc.create_app`. A host
app opts in, after :class:`~sessionsvc.SessionManager` with
``admin_routes=True``::

    from sessionsvc import console

    app.register_blueprint(console.blueprint)

With the user store's routes (the standalone service) the console lists and
finds users by name prefix and shows and changes their records (disable,
roles, delete). Without them (a host app keeps its own users) it looks a
user up by exact id and shows that user's sessions and recent events, and
signs sessions out. With an audit trail (``SESSIONSVC_AUDIT_URL``) a user's
page also shows their audit history, newest first, page by page.
"""

from __future__ import annotations

from flask import Response, current_app

from . import admin, auth, openapi, pages
from .state import current_state

#: The page and its assets (``/admin/assets/console.js``, ``console.css``).
blueprint = pages.page_blueprint(
    "sessionsvc_console", __name__, assets="console", url_path="/admin/assets"
)


@blueprint.get("/admin")
@openapi.spec("console_page")
def console_page() -> Response:
    return pages.render_page(
        "sessionsvc_console/console.html",
        admin_url=pages.api_url(admin.URL_PREFIX),
        auth_url=pages.api_url(auth.URL_PREFIX),
        # The name of the blueprint admin.register mounts only with the user store.
        user_store=admin.users.name in current_app.blueprints,
        # The audit trail's route answers only with a database to read.
        audit=current_state().settings.audit_url is not None,
    )
